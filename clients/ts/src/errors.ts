/**
 * Failed calls, decoded: the canonical code and the google.rpc.Status details the mesh sends (ErrorInfo,
 * BadRequest), with ErrorInfo.reason as the ErrorReason enum of the service's contract.
 */
import type { DescEnum } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type BadRequest_FieldViolation, BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { ErrorReasonSchema as AttestationReasons } from "./gen/privmesh/attestation/v1/attestation_pb.js";
import { ErrorReasonSchema as CommonReasons } from "./gen/privmesh/common/v1/common_pb.js";
import { ErrorReasonSchema as DpGatewayReasons } from "./gen/privmesh/dpgateway/v1/dpgateway_pb.js";
import { ErrorReasonSchema as FheReasons } from "./gen/privmesh/fhe/v1/fhe_pb.js";
import { ErrorReasonSchema as FlReasons } from "./gen/privmesh/fl/v1/fl_pb.js";
import { ErrorReasonSchema as KeyBrokerReasons } from "./gen/privmesh/keybroker/v1/keybroker_pb.js";
import { ErrorReasonSchema as TokenVaultReasons } from "./gen/privmesh/tokenvault/v1/tokenvault_pb.js";

/** Each service's ErrorReason enum by its ErrorInfo.domain. */
const REASONS: Record<string, DescEnum> = Object.fromEntries(
  [AttestationReasons, DpGatewayReasons, FheReasons, FlReasons, KeyBrokerReasons, TokenVaultReasons]
    .map((e) => [`${e.typeName.split(".")[1]}.privmesh.dev`, e]));

/** Node's codes of TLS failures, found on the causes connect-node keeps. */
const TLS_ERROR_CODE = /\b(ERR_TLS_|ERR_SSL_|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT|CERT_)/;

/** Node's and OpenSSL's words for a refused or failed TLS handshake (either side's certificate). */
const HANDSHAKE = /ERR_SSL|ERR_TLS|alert|certificate|handshake|socket disconnected before secure TLS/i;

/**
 * What connect-node reports when the server closes the connection right after the TLS 1.3 handshake, as a
 * gRPC server does when it refuses the client certificate (no alert reaches Node): a stream reset with
 * CANCEL that nobody asked for. gRPC calls that UNAVAILABLE; so does MeshError.
 */
const CLOSED_BEFORE_ANSWER = /^http\/2 stream closed with error code CANCEL/;

export class MeshError extends Error {
  /** The canonical gRPC code. */
  readonly code: Code;
  /** ErrorInfo.reason as the value of `reasonEnum` (the service's ErrorReason, or common's); undefined if unknown. */
  readonly reason: number | undefined;
  /** The enum `reason` belongs to (e.g. privmesh.keybroker.v1.ErrorReason). */
  readonly reasonEnum: DescEnum | undefined;
  /** ErrorInfo.reason as sent, e.g. "KEY_NOT_FOUND". */
  readonly reasonName: string;
  readonly domain: string;
  readonly metadata: Record<string, string>;
  readonly violations: BadRequest_FieldViolation[];
  /**
   * The TLS handshake failed, or the server closed the connection right after it without answering: the
   * server refused our certificate (missing, expired, another CA), or we did not trust its certificate.
   */
  readonly handshakeRefused: boolean;

  constructor(cause: ConnectError) {
    const info = cause.findDetails(ErrorInfoSchema)[0];
    const closed = cause.code === Code.Canceled && CLOSED_BEFORE_ANSWER.test(cause.rawMessage) && !info;
    // Node's own TLS errors (ERR_TLS_CERT_ALTNAME_INVALID, ...) reach connect-node as INTERNAL or UNAVAILABLE.
    const handshake = closed || (!info && (TLS_ERROR_CODE.test(describe(cause.cause))
      || (cause.code === Code.Unavailable && HANDSHAKE.test(`${cause.rawMessage} ${describe(cause.cause)}`))));
    super(handshake
      ? `TLS handshake refused (check the client certificate and the CA bundle): ${cause.rawMessage} ${describe(cause.cause)}`
      : `${Code[cause.code]}${info ? ` ${info.reason} (${info.domain})` : ""}: ${cause.rawMessage}`, { cause });
    this.name = "MeshError";
    this.code = handshake ? Code.Unavailable : cause.code;
    this.reasonName = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.metadata = info?.metadata ?? {};
    this.violations = cause.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
    this.handshakeRefused = handshake;
    for (const e of [REASONS[this.domain], CommonReasons]) {
      const value = e?.values.find((v) => v.name === `ERROR_REASON_${this.reasonName}`);
      if (value && this.reasonName) {
        this.reason = value.number;
        this.reasonEnum = e;
        break;
      }
    }
  }

  /** The BadRequest violation of `field` (e.g. "items[0].field"), if any. */
  violation(field: string): BadRequest_FieldViolation | undefined {
    return this.violations.find((v) => v.field === field);
  }

  /** Whether the reason is the enum value ERROR_REASON_<name>. */
  reasonIs(name: string): boolean {
    return this.reasonEnum?.values.find((v) => v.number === this.reason)?.name === `ERROR_REASON_${name}`;
  }
}

function describe(cause: unknown): string {
  if (!(cause instanceof Error)) {
    return "";
  }
  const code = (cause as { code?: unknown }).code;
  return `${typeof code === "string" ? `${code} ` : ""}${cause.message} ${describe(cause.cause)}`.trim();
}

/** Decodes anything a generated client threw. */
export function readError(err: unknown): MeshError {
  return err instanceof MeshError ? err : new MeshError(ConnectError.from(err));
}
