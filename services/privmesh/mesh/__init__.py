"""The local mesh: every implemented service as its own process on loopback, with a development PKI."""
