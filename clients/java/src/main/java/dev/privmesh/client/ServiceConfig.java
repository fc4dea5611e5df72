package dev.privmesh.client;

import com.google.protobuf.DescriptorProtos.MethodOptions.IdempotencyLevel;
import com.google.protobuf.Descriptors.FileDescriptor;
import com.google.protobuf.Descriptors.MethodDescriptor;
import com.google.protobuf.Descriptors.ServiceDescriptor;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The gRPC service config of the contracts, as the Python runtime builds it (runtime/client.py): a timeout
 * on every method, and retries on UNAVAILABLE for the methods whose idempotency_level is NO_SIDE_EFFECTS or
 * IDEMPOTENT. grpc-java reads it as JSON-shaped maps (numbers as Double).
 */
public final class ServiceConfig {
  /** Every contract's file; their services are configured. */
  static final List<FileDescriptor> CONTRACTS = List.of(
      dev.privmesh.attestation.v1.Attestation.getDescriptor(),
      dev.privmesh.common.v1.Common.getDescriptor(),
      dev.privmesh.dpgateway.v1.Dpgateway.getDescriptor(),
      dev.privmesh.fhe.v1.Fhe.getDescriptor(),
      dev.privmesh.fl.v1.Fl.getDescriptor(),
      dev.privmesh.fl.v1.Reporter.getDescriptor(),
      dev.privmesh.keybroker.v1.Keybroker.getDescriptor(),
      dev.privmesh.tokenvault.v1.Tokenvault.getDescriptor());

  private static final Map<String, Object> RETRY = Map.of(
      "maxAttempts", 4.0, "initialBackoff", "0.1s", "maxBackoff", "2s", "backoffMultiplier", 2.0,
      "retryableStatusCodes", List.of("UNAVAILABLE"));

  private ServiceConfig() {}

  static boolean idempotent(MethodDescriptor method) {
    IdempotencyLevel level = method.getOptions().getIdempotencyLevel();
    return level == IdempotencyLevel.NO_SIDE_EFFECTS || level == IdempotencyLevel.IDEMPOTENT;
  }

  /** The service config for calls without their own deadline to end after {@code timeout}. */
  public static Map<String, Object> forContracts(Duration timeout) {
    String seconds = String.format("%.3fs", timeout.toMillis() / 1000.0);
    List<Object> configs = new ArrayList<>();
    for (FileDescriptor file : CONTRACTS) {
      for (ServiceDescriptor service : file.getServices()) {
        List<Object> safe = new ArrayList<>();
        List<Object> others = new ArrayList<>();
        for (MethodDescriptor method : service.getMethods()) {
          (idempotent(method) ? safe : others).add(
              Map.of("service", service.getFullName(), "method", method.getName()));
        }
        if (!safe.isEmpty()) {
          configs.add(Map.of("name", safe, "timeout", seconds, "retryPolicy", RETRY));
        }
        if (!others.isEmpty()) {
          configs.add(Map.of("name", others, "timeout", seconds));
        }
      }
    }
    configs.add(Map.of("name", List.of(Map.of()), "timeout", seconds));
    return Map.of("methodConfig", configs);
  }
}
