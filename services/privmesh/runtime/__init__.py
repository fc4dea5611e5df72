"""The runtime every privmesh service shares: server, mTLS identity, authorization, errors, audit, metrics."""
