"""The audit log: append-only, hash-chained, with Ed25519-signed checkpoints; fail closed."""
