"""The scenario's steps. A step runs when every service it needs is in the mesh; the others are reported
as not available yet. Any failing step makes the demo fail."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from privmesh.mesh.local import MeshLayout
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle


@dataclass
class DemoContext:
    layout: MeshLayout
    console: Console
    targets: dict[str, str]
    work_dir: Path
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
    bundle = await export_bundle(ctx.targets, ctx.layout.identity("auditor"))
    path = ctx.work_dir / "evidence.json"
    path.write_text(json.dumps(bundle, indent=1))
    verdicts = verify_bundle(bundle)
    for verdict in verdicts:
        ctx.console.print(f"   {verdict.service}: {verdict.entries} entries, key {verdict.key_id[:16]}…, "
                          f"{'intact' if verdict.ok else 'BROKEN: ' + verdict.finding.message}")  # type: ignore[union-attr]
    expect(all(v.ok for v in verdicts), "the exported audit logs do not verify")
    tampered = json.loads(path.read_text())
    victim = next((s for s in tampered["services"] if s["entries"]), None)
    if victim is not None:
        victim["entries"][0]["principal"] = "spiffe://privmesh.local/ns/privmesh/sa/mallory"
        [broken] = [v for v in verify_bundle(tampered) if v.service == victim["service"]]
        expect(not broken.ok, "a tampered bundle verified")
        ctx.console.print(f"   tampered copy refused: {broken.finding.message}")  # type: ignore[union-attr]
    ctx.console.print(f"   bundle written to {path}")


def _steps() -> list[Step]:
    from privmesh.demo.enclave_step import enclave_attestation_step
    from privmesh.demo.fl_step import federated_training_step

    return [
        Step(3, "three hospitals train a risk model with fl-coordinator (Flower, SecAgg+, DP); the model is stored "
                "encrypted under a key-broker key", ("fl-coordinator", "key-broker"), federated_training_step),
        Step(5, "an enclave proves itself and receives a key-broker data key wrapped to its own key; impostors and "
                "plain callers are refused", ("attestation-verifier", "key-broker"), enclave_attestation_step),
        Step(6, "audit logs exported as one evidence bundle and verified offline", (), evidence_step),
    ]

PENDING: dict[int, tuple[str, str]] = {
    1: ("patient records tokenized by token-vault with key-broker data keys", "token-vault, key-broker"),
    2: ("analysts query dp-gateway; the ledger refuses an overspend", "dp-gateway"),
    4: ("the model is served on encrypted features by fhe-inference", "fhe-inference"),
}


async def run_scenario(ctx: DemoContext) -> bool:
    """Runs every available step in order; returns whether all of them passed."""
    ok = True
    available = set(ctx.targets)
    steps = {s.number: s for s in _steps() if set(s.needs) <= available}
    for number in range(1, 7):
        step = steps.get(number)
        if step is None:
            title, needs = PENDING.get(number, ("", ""))
            ctx.console.print(f"[dim]{number}. {title}: not available yet (needs {needs})[/dim]")
            continue
        ctx.console.print(f"[bold]{number}. {step.title}[/bold]")
        try:
            await step.run(ctx)
        except Exception as exc:
            ok = False
            ctx.console.print(f"   [red]FAILED[/red]: {exc}")
        else:
            ctx.console.print("   [green]passed[/green]")
    return ok
