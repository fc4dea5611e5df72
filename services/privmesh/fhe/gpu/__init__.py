"""The GPU backend of fhe-inference: OpenFHE's CKKS ciphertexts and keys as torch tensors, and the operations a
circuit needs computed on them (CUDA when present, the CPU otherwise). Needs the `gpu` extra (torch)."""
