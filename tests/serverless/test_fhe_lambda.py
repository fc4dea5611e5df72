"""fhe-inference's synchronous scoring function under the Lambda runtime emulator, beside the gRPC service on the
same state (database, key directory, audit chain): a session registered over gRPC scores through the function
to the same decrypted result as through Infer, the scoring is audited to fhe-inference's chain, and malformed or
oversized requests and unknown sessions get the error model with nothing evaluated."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import yaml

from privmesh.fhe.client import infer, register_keys
from privmesh.serverless.local import Emulator
from tests.conftest import spiffe
from tests.fhe.conftest import Fhe, fhe, fhe_settings, keys_for  # noqa: F401 - `fhe` is the fixture
from tests.serverless.conftest import ROOT


def _env(service: Fhe) -> dict[str, str]:
    config = service.tmp / "fhe-service.yaml"
    config.write_text(yaml.safe_dump(fhe_settings(service.tmp)))
    return {"PRIVMESH_FHE_CONFIG": str(config), "PRIVMESH_AUTHZ_POLICY": str(service.tmp / "policy.yaml"),
            "PRIVMESH_AUDIT_DATABASE": f"sqlite:///{service.tmp / 'audit.db'}",
            "PRIVMESH_AUDIT_SIGNING_KEY": (service.tmp / "audit-signing.pem").read_text(),
            "PRIVMESH_DIRECT_PRINCIPAL": spiffe("bob")}


async def test_scoring_function_matches_the_service_on_its_sessions(fhe: Fhe, rie: Path) -> None:  # noqa: F811
    keys = await keys_for(fhe.bob, "linear")
    session = await register_keys(fhe.bob, keys)
    raw = np.random.default_rng(3).normal(0, 1, (3, 6))
    through_grpc = await infer(fhe.bob, session.name, keys, raw)
    ciphertext = keys.encrypt(keys.preprocess(raw))
    with Emulator(rie, "privmesh.serverless.handler.fhe_score", _env(fhe), fhe.tmp / "rie.log",
                  cwd=ROOT, start_timeout=60) as function:
        reply = function.invoke({"request": {"session": session.name, "inputs": [
            {"sampleCount": 3, "ciphertext": base64.b64encode(ciphertext).decode()}]}}, timeout=300)
        assert reply["statusCode"] == 200, reply
        output = base64.b64decode(reply["body"]["outputs"][0]["ciphertexts"][0])
        assert np.allclose(keys.decrypt(output, 3), through_grpc, atol=1e-3)
        infers = [a for a in fhe.audit() if a[0] == "Infer"]
        assert len(infers) == 2 and all(a[2] == "SUCCESS" for a in infers)

        cases = [({"request": {"session": "sessions/nope", "inputs": [{"sampleCount": 1, "ciphertext": "AA=="}]}},
                  404, "SESSION_NOT_FOUND"),
                 ({"request": {"session": session.name, "inputs": []}}, 400, "BATCH_TOO_LARGE"),
                 ({"request": {"session": session.name, "inputs": [{"sampleCount": 0, "ciphertext": "AA=="}]}},
                  400, "INPUT_SHAPE_MISMATCH"),
                 ({"request": {"session": session.name, "inputs": [{"sampleCount": 1, "ciphertext": "AA=="}]}},
                  400, "CIPHERTEXT_MALFORMED"),
                 ({"request": {"session": session.name, "inputs": [{"sampleCount": 1, "ciphertext": "!"}]}},
                  400, "INVALID_FIELD"),
                 ({"nope": 1}, 400, "EVENT_INVALID")]
        for event, status, reason in cases:
            failed = function.invoke(event)
            assert failed["statusCode"] == status, (event, failed)
            info = next(d for d in failed["body"]["error"]["details"] if d["@type"].endswith("ErrorInfo"))
            assert info["reason"] == reason and "Traceback" not in json.dumps(failed)
        assert [a[2] for a in fhe.audit() if a[0] == "Infer"] == ["SUCCESS", "SUCCESS", "FAILURE"]
