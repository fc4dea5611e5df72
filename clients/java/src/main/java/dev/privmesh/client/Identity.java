package dev.privmesh.client;

import java.nio.file.Path;

/**
 * A caller's mesh credentials: the CA bundle that signs the servers, and the caller's certificate and key
 * (PEM files, re-read while the channel lives so that a rotated leaf is used on the next handshake).
 */
public record Identity(Path caFile, Path certFile, Path keyFile) {}
