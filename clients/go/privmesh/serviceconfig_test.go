package privmesh_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/privmesh/privmesh/clients/go/privmesh"
)

// The shared "retries" case: the service config retries exactly the methods the contracts mark idempotent.
func TestServiceConfigRetriesIdempotentMethodsOnly(t *testing.T) {
	c := loadCases(t)
	var config struct {
		MethodConfig []struct {
			Name        []struct{ Service, Method string }
			Timeout     string
			RetryPolicy *struct {
				MaxAttempts          int
				RetryableStatusCodes []string
			}
		}
	}
	if err := json.Unmarshal([]byte(privmesh.ServiceConfig(1500*time.Millisecond)), &config); err != nil {
		t.Fatal(err)
	}
	retried := map[string]bool{}
	for _, mc := range config.MethodConfig {
		if mc.Timeout != "1.500s" {
			t.Fatalf("a method config without the default deadline: %+v", mc)
		}
		for _, n := range mc.Name {
			if _, seen := retried[n.Service+"/"+n.Method]; seen {
				t.Fatalf("%s/%s is configured twice", n.Service, n.Method)
			}
			retried[n.Service+"/"+n.Method] = mc.RetryPolicy != nil
			if mc.RetryPolicy != nil && (mc.RetryPolicy.MaxAttempts != c.Retries.MaxAttempts ||
				strings.Join(mc.RetryPolicy.RetryableStatusCodes, ",") != "UNAVAILABLE") {
				t.Fatalf("unexpected retry policy %+v", *mc.RetryPolicy)
			}
		}
	}
	for _, m := range c.Retries.Retried {
		if r, ok := retried[m]; !ok || !r {
			t.Errorf("%s is not retried", m)
		}
	}
	for _, m := range c.Retries.NotRetried {
		if r, ok := retried[m]; !ok || r {
			t.Errorf("%s is retried (or not configured)", m)
		}
	}
}
