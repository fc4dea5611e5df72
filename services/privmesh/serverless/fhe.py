"""fhe-inference's synchronous scoring as a Lambda function: a small batch of encrypted inputs for a session the
caller registered with the service, scored through the service's own domain path (FheService: the session and
model checks, check_input, the sandboxed evaluator, the audited release) and answered in the same request.

The function shares the service's state: its `service:` settings (FheSettings) name the mesh's database and the
key directory (an EFS access point mounted on the function), so sessions registered over gRPC score here.
Asynchronous jobs are privmesh.serverless.fhejobs's.

Request (protobuf-JSON style): {"session": "sessions/{id}", "inputs": [{"sampleCount": n, "ciphertext": base64}]}
Reply: {"outputs": [{"sampleCount": n, "ciphertexts": [base64, ...]}]}
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import yaml

from privmesh.fhe.inference_service import FheService, check_input
from privmesh.fhe.registry import ModelRegistry
from privmesh.fhe.server import worker_limits
from privmesh.fhe.settings import FheSettings
from privmesh.fhe.store import KeyFiles, ModelStore, SessionStore
from privmesh.fhe.v1 import fhe_pb2
from privmesh.fhe.worker import Worker
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import current_principal
from privmesh.runtime.db import Database
from privmesh.runtime.errors import InvalidArgument
from privmesh.serverless.settings import FheEntrySettings
from privmesh.serverless.vault import admitted, audit_log

METHOD = f"{fhe_pb2.DESCRIPTOR.services_by_name['FHEInference'].full_name}/Infer"  # its policy and declaration
MAX_INPUTS = 16  # a small batch: larger ones are jobs


def _bad(field: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
    return InvalidArgument.single(field, description, reason)


def parse_inputs(body: str) -> tuple[str, list[tuple[int, bytes]]]:
    """(session id, [(sample count, ciphertext)]) of a request, checked for shape before anything is decoded."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        raise _bad("body", "not JSON", "BODY_INVALID") from None
    if not isinstance(request, dict) or set(request) - {"session", "inputs"}:
        raise _bad("body", "must be {\"session\": ..., \"inputs\": [...]}", "BODY_INVALID")
    session, inputs = request.get("session"), request.get("inputs")
    if not isinstance(session, str) or not session.startswith("sessions/") or not session[9:].isalnum():
        raise _bad("session", "must be sessions/{session_id}")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        raise _bad("inputs", f"1..{MAX_INPUTS} inputs (larger batches are jobs)", "BATCH_TOO_LARGE")
    parsed = []
    for index, item in enumerate(inputs):
        if not isinstance(item, dict) or set(item) - {"sampleCount", "ciphertext"} \
                or not isinstance(item.get("sampleCount"), int) or not isinstance(item.get("ciphertext"), str):
            raise _bad(f"inputs[{index}]", "must be {\"sampleCount\": n, \"ciphertext\": base64}")
        try:
            parsed.append((item["sampleCount"], base64.b64decode(item["ciphertext"], validate=True)))
        except binascii.Error:
            raise _bad(f"inputs[{index}].ciphertext", "not base64") from None
    return session[9:], parsed


class ServerlessFhe:
    """Built once per cold start (model registry, workers started on first use)."""

    def __init__(self, settings: FheEntrySettings) -> None:
        self.settings = settings
        raw = yaml.safe_load(Path(settings.fhe_config).read_text()) or {}
        self.fhe_settings = fhe = FheSettings.model_validate(raw)
        self.db = db = Database(fhe.database)
        self.registry = ModelRegistry(ModelStore(db), fhe.allow_test_models)
        self.registry.load_configured(fhe.model_files)
        limits = worker_limits(fhe)
        self.checker = Worker("checker", max_sessions=1, limits=limits)
        self.evaluator = Worker("eval-0", fhe.worker_sessions, limits, fhe.evaluator)
        self.audit = audit_log(settings, "fhe-inference")
        self.authorizer = Authorizer.from_file(Path(settings.authz_policy))
        self.service = FheService(self.registry, SessionStore(db), KeyFiles(fhe.key_dir), self.checker,
                                  [self.evaluator], self.audit, fhe.max_sessions_per_principal)
        self._started = False

    async def score(self, principal: str | None, body: str) -> dict[str, Any]:
        async def serve(method: str) -> dict[str, Any]:
            session_id, inputs = parse_inputs(body)
            if not self._started:  # the sandbox processes, once per execution environment
                await self.checker.start()
                await self.evaluator.start()
                self._started = True
            session, spec = await self.service.open_inference(session_id, current_principal.get())
            self.authorizer.require(f"models/{session.model_id}")
            for index, (count, ciphertext) in enumerate(inputs):
                check_input(spec, count, [len(ciphertext)], f"inputs[{index}]")
            outputs = []
            for count, ciphertext in inputs:
                current, evaluation = await self.service.start_evaluation(session, spec, [ciphertext])
                results, _, _ = await self.service.release(current, spec, count, evaluation)
                outputs.append({"sampleCount": count,
                                "ciphertexts": [base64.b64encode(r).decode() for r in results]})
            return {"outputs": outputs}

        return await admitted(self.audit, self.authorizer, principal, METHOD, serve)
