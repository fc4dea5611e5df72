"""Where keys' material lives: one small interface (base.Backend), the embedded keystore and AWS KMS."""
