"""Periodic cosigning on real servers over mTLS: with a short `audit.cosign_interval_seconds`, every log's new
entries are cosigned by its peers without anyone reading a head, and a thief running the log with its stolen
key has its forked checkpoints refused by the witnesses, which log the split view on both sides."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.client import secure_channel
from privmesh.runtime.pki import DevPki
from tests.conftest import identity
from tests.runtime.test_witness import _peer, _target, _work, start_mesh

INTERVAL = 0.3


async def _witnessed(witness: Any, pki: DevPki, origin: str) -> tuple[int, int]:
    """(size of the latest checkpoint `witness` cosigned for `origin`, how many it refused)."""
    async with secure_channel(_target(witness), identity(pki, "auditor"), timeout_seconds=5,
                              peer=_peer(witness)) as ch:
        held = await common_pb2_grpc.AuditLogStub(ch).ListWitnessedCheckpoints(
            common_pb2.ListWitnessedCheckpointsRequest())
    for log in held.logs:
        if log.origin == notes.log_origin("privmesh.local", origin):
            size = notes.parse_checkpoint(notes.parse_note(log.latest_checkpoint).text).size
            return size, len(log.refused_checkpoints)
    return 0, 0


async def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(INTERVAL)


async def test_new_entries_are_cosigned_on_the_interval_and_a_fork_is_reported(
        tmp_path: Path, pki: DevPki, start_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    mesh = await start_mesh(tmp_path, pki, start_server, interval=INTERVAL)
    a, b, c = mesh["wa"], mesh["wb"], mesh["wc"]
    await _work(a, pki, 5)

    async def cosigned() -> bool:
        return all([(await _witnessed(w, pki, "wa"))[0] >= 5 for w in (b, c)])

    await _until(cosigned)
    honest = (await _witnessed(b, pki, "wa"))[0]
    # The thief: another wa with the stolen audit key and mTLS identity, its own history, the same witnesses.
    caplog.set_level(logging.ERROR, logger="privmesh.audit.witness")
    thief_dir = tmp_path / "thief"
    thief_dir.mkdir()
    thief = await start_mesh(thief_dir, pki, start_server, names=("wa",), interval=INTERVAL,
                             witnesses={"wb": b.port, "wc": c.port},
                             audit={"signing_key_file": str(a.config.audit.signing_key_file)})
    await _work(thief["wa"], pki, 9)

    async def refused() -> bool:
        return all([(await _witnessed(w, pki, "wa"))[1] >= 1 for w in (b, c)])

    await _until(refused)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("split view of privmesh.local/audit/wa") for m in messages), messages
    assert any(m.startswith("split view: witness wb refused") for m in messages), messages
    assert (await _witnessed(b, pki, "wa"))[0] == honest  # the witnesses still hold the honest history
