package privmesh

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

type methodName struct {
	Service string `json:"service,omitempty"`
	Method  string `json:"method,omitempty"`
}

type methodConfig struct {
	Name        []methodName   `json:"name"`
	Timeout     string         `json:"timeout"`
	RetryPolicy map[string]any `json:"retryPolicy,omitempty"`
}

// The Python runtime's policy (services/privmesh/runtime/client.py): a few quick attempts, on UNAVAILABLE only.
var retryPolicy = map[string]any{"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2s",
	"backoffMultiplier": 2, "retryableStatusCodes": []string{"UNAVAILABLE"}}

func idempotent(m protoreflect.MethodDescriptor) bool {
	opts, ok := m.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil {
		return false
	}
	level := opts.GetIdempotencyLevel()
	return level == descriptorpb.MethodOptions_NO_SIDE_EFFECTS || level == descriptorpb.MethodOptions_IDEMPOTENT
}

// ServiceConfig is the gRPC service config of every privmesh service in the contracts: timeout on every
// method, and a retry policy on the methods whose idempotency_level is NO_SIDE_EFFECTS or IDEMPOTENT.
func ServiceConfig(timeout time.Duration) string {
	var services []protoreflect.ServiceDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(f.Package()), "privmesh.") {
			for i := 0; i < f.Services().Len(); i++ {
				services = append(services, f.Services().Get(i))
			}
		}
		return true
	})
	sort.Slice(services, func(i, j int) bool { return services[i].FullName() < services[j].FullName() })
	seconds := fmt.Sprintf("%.3fs", timeout.Seconds())
	var configs []methodConfig
	for _, s := range services {
		var safe, others []methodName
		for i := 0; i < s.Methods().Len(); i++ {
			m := s.Methods().Get(i)
			name := methodName{Service: string(s.FullName()), Method: string(m.Name())}
			if idempotent(m) {
				safe = append(safe, name)
			} else {
				others = append(others, name)
			}
		}
		if len(safe) > 0 {
			configs = append(configs, methodConfig{Name: safe, Timeout: seconds, RetryPolicy: retryPolicy})
		}
		if len(others) > 0 {
			configs = append(configs, methodConfig{Name: others, Timeout: seconds})
		}
	}
	configs = append(configs, methodConfig{Name: []methodName{{}}, Timeout: seconds})
	out, err := json.Marshal(map[string]any{"methodConfig": configs})
	if err != nil {
		panic(err) // plain maps and strings always marshal
	}
	return string(out)
}
