"""The auditor console (read-only web page over the services' gRPC APIs)."""
