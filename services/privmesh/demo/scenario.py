"""The scenario's steps, in the order of docs/architecture.md. Any failing step makes the demo fail."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from rich.console import Console

from privmesh.mesh.local import MeshLayout
from privmesh.runtime.audit.bundle import Trust, export_bundle, verify_bundle


@dataclass
class DemoContext:
    layout: MeshLayout
    console: Console
    targets: dict[str, str]
    work_dir: Path
    peers: dict[str, str]  # service -> the SPIFFE ID its clients pin (mesh.json)
    facts: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    needs: tuple[str, ...]
    run: Callable[[DemoContext], Awaitable[None]]


class StepFailed(Exception):
    """A step's check did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


async def evidence_step(ctx: DemoContext) -> None:
    """6. Export every service's audit log as one bundle, verify it offline, and show that tampering is found."""
    bundle = await export_bundle({s: (t, ctx.peers[s]) for s, t in ctx.targets.items()},
                                 ctx.layout.identity("auditor"))
    path = ctx.work_dir / "evidence.json"
    path.write_text(json.dumps(bundle, indent=1))
    # Offline, against the mesh CA only: each service's certificate must endorse its audit key.
    trust = Trust(roots=x509.load_pem_x509_certificates(ctx.layout.pki.ca_file.read_bytes()),
                  trust_domain=ctx.layout.pki.trust_domain)
    verdicts = verify_bundle(bundle, trust, ctx.targets)
    for verdict in verdicts:
        ctx.console.print(f"   {verdict.service}: {verdict.entries} entries, key {verdict.key_id[:16]}…, "
                          f"{'intact' if verdict.ok else 'BROKEN: ' + verdict.finding.message}")  # type: ignore[union-attr]
    expect(all(v.ok for v in verdicts), "the exported audit logs do not verify")
    tampered = json.loads(path.read_text())
    victim = next((s for s in tampered["services"] if s["entries"]), None)
    if victim is not None:
        victim["entries"][0]["principal"] = "spiffe://privmesh.local/ns/privmesh/sa/mallory"
        [broken] = [v for v in verify_bundle(tampered, trust) if v.service == victim["service"]]
        expect(not broken.ok, "a tampered bundle verified")
        ctx.console.print(f"   tampered copy refused: {broken.finding.message}")  # type: ignore[union-attr]
    ctx.console.print(f"   bundle written to {path}")


def _steps() -> list[Step]:
    from privmesh.demo.dpgateway_step import dpgateway_step
    from privmesh.demo.enclave_step import enclave_attestation_step
    from privmesh.demo.fhe_step import encrypted_scoring_step
    from privmesh.demo.fl_step import federated_training_step
    from privmesh.demo.tokenvault_step import tokenvault_step

    return [
        Step(1, "patient records tokenized by token-vault with key-broker data keys", ("token-vault", "key-broker"),
             tokenvault_step),
        Step(2, "analysts query dp-gateway; the ledger refuses an overspend", ("dp-gateway",), dpgateway_step),
        Step(3, "three hospitals train a risk model with fl-coordinator (Flower, SecAgg+, DP); the model is stored "
                "encrypted under a key-broker key", ("fl-coordinator", "key-broker"), federated_training_step),
        Step(4, "the model is served by fhe-inference: a client encrypts a patient's features, gets an encrypted "
             "score, decrypts it locally", ("fhe-inference",),
             encrypted_scoring_step),
        Step(5, "an enclave proves itself and receives a key-broker data key wrapped to its own key; impostors and "
                "plain callers are refused", ("attestation-verifier", "key-broker"), enclave_attestation_step),
        Step(6, "audit logs exported as one evidence bundle and verified offline", (), evidence_step),
    ]


async def run_scenario(ctx: DemoContext) -> bool:
    """Runs every step in order; returns whether all of them passed (a step whose services are absent fails)."""
    ok = True
    for step in _steps():
        ctx.console.print(f"[bold]{step.number}. {step.title}[/bold]")
        missing = sorted(set(step.needs) - set(ctx.targets))
        try:
            expect(not missing, f"this mesh does not run {', '.join(missing)}")
            await step.run(ctx)
        except Exception as exc:
            ok = False
            ctx.console.print(f"   [red]FAILED[/red]: {exc}")
        else:
            ctx.console.print("   [green]passed[/green]")
    return ok
