"""The `privmesh` command line.

The gRPC C core prints its own log lines (e.g. ssl_transport_security.cc on a refused handshake, which the
demo provokes on purpose) to the terminal; the command's output is its own, so they are off unless the
user sets GRPC_VERBOSITY. It is read once, when grpc is first imported: hence here, before any import.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
