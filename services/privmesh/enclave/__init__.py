"""The enclave side of privmesh: NSM access, a software NSM for laptops/CI, vsock framing, the enclave app."""
