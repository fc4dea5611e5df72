// Package privmesh is the Go SDK of the privmesh services: a client connection with the mesh's defaults
// (mTLS from re-read PEM files, a deadline on every call, retries only for the methods the contracts mark
// idempotent, keepalive, an optional Kubernetes service-account token), typed errors, and the chunked
// streams. The stubs are the generated ones under gen/.
package privmesh

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/security/advancedtls"
)

// Identity is a caller's mesh credentials: the CA bundle that signs the servers, and the caller's own
// certificate and key (PEM files; re-read while the connection lives, so a rotated leaf is picked up).
type Identity struct {
	CAFile, CertFile, KeyFile string
}

type config struct {
	timeout         time.Duration
	serverName      string
	tokenFile       string
	refresh         time.Duration
	keepalive       keepalive.ClientParameters
	maxMessageBytes int
	err             error
}

// Option changes one of Dial's defaults.
type Option func(*config)

// WithTimeout sets the deadline of calls made without one (default 30 s).
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithServerName checks the server's certificate against name instead of the target's host.
func WithServerName(name string) Option { return func(c *config) { c.serverName = name } }

// WithPeer pins the server's identity: its certificate must carry spiffeID's DNS form
// ("SA.NS.TRUST-DOMAIN.spiffe.invalid", beside the URI SAN in every mesh certificate), as the Python runtime
// pins its peers; mesh.json lists each service's SPIFFE ID.
func WithPeer(spiffeID string) Option {
	return func(c *config) { c.serverName, c.err = spiffeDNSName(spiffeID) }
}

// spiffeDNSName maps spiffe://TRUST-DOMAIN/ns/NS/sa/SA to the DNS name mesh certificates carry for it.
func spiffeDNSName(spiffeID string) (string, error) {
	rest, ok := strings.CutPrefix(spiffeID, "spiffe://")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[0] == "" || parts[2] == "" || parts[4] == "" {
		return "", fmt.Errorf("privmesh: %q is not spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT", spiffeID)
	}
	return parts[4] + "." + parts[2] + "." + parts[0] + ".spiffe.invalid", nil
}

// WithTokenFile sends the token in path (re-read on every call, as kubelet rotates projected
// service-account tokens) as "authorization: Bearer ..." for meshes behind a gateway that reads it.
func WithTokenFile(path string) Option { return func(c *config) { c.tokenFile = path } }

// WithRefresh sets how often the PEM files are re-read (default 1 min).
func WithRefresh(d time.Duration) Option { return func(c *config) { c.refresh = d } }

// WithKeepalive replaces the keepalive parameters (default: a ping after 60 s without reads on an
// active call, 20 s to answer).
func WithKeepalive(p keepalive.ClientParameters) Option { return func(c *config) { c.keepalive = p } }

// Conn is a client connection to one mesh service; Close also stops the certificate watcher.
type Conn struct {
	*grpc.ClientConn
	provider certprovider.Provider
}

// Close closes the connection and stops re-reading the PEM files.
func (c *Conn) Close() error {
	c.provider.Close()
	return c.ClientConn.Close()
}

// Dial opens a connection to target ("127.0.0.1:PORT" or "dns:///host:port") with identity.
func Dial(target string, identity Identity, opts ...Option) (*Conn, error) {
	cfg := config{timeout: 30 * time.Second, refresh: time.Minute, maxMessageBytes: 4 << 20,
		keepalive: keepalive.ClientParameters{Time: 60 * time.Second, Timeout: 20 * time.Second}}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	provider, err := pemfile.NewProvider(pemfile.Options{CertFile: identity.CertFile, KeyFile: identity.KeyFile,
		RootFile: identity.CAFile, RefreshDuration: cfg.refresh})
	if err != nil {
		return nil, fmt.Errorf("privmesh: credentials: %w", err)
	}
	creds, err := advancedtls.NewClientCreds(&advancedtls.Options{
		IdentityOptions:  advancedtls.IdentityCertificateOptions{IdentityProvider: provider},
		RootOptions:      advancedtls.RootCertificateOptions{RootProvider: provider},
		VerificationType: advancedtls.CertAndHostVerification,
		MinTLSVersion:    tls.VersionTLS12,
		MaxTLSVersion:    tls.VersionTLS13,
	})
	if err != nil {
		provider.Close()
		return nil, fmt.Errorf("privmesh: credentials: %w", err)
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(ServiceConfig(cfg.timeout)),
		grpc.WithKeepaliveParams(cfg.keepalive),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.maxMessageBytes),
			grpc.MaxCallSendMsgSize(cfg.maxMessageBytes)),
	}
	if cfg.serverName != "" {
		dialOpts = append(dialOpts, grpc.WithAuthority(cfg.serverName))
	}
	if cfg.tokenFile != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(tokenFile(cfg.tokenFile)))
	}
	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		provider.Close()
		return nil, fmt.Errorf("privmesh: %w", err)
	}
	return &Conn{ClientConn: conn, provider: provider}, nil
}

// tokenFile is a per-call credential read from a file on every call.
type tokenFile string

func (t tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	token, err := os.ReadFile(string(t))
	if err != nil {
		return nil, fmt.Errorf("privmesh: service-account token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(string(token))}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }
