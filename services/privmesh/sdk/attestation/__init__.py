"""The attestation verifier's result tokens: minted by the verifier, verified by the key broker."""
