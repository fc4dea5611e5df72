"""The contracts: buf lint (STANDARD), no breaking change against the previous commit, and generated code
that matches the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def _buf(*args: str) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail("buf is not installed: run scripts/dev/setup.sh (npm ci)")
    return subprocess.run([str(BUF), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_buf_lint_standard() -> None:
    result = _buf("lint", "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_previous_commit() -> None:
    previous = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD~1:protos"], cwd=ROOT,
                              capture_output=True, text=True)
    if previous.returncode != 0:
        pytest.skip("the previous commit has no protos/ to compare with (first commit or shallow clone)")
    result = _buf("breaking", "protos", "--against", ".git#ref=HEAD~1,subdir=protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_contract_is_importable() -> None:
    from privmesh.attestation.v1 import attestation_pb2_grpc
    from privmesh.common.v1 import common_pb2_grpc

    assert attestation_pb2_grpc.AttestationVerifierStub and common_pb2_grpc.AuditLogStub
