package privmesh

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Error is a failed call, decoded: the canonical code and the google.rpc.Status details the mesh sends.
type Error struct {
	Code    codes.Code
	Message string
	// Reason is ErrorInfo.reason as the ErrorReason enum of the service's contract (e.g.
	// keybrokerv1.ErrorReason_ERROR_REASON_KEY_NOT_FOUND), or of privmesh.common.v1 for the runtime's
	// reasons (PERMISSION_DENIED_BY_POLICY, INVALID_FIELD, ...); nil when the reply has none.
	Reason protoreflect.Enum
	// ReasonName is ErrorInfo.reason as sent (e.g. "KEY_NOT_FOUND"), also when no enum knows it.
	ReasonName string
	Domain     string
	Metadata   map[string]string
	Violations []*errdetails.BadRequest_FieldViolation
	// HandshakeRefused says the TLS handshake failed, or the server closed the connection right after it
	// before any HTTP/2 frame: what a server that refuses the client certificate (missing, expired, from
	// another CA) does under TLS 1.3, where grpc-go reports only "error reading server preface: EOF" or a
	// broken pipe.
	HandshakeRefused bool
	cause            error
}

func (e *Error) Error() string {
	if e.HandshakeRefused {
		return fmt.Sprintf("privmesh: TLS handshake refused (check the client certificate and the CA bundle): %s", e.Message)
	}
	if e.ReasonName != "" {
		return fmt.Sprintf("privmesh: %s %s (%s): %s", e.Code, e.ReasonName, e.Domain, e.Message)
	}
	return fmt.Sprintf("privmesh: %s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.cause }

// Violation returns the BadRequest violation of field (e.g. "items[0].field"), or nil.
func (e *Error) Violation(field string) *errdetails.BadRequest_FieldViolation {
	for _, v := range e.Violations {
		if v.GetField() == field {
			return v
		}
	}
	return nil
}

// ReasonIs says whether Reason is the enum value named ERROR_REASON_<name> (e.g. "INVALID_CIPHERTEXT").
func (e *Error) ReasonIs(name string) bool {
	if e.Reason == nil {
		return false
	}
	value := e.Reason.Descriptor().Values().ByNumber(e.Reason.Number())
	return value != nil && string(value.Name()) == "ERROR_REASON_"+name
}

// FromError decodes err (as returned by a generated stub); nil for nil. Errors that are not gRPC statuses
// come back with codes.Unknown and are kept as the cause.
func FromError(err error) *Error {
	if err == nil {
		return nil
	}
	var decoded *Error
	if errors.As(err, &decoded) {
		return decoded
	}
	st, _ := status.FromError(err)
	e := &Error{Code: st.Code(), Message: st.Message(), cause: err}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.ReasonName, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
			e.Reason = reasonEnum(d.GetDomain(), d.GetReason())
		case *errdetails.BadRequest:
			e.Violations = append(e.Violations, d.GetFieldViolations()...)
		}
	}
	e.HandshakeRefused = e.Code == codes.Unavailable && handshakeFailure(e.Message)
	return e
}

// grpc-go's words for a failed TLS handshake on either side, and for a server that hung up right after it
// (read as EOF before its HTTP/2 preface, or as a broken pipe when the client was writing its own).
func handshakeFailure(message string) bool {
	for _, sign := range []string{"authentication handshake failed", "remote error: tls:", "x509:",
		"error reading server preface", "write: broken pipe"} {
		if strings.Contains(message, sign) {
			return true
		}
	}
	return false
}

// reasonEnum resolves reason in the contract of domain ("keybroker.privmesh.dev" ->
// privmesh.keybroker.v1.ErrorReason), then in privmesh.common.v1.ErrorReason.
func reasonEnum(domain, reason string) protoreflect.Enum {
	pkg, _, _ := strings.Cut(domain, ".")
	for _, name := range []string{"privmesh." + pkg + ".v1.ErrorReason", "privmesh.common.v1.ErrorReason"} {
		enum, err := protoregistry.GlobalTypes.FindEnumByName(protoreflect.FullName(name))
		if err != nil {
			continue
		}
		if value := enum.Descriptor().Values().ByName(protoreflect.Name("ERROR_REASON_" + reason)); value != nil {
			return enum.New(value.Number())
		}
	}
	return nil
}
