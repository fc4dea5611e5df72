"""The scenario: the only place that knows its steps and their order (docs/architecture.md). Any failing step
makes the demo fail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from privmesh.demo.context import DemoContext, expect
from privmesh.demo.dpgateway_step import dpgateway_step
from privmesh.demo.enclave_step import enclave_attestation_step
from privmesh.demo.evidence_step import evidence_step
from privmesh.demo.fhe_step import encrypted_scoring_step
from privmesh.demo.fl_step import federated_training_step
from privmesh.demo.tokenvault_step import tokenvault_step


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    needs: tuple[str, ...]
    run: Callable[[DemoContext], Awaitable[None]]


def _steps() -> list[Step]:
    return [
        Step(1, "patient records tokenized by token-vault with key-broker data keys", ("token-vault", "key-broker"),
             tokenvault_step),
        Step(2, "analysts query dp-gateway; the ledger refuses an overspend", ("dp-gateway",), dpgateway_step),
        Step(3, "three hospitals train a risk model with fl-coordinator (Flower with SecAgg+, or FLARE; DP); the "
                "model is stored encrypted under a key-broker key", ("fl-coordinator", "key-broker"),
             federated_training_step),
        Step(4, "the model is served by fhe-inference: a client encrypts a patient's features, gets an encrypted "
             "score, decrypts it locally", ("fhe-inference",),
             encrypted_scoring_step),
        Step(5, "an enclave proves itself and receives a key-broker data key wrapped to its own key; impostors and "
                "plain callers are refused", ("attestation-verifier", "key-broker"), enclave_attestation_step),
        Step(6, "audit logs exported as one evidence bundle and verified offline; a receipt checked offline; "
                "a fork made with a stolen key detected", (), evidence_step),
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
