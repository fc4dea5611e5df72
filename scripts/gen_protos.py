"""Generates the Python code of the contracts (protos/ -> services/privmesh/<service>/v1/).

Usage: python scripts/gen_protos.py            regenerate in place
       python scripts/gen_protos.py --check    exit 1 if the committed code is stale
The generated *_pb2.py, *_pb2.pyi and *_pb2_grpc.py files are committed and never edited by hand.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "services"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc into out_dir and returns the generated files, relative to out_dir."""
    well_known = resources.files("grpc_tools") / "_proto"
    sources = [str(p.relative_to(PROTOS)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def committed_files() -> list[Path]:
    pkg = OUTPUT / "privmesh"
    return sorted(p.relative_to(OUTPUT) for p in pkg.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def ensure_packages(files: list[Path]) -> None:
    """Every directory holding generated code must be an importable package."""
    for rel in files:
        for parent in rel.parents:
            if parent == Path("."):
                continue
            init = OUTPUT / parent / "__init__.py"
            if not init.exists():
                init.write_text("")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [str(r) for r in fresh
                 if not (OUTPUT / r).exists() or not filecmp.cmp(Path(tmp) / r, OUTPUT / r, shallow=False)]
        extra = [str(r) for r in committed_files() if r not in fresh]
    if stale or extra:
        print("generated code is stale; run: python scripts/gen_protos.py", file=sys.stderr)
        for name in stale:
            print(f"  differs or missing: services/{name}", file=sys.stderr)
        for name in extra:
            print(f"  no longer generated: services/{name}", file=sys.stderr)
        return 1
    print(f"generated code is up to date ({len(fresh)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    if parser.parse_args().check:
        return check()
    for stale in committed_files():
        (OUTPUT / stale).unlink()
    files = generate(OUTPUT)
    ensure_packages(files)
    print(f"generated {len(files)} files from {len(proto_files())} protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
