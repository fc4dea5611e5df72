"""`privmesh`: run the local mesh, the demo, the development PKI and evidence bundles."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from privmesh.fl.participant.cli import participant
from privmesh.mesh.catalog import CATALOG
from privmesh.mesh.local import LocalMesh, MeshLayout, check_health
from privmesh.runtime.audit.bundle import export_bundle, verify_bundle
from privmesh.runtime.audit.trust import Trust
from privmesh.runtime.pki import LEAF_VALIDITY, DevPki

console = Console()
STATE_DIR = click.option("--state-dir", type=click.Path(path_type=Path), default=Path(".privmesh"),
                         show_default=True, help="where the local mesh keeps its PKI, configs, data and logs")


@click.group()
def main() -> None:
    """privmesh: privacy-preserving AI primitives as a mesh of gRPC services."""


main.add_command(participant)


@main.group()
def pki() -> None:
    """The development PKI (mesh CA and SPIFFE leaf certificates)."""


@pki.command("init")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".privmesh/pki"), show_default=True)
@click.option("--trust-domain", default="privmesh.local", show_default=True)
@click.option("--namespace", default="privmesh", show_default=True)
@click.option("--identity", "identities", multiple=True, help="extra identities to issue (repeatable)")
@click.option("--force", is_flag=True, help="replace an existing CA (every leaf must then be re-issued)")
def pki_init(directory: Path, trust_domain: str, namespace: str, identities: tuple[str, ...], force: bool) -> None:
    """Creates a mesh CA and a certificate per service and client identity."""
    dev = DevPki(directory, trust_domain, namespace)
    if dev.exists() and not force:
        raise click.ClickException(f"a CA already exists in {directory} (use --force to replace it)")
    dev.init()
    names = [*[s.name for s in CATALOG], "admin", "auditor", "demo-client", *identities]
    for name in names:
        dev.issue(name)
    console.print(f"CA and {len(names)} identities written to {directory}")


@pki.command("issue")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".privmesh/pki"), show_default=True)
@click.option("--trust-domain", default="privmesh.local", show_default=True)
@click.option("--namespace", default="privmesh", show_default=True)
@click.option("--hours", type=click.FloatRange(min=0.01, max=24 * 30), default=LEAF_VALIDITY.total_seconds() / 3600,
              show_default=True, help="validity of the leaf")
@click.option("--dns", multiple=True, help="DNS names to add besides localhost")
def pki_issue(name: str, directory: Path, trust_domain: str, namespace: str, hours: float,
              dns: tuple[str, ...]) -> None:
    """(Re-)issues NAME's certificate; running servers pick up a re-issued leaf on the next handshake."""
    import datetime as dt

    dev = DevPki(directory, trust_domain, namespace)
    if not dev.exists():
        raise click.ClickException(f"no CA in {directory}: run `privmesh pki init` first")
    bundle = dev.issue(name, dns_names=("localhost", *dns), validity=dt.timedelta(hours=hours))
    console.print(f"{dev.spiffe_id(name)} -> {bundle.cert_file}")


def _print_endpoints(layout: MeshLayout) -> None:
    table = Table(title="privmesh local mesh")
    for column in ("service", "endpoint (mTLS)", "metrics", "pid"):
        table.add_column(column)
    for e in layout.endpoints():
        table.add_row(e.service, e.target, e.metrics, str(e.pid))
    console.print(table)
    console.print(f"credentials: {layout.pki.directory} (ca.crt, <identity>.crt/.key); logs: {layout.log_dir}")


@main.command()
@STATE_DIR
def up(state_dir: Path) -> None:
    """Starts every implemented service on loopback with mTLS; Ctrl-C stops them all."""
    layout = MeshLayout(state_dir)
    mesh = LocalMesh(layout)

    async def run() -> None:
        await mesh.start(progress=lambda line: console.print(line))
        _print_endpoints(layout)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()

    try:
        asyncio.run(run())
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        console.print("stopping…")
        mesh.stop()


@main.command()
@STATE_DIR
def status(state_dir: Path) -> None:
    """Shows each service's health."""
    layout = MeshLayout(state_dir)
    endpoints = layout.endpoints()
    if not endpoints:
        raise click.ClickException(f"no mesh is running from {state_dir} (start one with `privmesh up`)")
    specs = {s.name: s for s in CATALOG}

    async def probe() -> list[str]:
        return [await check_health(e.target, layout.identity("admin"), specs[e.service].grpc_service, peer=e.spiffe_id)
                for e in endpoints]

    statuses = asyncio.run(probe())
    table = Table()
    for column in ("service", "endpoint", "health"):
        table.add_column(column)
    for endpoint, health in zip(endpoints, statuses, strict=True):
        table.add_row(endpoint.service, endpoint.target, health)
    console.print(table)
    if any(s != "SERVING" for s in statuses):
        sys.exit(1)


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="use the mesh running from this state directory instead of starting a temporary one")
@click.option("--fl-engine", type=click.Choice(["flower", "flare"]), default="flower", show_default=True,
              help="the engine of the federated-training step (flare: the temporary mesh runs a FLARE server)")
def demo(state_dir: Path | None, fl_engine: str) -> None:
    """Runs the end-to-end scenario of DESIGN.md against a local mesh; exits 1 if a step fails."""
    from privmesh.demo.context import DemoContext
    from privmesh.demo.scenario import run_scenario
    from privmesh.mesh.catalog import LOCAL_FLARE_ENV

    if fl_engine == "flare":
        os.environ[LOCAL_FLARE_ENV] = "1"

    with tempfile.TemporaryDirectory(prefix="privmesh-demo-") as tmp:
        layout = MeshLayout(state_dir or Path(tmp) / "mesh")
        mesh = None if state_dir else LocalMesh(layout)

        async def run() -> bool:
            if mesh is not None:
                console.print("starting a local mesh…")
                await mesh.start(progress=lambda line: console.print(f"   {line}"))
            endpoints = layout.endpoints()
            if not endpoints:
                raise click.ClickException(f"no mesh is running from {state_dir}")
            return await run_scenario(DemoContext(layout, console, {e.service: e.target for e in endpoints},
                                                  Path(tmp), {e.service: e.spiffe_id for e in endpoints},
                                                  fl_engine=fl_engine))

        try:
            ok = asyncio.run(run())
        finally:
            if mesh is not None:
                mesh.stop()
    console.print("[green]demo passed[/green]" if ok else "[red]demo failed[/red]")
    sys.exit(0 if ok else 1)


@main.group()
def evidence() -> None:
    """Evidence bundles: every service's audit log and signed head, verifiable offline."""


def _pins(trust: Path | None, ca: Path | None, trust_domain: str) -> Trust:
    """What --trust and --ca pin; a usage error (exit 2) when neither is given."""
    from cryptography import x509

    if trust is None and ca is None:
        raise click.UsageError("no pinned audit keys: pass --trust KEYS.json or --ca MESH-CA.pem (the keys evidence "
                               "carries prove nothing; without a pin forged evidence would verify)")
    try:
        return Trust(json.loads(trust.read_text()) if trust else {},
                     x509.load_pem_x509_certificates(ca.read_bytes()) if ca else (), trust_domain)
    except ValueError as exc:
        raise click.ClickException(f"the pins are not readable: {exc}") from exc


@evidence.command("export")
@STATE_DIR
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def evidence_export(state_dir: Path, output: Path) -> None:
    """Collects the audit logs of all running services into one bundle (as the auditor identity)."""
    layout = MeshLayout(state_dir)
    targets = {e.service: (e.target, e.spiffe_id) for e in layout.endpoints()}
    if not targets:
        raise click.ClickException(f"no mesh is running from {state_dir}")
    bundle = asyncio.run(export_bundle(targets, layout.identity("auditor")))
    output.write_text(json.dumps(bundle, indent=1))
    console.print(f"{sum(len(s['entries']) for s in bundle['services'])} entries from {len(targets)} services "
                  f"written to {output}")


@evidence.command("verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON {service: audit key id} of the audit keys to accept")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM of the mesh CA(s): accept an audit key endorsed by its service's mesh certificate")
@click.option("--trust-domain", default="privmesh.local", show_default=True,
              help="the trust domain whose service identities may endorse audit keys (with --ca)")
@click.option("--expect", "expected", multiple=True,
              help="a service that must be in the bundle (repeatable; default: every privmesh service)")
@click.option("--since", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="an earlier bundle: each of its services must be present with a head no older and the same "
                   "entries up to it")
@click.option("--min-witnesses", type=click.IntRange(min=0), default=1, show_default=True,
              help="pinned services that must have cosigned each log's latest tree checkpoint")
def evidence_verify(bundle: Path, trust: Path | None, ca: Path | None, trust_domain: str, expected: tuple[str, ...],
                    since: Path | None, min_witnesses: int) -> None:
    """Verifies a bundle offline against pinned keys; names the first bad entry of each broken log. Exits 1 if any
    is broken or missing, 2 when nothing is pinned (--trust or --ca is required)."""
    anchors = _pins(trust, ca, trust_domain)
    try:
        earlier = json.loads(since.read_text()) if since else None
        verdicts = verify_bundle(json.loads(bundle.read_text()), anchors, expected or [s.name for s in CATALOG],
                                 earlier, min_witnesses)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{bundle} is not a readable evidence bundle: {exc}") from exc
    for v in verdicts:
        if v.finding is None:
            console.print(f"[green]ok[/green]      {v.service}: {v.entries} entries, audit key {v.key_id}")
        else:
            where = f"first bad entry: {v.finding.sequence}; " if v.finding.sequence else ""
            console.print(f"[red]BROKEN[/red]  {v.service}: {where}{v.finding.message}")
    sys.exit(0 if all(v.ok for v in verdicts) else 1)


@evidence.command("receipt")
@STATE_DIR
@click.argument("service")
@click.option("--sequence", type=click.IntRange(min=0), default=0, show_default=True,
              help="the entry's sequence (0: the identity's most recent entry)")
@click.option("--identity", "who", default="demo-client", show_default=True, help="the caller whose entry it is")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def evidence_receipt(state_dir: Path, service: str, sequence: int, who: str, output: Path) -> None:
    """Fetches a receipt for an audit entry of SERVICE from the running mesh."""
    from privmesh.runtime.audit.receipt import fetch_receipt, to_json

    targets = {e.service: (e.target, e.spiffe_id) for e in MeshLayout(state_dir).endpoints()}
    if service not in targets:
        raise click.ClickException(f"{service} is not running from {state_dir}")
    target, peer = targets[service]
    receipt = asyncio.run(fetch_receipt(target, MeshLayout(state_dir).identity(who), peer, sequence))
    output.write_text(json.dumps(to_json(receipt), indent=1))
    console.print(f"receipt for {service} entry {receipt.entry.sequence} written to {output}")


@evidence.command("verify-receipt")
@click.argument("receipt", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON {service: key id, or a list of key ids during a rotation} of the log's and the "
                   "witnesses' keys to accept")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM of the mesh CA(s): accept a key endorsed by its service's mesh certificate")
@click.option("--trust-domain", default="privmesh.local", show_default=True)
@click.option("--min-witnesses", type=click.IntRange(min=0), default=1, show_default=True,
              help="the quorum: accepted services other than the log that must have cosigned the checkpoint")
def evidence_verify_receipt(receipt: Path, trust: Path | None, ca: Path | None, trust_domain: str,
                            min_witnesses: int) -> None:
    """Verifies a receipt offline: entry hash, signed checkpoint, inclusion proof, witnesses' cosignatures.
    Exits 1 if bad, 2 when nothing is pinned (--trust or --ca is required)."""
    from privmesh.runtime.audit.receipt import verify_receipt

    anchors = _pins(trust, ca, trust_domain)
    try:
        verdict = verify_receipt(json.loads(receipt.read_text()), anchors, min_witnesses)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{receipt} is not a readable receipt: {exc}") from exc
    if verdict.ok:
        console.print(f"[green]ok[/green]      {verdict.service} entry {verdict.sequence} is in the log's tree of "
                      f"{verdict.size} entries; cosigned by {', '.join(verdict.witnesses) or 'no witness'}")
    else:
        console.print(f"[red]BAD[/red]     {verdict.service} entry {verdict.sequence}: {verdict.problem}")
    sys.exit(0 if verdict.ok else 1)


@evidence.command("archive")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="YAML {bucket, prefix, retention_days, endpoint_url, region}")
def evidence_archive(bundle: Path, config_file: Path) -> None:
    """Writes a bundle's log segments and checkpoints to S3 under Object Lock (COMPLIANCE mode)."""
    from privmesh.runtime.audit.worm import NoObjectLock, WormConfig, archive, s3_client

    try:
        config = WormConfig.from_file(config_file)
        written = archive(json.loads(bundle.read_text()), config, s3_client(config))
    except (ValueError, NoObjectLock) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"{len(written)} objects written to s3://{config.bucket}/{config.prefix} "
                  f"(COMPLIANCE, {config.retention_days} days)")


@main.command("console")
@STATE_DIR
@click.option("--port", type=click.IntRange(0, 65535), default=8088, show_default=True)
@click.option("--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON {service: audit key id} to verify against (default: keys endorsed by the mesh CA)")
def console_command(state_dir: Path, port: int, trust: Path | None) -> None:
    """Serves the read-only auditor console on 127.0.0.1 (reads the services' APIs as the auditor identity)."""
    from aiohttp import web

    from privmesh.console.app import AuditorConsole

    layout = MeshLayout(state_dir)
    from cryptography import x509

    endpoints = {e.service: (e.target, e.spiffe_id) for e in layout.endpoints()}
    if not endpoints:
        raise click.ClickException(f"no mesh is running from {state_dir}")
    pins = Trust(json.loads(trust.read_text())) if trust else \
        Trust(roots=x509.load_pem_x509_certificates(layout.pki.ca_file.read_bytes()),
              trust_domain=layout.pki.trust_domain)
    app = AuditorConsole(endpoints, layout.identity("auditor"), pins)
    console.print(f"auditor console: http://127.0.0.1:{port}/login?token={app.token}")
    web.run_app(app.app(), host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
