"""`python -m privmesh.enclave.attest --nonce HEX`: one attestation document binding a verifier's nonce, raw on
stdout, for agents that fetch evidence on demand (privmesh's FLARE Nitro authorizer runs it per token).

Inside a Nitro Enclave it asks /dev/nsm; `--simulate` (enclave) or `--simulate-nitrotpm` (attestable AMI) sign
with the development CA in --ca-dir instead, which production verifiers refuse. On an EC2 instance with a NitroTPM
point the authorizer at AWS's `nitro-tpm-attest` instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from privmesh.enclave.nitrotpm_simulator import DEFAULT_AMI, SimulatedNitroTpm
from privmesh.enclave.nsm import DeviceNsm, Nsm
from privmesh.enclave.simulator import DEFAULT_IMAGE, DevCa, SimulatedNsm


def _source(args: argparse.Namespace) -> Nsm | SimulatedNitroTpm:
    if args.simulate:
        return SimulatedNsm(DevCa.load(args.ca_dir), image=args.image)
    if args.simulate_nitrotpm:
        return SimulatedNitroTpm(DevCa.load(args.ca_dir), ami=args.ami)
    return DeviceNsm()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privmesh.enclave.attest", description=__doc__)
    parser.add_argument("--nonce", required=True, help="the challenge to bind, hex")
    parser.add_argument("--user-data", default="", help="bytes to bind as user_data, hex")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--simulate", action="store_true", help="a simulated enclave's document")
    mode.add_argument("--simulate-nitrotpm", action="store_true", help="a simulated NitroTPM's document")
    parser.add_argument("--ca-dir", help="the development CA's directory (with --simulate*)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="simulated enclave image (PCR0 = SHA-384 of it)")
    parser.add_argument("--ami", default=DEFAULT_AMI, help="simulated attestable AMI (its PCR4/7/12)")
    args = parser.parse_args(argv)
    if (args.simulate or args.simulate_nitrotpm) != bool(args.ca_dir):
        parser.error("--ca-dir goes with --simulate or --simulate-nitrotpm")
    try:
        nonce, user_data = bytes.fromhex(args.nonce), bytes.fromhex(args.user_data)
    except ValueError:
        parser.error("--nonce and --user-data are hex")
    document = _source(args).attest(nonce=nonce, user_data=user_data or None)
    sys.stdout.buffer.write(document)


if __name__ == "__main__":
    main()
