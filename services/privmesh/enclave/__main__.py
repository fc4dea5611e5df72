"""Run the enclave app: `python -m privmesh.enclave` inside a Nitro Enclave (/dev/nsm + AF_VSOCK), or
`python -m privmesh.enclave --simulate --ca-dir DIR --socket PATH` on a laptop or in CI."""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from privmesh.enclave.app import EnclaveApp
from privmesh.enclave.nsm import DeviceNsm, Nsm, NsmError
from privmesh.enclave.simulator import DEFAULT_IMAGE, ROOT_FILE, SimulatedNsm
from privmesh.sdk.enclave.vsock import ENCLAVE_PORT, Address, FrameServer, listen, vsock_listen_address


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m privmesh.enclave", description=__doc__)
    parser.add_argument("--port", type=int, default=ENCLAVE_PORT, help="vsock port to listen on (enclave mode)")
    sim = parser.add_argument_group("simulator (no Nitro hardware)")
    sim.add_argument("--simulate", action="store_true", help="use the software NSM and a local socket")
    sim.add_argument("--ca-dir", help="directory of the development CA (created if absent; root.pem inside)")
    sim.add_argument("--socket", help="Unix socket path to listen on")
    sim.add_argument("--tcp", help="HOST:PORT on loopback to listen on, instead of --socket")
    sim.add_argument("--image", default=DEFAULT_IMAGE, help="simulated image name; PCR0 = SHA-384 of it")
    sim.add_argument("--debug-mode", action="store_true", help="simulate a debug enclave (PCR0..2 zero)")
    sim.add_argument("--module-id", help="simulated NSM module id")
    args = parser.parse_args(argv)
    if args.simulate:
        if not args.ca_dir:
            parser.error("--simulate needs --ca-dir")
        if bool(args.socket) == bool(args.tcp):
            parser.error("--simulate needs exactly one of --socket or --tcp")
    elif args.ca_dir or args.socket or args.tcp:
        parser.error("--ca-dir, --socket and --tcp only apply with --simulate")
    return args


def _tcp_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the app and serve until SIGTERM / SIGINT."""
    args = _parse_args(argv)
    nsm: Nsm
    address: Address
    try:
        if args.simulate:
            nsm = SimulatedNsm.from_ca_dir(
                args.ca_dir, image=args.image, debug=args.debug_mode, module_id=args.module_id
            )
            address = args.socket or _tcp_address(args.tcp)
        else:
            nsm = DeviceNsm()
            address = vsock_listen_address(args.port)
    except NsmError as exc:
        print(f"privmesh.enclave: {exc}", file=sys.stderr)
        return 2
    app = EnclaveApp(nsm)
    server = FrameServer(listen(address), app.handle)

    def _stop(signum: int, frame: FrameType | None) -> None:
        server.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ready = {
        "event": "ready",
        "simulated": bool(args.simulate),
        "listen": str(server.address),
        "public_key_sha256": hashlib.sha256(app.public_key_der).hexdigest(),
    }
    if isinstance(nsm, SimulatedNsm):
        ready["dev_root"] = f"{args.ca_dir}/{ROOT_FILE}"
        ready["dev_root_sha256"] = nsm.root_sha256
    print(json.dumps(ready), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
