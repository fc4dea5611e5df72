"""What two or more privmesh components share, beside the generated contracts: the attestation-result token
format, the enclave's vsock framing, the key broker's envelope format and the Python clients of the contracts.

The only seam between services: a service imports privmesh.runtime, privmesh.sdk and generated stubs, never
another service's package (the import-linter contracts in pyproject.toml enforce it). This package imports
only the runtime and the stubs.
"""
