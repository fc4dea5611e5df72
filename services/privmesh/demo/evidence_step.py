"""Step 6: the audit logs as one evidence bundle, verified offline; then a receipt and a fork."""

from __future__ import annotations

import json

from cryptography import x509

from privmesh.demo.context import DemoContext, StepFailed, expect
from privmesh.demo.transparency_step import fork_step, pinned_keys, receipt_step
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle
from privmesh.runtime.audit.trust import Trust


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
                          f"{'intact' if verdict.finding is None else 'BROKEN: ' + verdict.finding.message}")
    expect(all(v.ok for v in verdicts), "the exported audit logs do not verify")
    tampered = json.loads(path.read_text())
    victim = next((s for s in tampered["services"] if s["entries"]), None)
    if victim is not None:
        victim["entries"][0]["principal"] = "spiffe://privmesh.local/ns/privmesh/sa/mallory"
        [broken] = [v for v in verify_bundle(tampered, trust) if v.service == victim["service"]]
        if broken.finding is None:
            raise StepFailed("a tampered bundle verified")
        ctx.console.print(f"   tampered copy refused: {broken.finding.message}")
    ctx.console.print(f"   bundle written to {path}")
    pinned = pinned_keys(ctx)
    await receipt_step(ctx, pinned)
    await fork_step(ctx, pinned)
