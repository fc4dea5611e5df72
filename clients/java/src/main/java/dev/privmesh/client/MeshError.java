package dev.privmesh.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.ProtocolMessageEnum;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.Function;
import javax.net.ssl.SSLException;

/**
 * A failed call, decoded: the canonical code and the google.rpc.Status details the mesh sends (ErrorInfo,
 * BadRequest, read with the googleapis types of proto-google-common-protos), with ErrorInfo.reason as the
 * generated ErrorReason enum of the service (or of privmesh.common.v1 for the runtime's reasons).
 */
public final class MeshError extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** Each service's ErrorReason by its ErrorInfo.domain. */
  private static final Map<String, Function<String, ProtocolMessageEnum>> REASONS = Map.of(
      "attestation.privmesh.dev", n -> parse(dev.privmesh.attestation.v1.ErrorReason.class, n),
      "keybroker.privmesh.dev", n -> parse(dev.privmesh.keybroker.v1.ErrorReason.class, n),
      "tokenvault.privmesh.dev", n -> parse(dev.privmesh.tokenvault.v1.ErrorReason.class, n),
      "dpgateway.privmesh.dev", n -> parse(dev.privmesh.dpgateway.v1.ErrorReason.class, n),
      "fhe.privmesh.dev", n -> parse(dev.privmesh.fhe.v1.ErrorReason.class, n),
      "fl.privmesh.dev", n -> parse(dev.privmesh.fl.v1.ErrorReason.class, n));

  private final Status.Code code;
  private final transient ProtocolMessageEnum reason;
  private final String reasonName;
  private final String domain;
  private final Map<String, String> metadata;
  private final List<BadRequest.FieldViolation> violations;
  private final boolean handshakeRefused;

  private MeshError(Status status, ErrorInfo info, List<BadRequest.FieldViolation> violations,
                    boolean handshakeRefused, Throwable cause) {
    super(describe(status, info, handshakeRefused), cause);
    this.code = status.getCode();
    this.reasonName = info.getReason();
    this.domain = info.getDomain();
    this.metadata = Map.copyOf(info.getMetadataMap());
    this.violations = List.copyOf(violations);
    this.handshakeRefused = handshakeRefused;
    ProtocolMessageEnum resolved = REASONS.getOrDefault(domain, n -> null).apply(reasonName);
    this.reason = resolved != null ? resolved : parse(dev.privmesh.common.v1.ErrorReason.class, reasonName);
  }

  /** Decodes what a generated stub threw (a StatusRuntimeException; anything else becomes UNKNOWN). */
  public static MeshError from(Throwable error) {
    if (error instanceof MeshError decoded) {
      return decoded;
    }
    Status status = Status.fromThrowable(error);
    com.google.rpc.Status details = StatusProto.fromThrowable(error);
    ErrorInfo info = ErrorInfo.getDefaultInstance();
    List<BadRequest.FieldViolation> violations = new ArrayList<>();
    for (Any detail : details == null ? List.<Any>of() : details.getDetailsList()) {
      try {
        if (detail.is(ErrorInfo.class)) {
          info = detail.unpack(ErrorInfo.class);
        } else if (detail.is(BadRequest.class)) {
          violations.addAll(detail.unpack(BadRequest.class).getFieldViolationsList());
        }
      } catch (InvalidProtocolBufferException e) {
        // a detail that does not parse is left out; the code and message remain
      }
    }
    boolean handshake = status.getCode() == Status.Code.UNAVAILABLE && handshakeFailure(error);
    return new MeshError(status, info, violations, handshake, error);
  }

  /**
   * grpc-java (Netty) reports a failed handshake with an SSLException among the causes; a server that refuses
   * the client certificate under TLS 1.3 closes the connection after the handshake with no alert, which
   * grpc-java reports only as "Network closed for unknown reason".
   */
  private static boolean handshakeFailure(Throwable error) {
    for (Throwable t = error; t != null; t = t.getCause()) {
      if (t instanceof SSLException) {
        return true;
      }
    }
    String description = Status.fromThrowable(error).getDescription();
    return description != null && description.startsWith("Network closed for unknown reason");
  }

  private static String describe(Status status, ErrorInfo info, boolean handshake) {
    if (handshake) {
      return "TLS handshake refused (check the client certificate and the CA bundle): " + status.getDescription();
    }
    String reason = info.getReason().isEmpty() ? "" : " " + info.getReason() + " (" + info.getDomain() + ")";
    return status.getCode() + reason + ": " + status.getDescription();
  }

  private static <E extends Enum<E> & ProtocolMessageEnum> ProtocolMessageEnum parse(Class<E> type, String name) {
    if (name.isEmpty()) {
      return null;
    }
    try {
      return Enum.valueOf(type, "ERROR_REASON_" + name);
    } catch (IllegalArgumentException e) {
      return null;
    }
  }

  public Status.Code code() {
    return code;
  }

  /** ErrorInfo.reason as the service's ErrorReason enum (e.g. keybroker ErrorReason.ERROR_REASON_KEY_NOT_FOUND). */
  public Optional<ProtocolMessageEnum> reason() {
    return Optional.ofNullable(reason);
  }

  /** ErrorInfo.reason as sent, e.g. "KEY_NOT_FOUND". */
  public String reasonName() {
    return reasonName;
  }

  /** Whether the reason is the enum value ERROR_REASON_{@code name}. */
  public boolean reasonIs(String name) {
    return reason != null && reason.getValueDescriptor().getName().equals("ERROR_REASON_" + name);
  }

  public String domain() {
    return domain;
  }

  public Map<String, String> metadata() {
    return metadata;
  }

  public List<BadRequest.FieldViolation> violations() {
    return violations;
  }

  /** The BadRequest violation of {@code field} (e.g. "items[0].field"). */
  public Optional<BadRequest.FieldViolation> violation(String field) {
    return violations.stream().filter(v -> v.getField().equals(field)).findFirst();
  }

  /**
   * The TLS handshake failed, or the server closed the connection right after it without answering: the server
   * refused our certificate (missing, expired, another CA), or we did not trust its certificate.
   */
  public boolean handshakeRefused() {
    return handshakeRefused;
  }
}
