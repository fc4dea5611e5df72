"""The long fuzz run: the fuzz suite (tests/fuzz) with many examples per method and fresh randomness, against
a local mesh of every service over mTLS. CI runs the same suite derandomized with 6 examples per method.

Usage: .venv/bin/python scripts/fuzz.py [--examples 500] [--seed N]
A failure prints the method, the code and the request bytes (hex) that caused it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="generated requests per method")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: fresh randomness)")
    args = parser.parse_args()
    env = {**os.environ, "PRIVMESH_FUZZ_EXAMPLES": str(args.examples), "PRIVMESH_FUZZ_RANDOM": "1"}
    command = [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-p", "no:cacheprovider", "--timeout=0"]
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
