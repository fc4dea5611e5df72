/**
 * The connection to one mesh service, with the mesh's defaults: gRPC over HTTP/2 with mTLS from PEM files
 * (re-read when they change, so a rotated leaf is used on the next connection), the server's name checked,
 * a deadline on every call, retries only for the methods the contracts mark idempotent, keepalive pings,
 * and an optional Kubernetes service-account token per call.
 *
 * Written by hand where @connectrpc/connect-node has no equivalent: it reads no gRPC service config (so the
 * retry policy of the Python runtime is an interceptor here, driven by the generated descriptors'
 * idempotency) and takes TLS material once (so the files are watched here).
 */
import { readFileSync, statSync } from "node:fs";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

/** A caller's mesh credentials: the CA bundle of the servers, and the caller's certificate and key (PEM). */
export interface Identity {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface MeshTransportOptions {
  /** The deadline of calls made without one (default 30 000 ms). */
  timeoutMs?: number;
  /** The name the server's certificate must carry (default: the target's host). */
  serverName?: string;
  /**
   * Pins the server's identity (a SPIFFE ID; mesh.json lists each service's): its certificate must carry the
   * ID's DNS form, "SA.NS.TRUST-DOMAIN.spiffe.invalid", as the Python runtime pins its peers. Wins over serverName.
   */
  peer?: string;
  /** A file whose token is sent as "authorization: Bearer ..." on every call (re-read each time). */
  tokenFile?: string;
  /** Keepalive: a ping after this long without activity on an open connection (default 60 000 ms). */
  pingIntervalMs?: number;
  /** Largest message sent or received (default 4 MiB, the mesh's). */
  maxMessageBytes?: number;
}

/** A Transport for the generated clients (`createClient(KeyBroker, transport)`) that can be closed. */
export interface MeshTransport extends Transport {
  /** Closes the connection (open calls fail); the transport reconnects if used again. */
  close(): void;
}

/** The Python runtime's policy (services/privmesh/runtime/client.py): 4 attempts, on UNAVAILABLE only. */
const RETRY = { maxAttempts: 4, initialBackoffMs: 100, maxBackoffMs: 2000, multiplier: 2 };

const SAFE_TO_RETRY = new Set([MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
                               MethodOptions_IdempotencyLevel.IDEMPOTENT]);

/** Retries unary calls of idempotent methods on UNAVAILABLE, with jittered exponential backoff. */
export const retryIdempotent: Interceptor = (next) => async (req) => {
  if (req.stream || !SAFE_TO_RETRY.has(req.method.idempotency)) {
    return next(req);
  }
  let backoff = RETRY.initialBackoffMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await next(req);
    } catch (err) {
      if (ConnectError.from(err).code !== Code.Unavailable || attempt >= RETRY.maxAttempts || req.signal.aborted) {
        throw err;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.random() * backoff));
      backoff = Math.min(backoff * RETRY.multiplier, RETRY.maxBackoffMs);
    }
  }
};

function bearerToken(tokenFile: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${readFileSync(tokenFile, "utf8").trim()}`);
    return next(req);
  };
}

/** The DNS name mesh certificates carry for spiffe://TRUST-DOMAIN/ns/NS/sa/SA. */
export function spiffeDnsName(spiffeId: string): string {
  const match = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(spiffeId);
  if (!match) {
    throw new Error(`${spiffeId} is not spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT`);
  }
  return `${match[3]}.${match[2]}.${match[1]}.spiffe.invalid`;
}

/** A transport to `target` ("127.0.0.1:PORT" or "host:port") as `identity`. */
export function createMeshTransport(target: string, identity: Identity,
                                    options: MeshTransportOptions = {}): MeshTransport {
  const baseUrl = `https://${target}`;
  const serverName = options.peer ? spiffeDnsName(options.peer) : options.serverName;
  const interceptors = [retryIdempotent, ...(options.tokenFile ? [bearerToken(options.tokenFile)] : [])];
  const files = [identity.caFile, identity.certFile, identity.keyFile];
  const version = () => files.map((f) => `${statSync(f).mtimeMs}:${statSync(f).size}`).join("|");
  let current: { version: string; manager: Http2SessionManager; transport: Transport } | undefined;

  const connect = (): Transport => {
    const seen = version();
    if (current?.version === seen) {
      return current.transport;
    }
    current?.manager.abort();  // the next handshake uses the new files
    const nodeOptions = {
      ca: readFileSync(identity.caFile), cert: readFileSync(identity.certFile), key: readFileSync(identity.keyFile),
      ...(serverName ? { servername: serverName } : {}),
    };
    const ping = { pingIntervalMs: options.pingIntervalMs ?? 60_000, pingTimeoutMs: 20_000,
                   idleConnectionTimeoutMs: 300_000 };
    const manager = new Http2SessionManager(baseUrl, ping, nodeOptions);
    const maxBytes = options.maxMessageBytes ?? 4 * 1024 * 1024;
    const transport = createGrpcTransport({
      baseUrl, sessionManager: manager, interceptors, defaultTimeoutMs: options.timeoutMs ?? 30_000,
      readMaxBytes: maxBytes, writeMaxBytes: maxBytes,
    });
    current = { version: seen, manager, transport };
    return transport;
  };

  return {
    unary: (...args) => connect().unary(...args),
    stream: (...args) => connect().stream(...args),
    close: () => current?.manager.abort(),
  };
}
