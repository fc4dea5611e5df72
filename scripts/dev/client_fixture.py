"""What the polyglot clients' tests cannot make in their own language, made by the local mesh's Python:
an enclave-simulator attestation document binding a nonce (clients/testdata/cases.json, "exec" steps).

Usage: python scripts/dev/client_fixture.py --state-dir DIR attest NONCE_BASE64
Prints one JSON object on stdout: {"document": BASE64}.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from privmesh.enclave.app import EnclaveApp
from privmesh.enclave.simulator import DevCa, SimulatedNsm
from privmesh.mesh.catalog import enclave_simulator_dir


def attest(state_dir: Path, nonce_b64: str) -> dict[str, str]:
    """A document from the mesh's simulated enclave (the development root the verifier trusts), binding the
    enclave's public key as a real one does."""
    enclave = EnclaveApp(SimulatedNsm(DevCa.load(enclave_simulator_dir(state_dir.resolve()))))
    document = enclave.attest(base64.b64decode(nonce_b64, validate=True))
    return {"document": base64.b64encode(document).decode()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("command", choices=["attest"])
    parser.add_argument("nonce")
    args = parser.parse_args()
    json.dump(attest(args.state_dir, args.nonce), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
