"""The enclave's link to its parent: the vsock framing and the proxy operations (enclave app <-> key broker)."""
