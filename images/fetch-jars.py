"""Downloads jars from Maven Central into a directory, each checked against a pinned SHA-256, for
images/dp-gateway-spark.Dockerfile (its Python base has no curl); a mismatch leaves nothing behind.

    python fetch-jars.py DIRECTORY PATH=SHA256 [PATH=SHA256 ...]
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from pathlib import Path

CENTRAL = "https://repo1.maven.org/maven2/"


def fetch(directory: Path, path: str, sha256: str) -> None:
    target = directory / path.rsplit("/", 1)[1]
    partial = target.with_suffix(".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(CENTRAL + path, timeout=120) as response, partial.open("wb") as out:  # noqa: S310 - https constant
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise SystemExit(f"{path}: SHA-256 {digest.hexdigest()} is not the pinned {sha256}")
    partial.rename(target)


def main(argv: list[str]) -> int:
    directory = Path(argv[0])
    for item in argv[1:]:
        path, _, sha256 = item.partition("=")
        fetch(directory, path, sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
