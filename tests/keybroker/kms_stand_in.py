"""Test helper: moto's KMS on loopback (a real HTTP endpoint), wrapped in a WSGI layer that records every
request the server receives and adds the two behaviours of real KMS that moto lacks.

- Recipient (Decrypt and GenerateDataKey with an attestation document): moto ignores it. The layer removes
  it before moto answers, then does what KMS does with the answer: encrypts the plaintext to the public key
  in the attestation document as CMS EnvelopedData (tests/enclave/kms_cms.py, KMS's layout) and returns it
  as CiphertextForRecipient, with no Plaintext. Unlike KMS it does not verify the document's signature
  chain: in these tests the broker's attestation-verifier has already done so.
- A Decrypt whose KeyId is not the blob's key: moto answers AccessDeniedException, KMS IncorrectKeyException;
  the layer answers as KMS does.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from privmesh.attestation.document import parse_document
from privmesh.runtime.ports import free_loopback_port
from tests.enclave.kms_cms import ciphertext_for_recipient

StartResponse = Callable[..., Any]


@dataclass
class KmsStandIn:
    """The WSGI application; `calls` holds (operation, request body) of every KMS request, in order."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    app: Any = field(default_factory=lambda: DomainDispatcherApplication(create_backend_app))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def operations(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for operation, body in self.calls if operation == name]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        request = json.loads(body) if body and operation else {}
        with self.lock:
            self.calls.append((operation, dict(request)))
        recipient = request.pop("Recipient", None) if operation in ("Decrypt", "GenerateDataKey") else None
        if recipient is not None:
            body = json.dumps(request).encode()
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        status, headers, answer = self._forward(environ)
        if operation == "Decrypt" and status.startswith("400") and b"AccessDeniedException" in answer \
                and "KeyId" in request:
            answer = json.dumps({"__type": "IncorrectKeyException",
                                 "message": "The key ID in the request does not identify the key that encrypted "
                                            "the ciphertext."}).encode()
        elif recipient is not None and status.startswith("200"):
            reply = json.loads(answer)
            public_key = parse_document(base64.b64decode(recipient["AttestationDocument"])).public_key
            assert public_key is not None, "KMS refuses a document without a public key"
            reply["CiphertextForRecipient"] = base64.b64encode(ciphertext_for_recipient(
                public_key, base64.b64decode(reply.pop("Plaintext")))).decode()
            answer = json.dumps(reply).encode()
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(answer)))])
        return [answer]

    def _forward(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        captured: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured.update(status=status, headers=headers)

        chunks = self.app(environ, start)
        try:
            answer = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        return captured["status"], captured["headers"], answer


def serve() -> Iterator[tuple[str, KmsStandIn]]:
    """Runs the stand-in on a free loopback port: yields (endpoint URL, stand-in), stops it afterwards."""
    port = free_loopback_port()
    stand_in = KmsStandIn()
    server = make_server("127.0.0.1", port, stand_in, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", stand_in
    finally:
        server.shutdown()
        thread.join()
