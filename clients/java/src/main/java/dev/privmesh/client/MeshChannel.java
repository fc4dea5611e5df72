package dev.privmesh.client;

import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import io.grpc.util.AdvancedTlsX509KeyManager;
import io.grpc.util.AdvancedTlsX509TrustManager;
import io.grpc.util.AdvancedTlsX509TrustManager.Verification;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.security.GeneralSecurityException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A channel to one mesh service with the mesh's defaults: mTLS from PEM files re-read every
 * {@link Options#refresh} into grpc-util's AdvancedTls managers, the server's certificate checked against the
 * target's host name (or {@link Options#serverName}), a deadline on every call and retries for the idempotent
 * methods (the contracts' service config), keepalive, and an optional Kubernetes service-account token.
 * Use it with the generated stubs: {@code KeyBrokerGrpc.newBlockingStub(mesh.channel())}.
 */
public final class MeshChannel implements AutoCloseable {
  /** Dial options; {@link #defaults()} are the mesh's. */
  public record Options(Duration timeout, String serverName, Path tokenFile, Duration refresh,
                        Duration keepaliveTime, int maxMessageBytes) {
    public static Options defaults() {
      return new Options(Duration.ofSeconds(30), null, null, Duration.ofMinutes(1), Duration.ofSeconds(60),
                         4 * 1024 * 1024);
    }

    public Options withTimeout(Duration value) {
      return new Options(value, serverName, tokenFile, refresh, keepaliveTime, maxMessageBytes);
    }

    public Options withServerName(String value) {
      return new Options(timeout, value, tokenFile, refresh, keepaliveTime, maxMessageBytes);
    }

    /**
     * Pins the server's identity (a SPIFFE ID; mesh.json lists each service's): its certificate must carry the
     * ID's DNS form, "SA.NS.TRUST-DOMAIN.spiffe.invalid", as the Python runtime pins its peers.
     */
    public Options withPeer(String spiffeId) {
      return withServerName(spiffeDnsName(spiffeId));
    }

    public Options withTokenFile(Path value) {
      return new Options(timeout, serverName, value, refresh, keepaliveTime, maxMessageBytes);
    }

    public Options withRefresh(Duration value) {
      return new Options(timeout, serverName, tokenFile, value, keepaliveTime, maxMessageBytes);
    }
  }

  private static final Pattern SPIFFE_ID = Pattern.compile("spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)");

  /** The DNS name mesh certificates carry for spiffe://TRUST-DOMAIN/ns/NS/sa/SA. */
  public static String spiffeDnsName(String spiffeId) {
    Matcher m = SPIFFE_ID.matcher(spiffeId);
    if (!m.matches()) {
      throw new IllegalArgumentException(spiffeId + " is not spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT");
    }
    return m.group(3) + "." + m.group(2) + "." + m.group(1) + ".spiffe.invalid";
  }

  private final ManagedChannel channel;
  private final ScheduledExecutorService reloader;

  private MeshChannel(ManagedChannel channel, ScheduledExecutorService reloader) {
    this.channel = channel;
    this.reloader = reloader;
  }

  /** Opens a channel to {@code target} ("127.0.0.1:PORT" or "dns:///host:port") as {@code identity}. */
  public static MeshChannel open(String target, Identity identity, Options options)
      throws IOException, GeneralSecurityException {
    ScheduledExecutorService reloader = Executors.newSingleThreadScheduledExecutor(r -> {
      Thread thread = new Thread(r, "privmesh-pem-reloader");
      thread.setDaemon(true);
      return thread;
    });
    try {
      AdvancedTlsX509KeyManager keys = new AdvancedTlsX509KeyManager();
      AdvancedTlsX509TrustManager trust = AdvancedTlsX509TrustManager.newBuilder()
          .setVerification(Verification.CERTIFICATE_AND_HOST_NAME_VERIFICATION).build();
      PemFiles files = new PemFiles(identity, keys, trust);
      files.reload();
      long period = options.refresh().toMillis();
      reloader.scheduleWithFixedDelay(files, period, period, TimeUnit.MILLISECONDS);
      ChannelCredentials credentials = TlsChannelCredentials.newBuilder().keyManager(keys).trustManager(trust).build();
      if (options.tokenFile() != null) {
        credentials = CompositeChannelCredentials.create(credentials, new TokenFile(options.tokenFile()));
      }
      ManagedChannelBuilder<?> builder = Grpc.newChannelBuilder(target, credentials)
          .defaultServiceConfig(ServiceConfig.forContracts(options.timeout()))
          .enableRetry()
          .keepAliveTime(options.keepaliveTime().toMillis(), TimeUnit.MILLISECONDS)
          .keepAliveTimeout(20, TimeUnit.SECONDS)
          .maxInboundMessageSize(options.maxMessageBytes());
      if (options.serverName() != null) {
        builder.overrideAuthority(options.serverName());
      }
      return new MeshChannel(builder.build(), reloader);
    } catch (IOException | GeneralSecurityException | RuntimeException e) {
      reloader.shutdownNow();
      throw e;
    }
  }

  /** The channel for the generated stubs. */
  public ManagedChannel channel() {
    return channel;
  }

  /** Shuts the channel down (waiting up to 5 s for open calls) and stops re-reading the files. */
  @Override
  public void close() throws InterruptedException {
    channel.shutdown();
    if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
      channel.shutdownNow();
    }
    reloader.shutdownNow();
  }

  /**
   * Re-reads the PEM files into the TLS managers when any of them changed. By hand because grpc-util's own
   * watcher (updateIdentityCredentials with a period) rounds periods under a minute up to one and reloads the
   * identity only when both the certificate and the key file changed.
   */
  private static final class PemFiles implements Runnable {
    private final Identity identity;
    private final AdvancedTlsX509KeyManager keys;
    private final AdvancedTlsX509TrustManager trust;
    private List<FileTime> loaded = List.of();

    PemFiles(Identity identity, AdvancedTlsX509KeyManager keys, AdvancedTlsX509TrustManager trust) {
      this.identity = identity;
      this.keys = keys;
      this.trust = trust;
    }

    void reload() throws IOException, GeneralSecurityException {
      List<FileTime> times = new ArrayList<>();
      for (Path file : List.of(identity.caFile(), identity.certFile(), identity.keyFile())) {
        times.add(Files.getLastModifiedTime(file));
      }
      if (!times.equals(loaded)) {
        keys.updateIdentityCredentials(identity.certFile().toFile(), identity.keyFile().toFile());
        trust.updateTrustCredentials(identity.caFile().toFile());
        loaded = times;
      }
    }

    @Override
    public void run() {
      try {
        reload();
      } catch (IOException | GeneralSecurityException e) {
        // a half-written rotation: the current credentials stay until the next run reads whole files
      }
    }
  }

  /** A per-call "authorization: Bearer" token read from a file on every call (kubelet rotates them). */
  private static final class TokenFile extends CallCredentials {
    private static final Metadata.Key<String> AUTHORIZATION =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    private final Path file;

    TokenFile(Path file) {
      this.file = file;
    }

    @Override
    public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
      try {
        Metadata headers = new Metadata();
        headers.put(AUTHORIZATION, "Bearer " + Files.readString(file, StandardCharsets.UTF_8).strip());
        applier.apply(headers);
      } catch (IOException e) {
        applier.fail(Status.UNAUTHENTICATED.withDescription("service-account token unreadable").withCause(e));
      }
    }
  }
}
