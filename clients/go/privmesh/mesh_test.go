package privmesh_test

// The shared cases (clients/testdata/cases.json) against the live local mesh that scripts/dev/clients.sh
// starts; PRIVMESH_MESH_DIR names its state directory.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	fhev1 "github.com/privmesh/privmesh/clients/go/gen/privmesh/fhe/v1"
	"github.com/privmesh/privmesh/clients/go/privmesh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

type step struct {
	Service      string          `json:"service"`
	Call         string          `json:"call"`
	Exec         []string        `json:"exec"`
	RegisterKeys *registerKeys   `json:"register_keys"`
	Request      json.RawMessage `json:"request"`
	Save         string          `json:"save"`
	Expect       *expectation    `json:"expect"`
}

type registerKeys struct {
	Header json.RawMessage `json:"header"`
	Parts  []struct {
		Kind  string `json:"kind"`
		Zeros int    `json:"zeros"`
	} `json:"parts"`
}

type expectation struct {
	Equal    map[string]any            `json:"equal"`
	Present  []string                  `json:"present"`
	Contains map[string]map[string]any `json:"contains"`
	Error    *expectedError            `json:"error"`
}

type expectedError struct {
	Code, Reason, Domain, Field string
}

type cases struct {
	Flows []struct {
		Name    string `json:"name"`
		Service string `json:"service"`
		Steps   []step `json:"steps"`
	} `json:"flows"`
	BadInputs []struct {
		Service, Call, Field, Domain string
		Request                      json.RawMessage
	} `json:"bad_inputs"`
	Denied struct {
		Identity, Code, Reason string
		Calls                  []struct {
			Service, Call, Domain string
			Request               json.RawMessage
		}
	} `json:"denied"`
	HandshakeRefused struct {
		Service, Call, Code string
		Identities          []string
	} `json:"handshake_refused"`
	WrongPeer struct {
		Service, Call string
		PeerOf        string `json:"peer_of"`
	} `json:"wrong_peer"`
	Rotation struct {
		Service, Call string
		Before, After struct{ PKI, Identity string }
	} `json:"rotation"`
	Retries struct {
		Retried     []string `json:"retried"`
		NotRetried  []string `json:"not_retried"`
		MaxAttempts int      `json:"max_attempts"`
	} `json:"retries"`
	Reflection struct {
		Service string
		Lists   []string
	} `json:"reflection"`
}

type mesh struct {
	dir       string
	targets   map[string]string
	peers     map[string]string
	mu        sync.Mutex
	conns     map[string]*privmesh.Conn
	variables map[string]any
}

func loadCases(t *testing.T) cases {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c cases
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func startMesh(t *testing.T) *mesh {
	t.Helper()
	dir := os.Getenv("PRIVMESH_MESH_DIR")
	if dir == "" {
		t.Skip("PRIVMESH_MESH_DIR is unset: scripts/dev/clients.sh starts a mesh and runs these tests")
	}
	data, err := os.ReadFile(filepath.Join(dir, "mesh.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Endpoints []struct {
			Service, Target string
			SpiffeID        string `json:"spiffe_id"`
		}
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	testdata, _ := filepath.Abs(filepath.Join("..", "..", "testdata"))
	run := make([]byte, 4)
	_, _ = rand.Read(run)
	m := &mesh{dir: dir, targets: map[string]string{}, peers: map[string]string{}, conns: map[string]*privmesh.Conn{},
		variables: map[string]any{"run": "go" + hex.EncodeToString(run), "testdata": testdata}}
	for _, e := range file.Endpoints {
		m.targets[e.Service] = e.Target
		m.peers[e.Service] = e.SpiffeID
	}
	t.Cleanup(func() {
		for _, c := range m.conns {
			_ = c.Close()
		}
	})
	return m
}

func (m *mesh) identity(name, pki string) privmesh.Identity {
	return privmesh.Identity{CAFile: filepath.Join(m.dir, "pki", "ca.crt"),
		CertFile: filepath.Join(m.dir, pki, name+".crt"), KeyFile: filepath.Join(m.dir, pki, name+".key")}
}

func (m *mesh) conn(t *testing.T, service, identity, pki string) *privmesh.Conn {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	key := service + "/" + pki + "/" + identity
	if c, ok := m.conns[key]; ok {
		return c
	}
	target, ok := m.targets[service]
	if !ok {
		t.Fatalf("mesh.json has no %s", service)
	}
	c, err := privmesh.Dial(target, m.identity(identity, pki), privmesh.WithTimeout(120*time.Second),
		privmesh.WithPeer(m.peers[service]))
	if err != nil {
		t.Fatal(err)
	}
	m.conns[key] = c
	return c
}

// invoke calls a unary method by name with a proto-JSON request and returns the proto-JSON reply.
func invoke(ctx context.Context, conn *privmesh.Conn, call string, request json.RawMessage) (map[string]any, error) {
	service, method, _ := strings.Cut(call, "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil, err
	}
	md := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, fmt.Errorf("no method %s", call)
	}
	in, _ := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	out, _ := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	req, resp := in.New().Interface(), out.New().Interface()
	if len(request) > 0 {
		if err := protojson.Unmarshal(request, req); err != nil {
			return nil, fmt.Errorf("request of %s: %w", call, err)
		}
	}
	if err := conn.Invoke(ctx, "/"+call, req, resp); err != nil {
		return nil, err
	}
	data, err := protojson.Marshal(resp)
	if err != nil {
		return nil, err
	}
	var reply map[string]any
	return reply, json.Unmarshal(data, &reply)
}

var placeholder = regexp.MustCompile(`\$\{([^}]+)\}`)

// substitute replaces ${path} in every string of v: a whole-string placeholder by the value itself.
func (m *mesh) substitute(t *testing.T, v any) any {
	switch x := v.(type) {
	case string:
		if whole := placeholder.FindStringSubmatch(x); whole != nil && whole[0] == x {
			return m.lookupVar(t, whole[1])
		}
		return placeholder.ReplaceAllStringFunc(x, func(s string) string {
			return fmt.Sprint(m.lookupVar(t, s[2:len(s)-1]))
		})
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = m.substitute(t, e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = m.substitute(t, e)
		}
		return out
	}
	return v
}

func (m *mesh) lookupVar(t *testing.T, path string) any {
	value, ok := lookup(m.variables, path)
	if !ok {
		t.Fatalf("no value at ${%s}", path)
	}
	return value
}

func lookup(v any, path string) (any, bool) {
	for _, part := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[part]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func sameValue(a, b any) bool {
	fa, aok := a.(float64)
	fb, bok := b.(float64)
	if aok && bok {
		return math.Abs(fa-fb) <= 1e-9*math.Max(1, math.Abs(fb))
	}
	return reflect.DeepEqual(a, b)
}

func (m *mesh) render(t *testing.T, raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(m.substitute(t, v))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (m *mesh) exec(t *testing.T, args []string) map[string]any {
	fixture := strings.Fields(os.Getenv("PRIVMESH_FIXTURE"))
	if len(fixture) == 0 {
		t.Fatal("PRIVMESH_FIXTURE is unset (scripts/dev/clients.sh sets it)")
	}
	for _, a := range args {
		fixture = append(fixture, m.substitute(t, a).(string))
	}
	out, err := exec.Command(fixture[0], fixture[1:]...).Output()
	if err != nil {
		t.Fatalf("%v: %v", fixture, err)
	}
	var reply map[string]any
	if err := json.Unmarshal(out, &reply); err != nil {
		t.Fatal(err)
	}
	return reply
}

func checkError(t *testing.T, err error, want expectedError) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s %s, the call succeeded", want.Code, want.Reason)
	}
	e := privmesh.FromError(err)
	if e.Code.String() != codeName(want.Code) {
		t.Fatalf("want code %s, got %v", want.Code, e)
	}
	if want.Reason != "" && !e.ReasonIs(want.Reason) {
		t.Fatalf("want reason %s as the contract's enum, got %v (enum %v)", want.Reason, e, e.Reason)
	}
	if want.Domain != "" && e.Domain != want.Domain {
		t.Fatalf("want domain %s, got %s", want.Domain, e.Domain)
	}
	if want.Field != "" && e.Violation(want.Field) == nil {
		t.Fatalf("want a violation of %s, got %v", want.Field, e.Violations)
	}
}

// codeName maps the contracts' upper-snake code names to grpc-go's String() names.
func codeName(name string) string {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.EqualFold(strings.ReplaceAll(name, "_", ""), c.String()) {
			return c.String()
		}
	}
	return name
}

func (m *mesh) runStep(t *testing.T, flowService string, s step) {
	t.Helper()
	if s.Exec != nil {
		m.variables[s.Save] = m.exec(t, s.Exec)
		return
	}
	service := s.Service
	if service == "" {
		service = flowService
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var reply map[string]any
	var err error
	if s.RegisterKeys != nil {
		err = m.registerKeys(t, ctx, m.conn(t, service, "admin", "pki"), s.RegisterKeys)
	} else {
		reply, err = invoke(ctx, m.conn(t, service, "admin", "pki"), s.Call, m.render(t, s.Request))
	}
	if s.Expect != nil && s.Expect.Error != nil {
		checkError(t, err, *s.Expect.Error)
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", s.Call, privmesh.FromError(err))
	}
	if s.Save != "" {
		m.variables[s.Save] = reply
	}
	if s.Expect == nil {
		return
	}
	for path, want := range s.Expect.Equal {
		got, _ := lookup(reply, path)
		if want = m.substitute(t, want); !sameValue(got, want) {
			t.Fatalf("%s: %s = %v, want %v", s.Call, path, got, want)
		}
	}
	for _, path := range s.Expect.Present {
		if got, ok := lookup(reply, path); !ok || reflect.ValueOf(got).IsZero() {
			t.Fatalf("%s: %s is empty", s.Call, path)
		}
	}
	for path, fields := range s.Expect.Contains {
		items, _ := lookup(reply, path)
		want := m.substitute(t, any(fields)).(map[string]any)
		found := false
		for _, item := range asSlice(items) {
			match := true
			for k, v := range want {
				got, _ := lookup(item, k)
				match = match && sameValue(got, v)
			}
			found = found || match
		}
		if !found {
			t.Fatalf("%s: no element of %s has %v", s.Call, path, want)
		}
	}
}

// registerKeys streams zero-filled key parts through privmesh.RegisterKeys.
func (m *mesh) registerKeys(t *testing.T, ctx context.Context, conn *privmesh.Conn, r *registerKeys) error {
	header := &fhev1.RegisterKeysHeader{}
	if err := protojson.Unmarshal(m.render(t, r.Header), header); err != nil {
		return err
	}
	var parts []privmesh.KeyPart
	for _, p := range r.Parts {
		parts = append(parts, privmesh.KeyPart{Kind: fhev1.KeyPartKind(fhev1.KeyPartKind_value[p.Kind]), Data: make([]byte, p.Zeros)})
	}
	_, err := privmesh.RegisterKeys(ctx, fhev1.NewFHEInferenceClient(conn), header, parts)
	return err
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func TestCases(t *testing.T) {
	c := loadCases(t)
	m := startMesh(t)
	for _, flow := range c.Flows {
		t.Run("flow/"+flow.Name, func(t *testing.T) {
			for _, s := range flow.Steps {
				m.runStep(t, flow.Service, s)
			}
		})
	}
	for _, bad := range c.BadInputs {
		t.Run("bad-input/"+bad.Service, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := invoke(ctx, m.conn(t, bad.Service, "admin", "pki"), bad.Call, m.render(t, bad.Request))
			checkError(t, err, expectedError{Code: "INVALID_ARGUMENT", Reason: "", Domain: bad.Domain, Field: bad.Field})
		})
	}
	for _, denied := range c.Denied.Calls {
		t.Run("denied/"+denied.Service, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := invoke(ctx, m.conn(t, denied.Service, c.Denied.Identity, "pki"), denied.Call, m.render(t, denied.Request))
			checkError(t, err, expectedError{Code: c.Denied.Code, Reason: c.Denied.Reason, Domain: denied.Domain})
		})
	}
}

func TestHandshakeRefusedIsExplicit(t *testing.T) {
	c := loadCases(t)
	m := startMesh(t)
	h := c.HandshakeRefused
	for _, name := range h.Identities {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := invoke(ctx, m.conn(t, h.Service, name, "foreign-pki"), h.Call, nil)
		cancel()
		e := privmesh.FromError(err)
		if e == nil || e.Code.String() != codeName(h.Code) || !e.HandshakeRefused {
			t.Fatalf("%s: want %s with HandshakeRefused, got %v", name, h.Code, e)
		}
		if !strings.Contains(e.Error(), "TLS handshake refused") {
			t.Fatalf("the error does not say the handshake was refused: %v", e)
		}
	}
}

func TestReflectionV1ListsServices(t *testing.T) {
	c := loadCases(t)
	m := startMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(m.conn(t, c.Reflection.Service, "admin", "pki")).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	reply, err := stream.Recv()
	if err != nil {
		t.Fatalf("grpc.reflection.v1: %v", err)
	}
	listed := map[string]bool{}
	for _, s := range reply.GetListServicesResponse().GetService() {
		listed[s.GetName()] = true
	}
	for _, want := range c.Reflection.Lists {
		if !listed[want] {
			t.Fatalf("reflection v1 does not list %s (got %v)", want, listed)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil { // as a rotation writes them: whole files, atomically
		t.Fatal(err)
	}
}

func TestRotatedCertificateIsUsed(t *testing.T) {
	c := loadCases(t)
	m := startMesh(t)
	r := c.Rotation
	dir := t.TempDir()
	me := privmesh.Identity{CAFile: filepath.Join(m.dir, "pki", "ca.crt"), CertFile: filepath.Join(dir, "me.crt"),
		KeyFile: filepath.Join(dir, "me.key")}
	install := func(pki, identity string) {
		copyFile(t, filepath.Join(m.dir, pki, identity+".crt"), me.CertFile)
		copyFile(t, filepath.Join(m.dir, pki, identity+".key"), me.KeyFile)
	}
	install(r.Before.PKI, r.Before.Identity)
	conn, err := privmesh.Dial(m.targets[r.Service], me, privmesh.WithRefresh(200*time.Millisecond),
		privmesh.WithPeer(m.peers[r.Service]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := invoke(ctx, conn, r.Call, nil); err == nil || !privmesh.FromError(err).HandshakeRefused {
		t.Fatalf("before the rotation: want a refused handshake, got %v", err)
	}
	install(r.After.PKI, r.After.Identity)
	time.Sleep(time.Second) // the provider's next refresh
	// The channel reconnects with backoff after the refusal; wait for it to be ready again.
	if err := conn.Invoke(ctx, "/"+r.Call, emptyRequest(t, r.Call), emptyReply(t, r.Call), grpc.WaitForReady(true)); err != nil {
		t.Fatalf("after the rotation: %v", privmesh.FromError(err))
	}
}

func emptyRequest(t *testing.T, call string) proto.Message {
	return messageOf(t, call, func(m protoreflect.MethodDescriptor) protoreflect.MessageDescriptor { return m.Input() })
}

func emptyReply(t *testing.T, call string) proto.Message {
	return messageOf(t, call, func(m protoreflect.MethodDescriptor) protoreflect.MessageDescriptor { return m.Output() })
}

func messageOf(t *testing.T, call string, pick func(protoreflect.MethodDescriptor) protoreflect.MessageDescriptor) proto.Message {
	service, method, _ := strings.Cut(call, "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		t.Fatal(err)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(pick(d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(method))).FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}

func TestAnotherServerIdentityIsRefused(t *testing.T) {
	c := loadCases(t)
	m := startMesh(t)
	w := c.WrongPeer
	conn, err := privmesh.Dial(m.targets[w.Service], m.identity("admin", "pki"), privmesh.WithPeer(m.peers[w.PeerOf]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = invoke(ctx, conn, w.Call, nil)
	if e := privmesh.FromError(err); e == nil || !e.HandshakeRefused {
		t.Fatalf("%s answered as %s: %v", w.Service, w.PeerOf, e)
	}
}
