"""``recloop push``, ``models``, ``rollback`` and ``promote``: the model registry (and KServe) from the command line."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from recloop.cli.console import console


def kserve_client() -> Any:
    """The cluster's KServe API: kubeconfig, or the pod's service account (tests replace this function)."""
    from kserve import KServeClient

    return KServeClient()


def push(
    model: Annotated[str, typer.Option(help="the candidate: a trainer export folder")],
    registry: Annotated[str, typer.Option(help="registry URI (a folder, gs://, s3://, ...)")],
    blessing: Annotated[str | None, typer.Option(help="the gate's blessing.json (default: MODEL/blessing.json)")
                        ] = None,
    infra_blessing: Annotated[str | None, typer.Option(
        help="infra validation's infra_blessing.json (default: MODEL/infra_blessing.json)")] = None,
    force: Annotated[bool, typer.Option(help="push without passing blessings (emergencies; recorded in history)")
                     ] = False,
    note: Annotated[str, typer.Option(help="a note for the history")] = "",
    inference_service: Annotated[str | None, typer.Option(
        help="then point this KServe InferenceService at the version (created if missing)")] = None,
    namespace: Annotated[str | None, typer.Option(help="the InferenceService's namespace")] = None,
    canary_percent: Annotated[int | None, typer.Option(
        help="give the new version P% of the traffic, 0 < P < 100 (KServe Serverless mode); "
             "`recloop promote` moves it to 100%")] = None,
) -> None:
    """Copy a blessed candidate into the registry and switch production to it (compare-and-swap).

    With --inference-service, the InferenceService is then pointed at the version (its storageUri), checked
    beforehand: nothing is pushed when the cluster would refuse.
    """
    from recloop.serving.registry import Registry, RegistryError

    client = _cluster_check(registry, inference_service, namespace, canary_percent)
    try:
        pointer = Registry(registry).push(model, dt.datetime.now(dt.UTC), blessing, infra_blessing, force, note,
                                          progress=lambda step: console.log(step) if step == "switch" else None)
    except (RegistryError, OSError) as e:
        console.print(f"[red]push refused:[/red] {e}")
        raise typer.Exit(1) from None
    console.print(f"production is now [bold]{pointer.version}[/bold] (was {pointer.previous}); {pointer.reason}")
    if client is not None:
        _deploy(client, registry, Registry(registry).version_dir(pointer.version), inference_service, namespace,
                canary_percent)


def _cluster_check(registry: str, name: str | None, namespace: str | None, canary_percent: int | None) -> Any:
    """The KServe client for --inference-service (None without it), once the update is known to be possible."""
    if name is None:
        if namespace is not None or canary_percent is not None:
            raise typer.BadParameter("--namespace and --canary-percent go with --inference-service",
                                     param_hint="--inference-service")
        return None
    if namespace is None:
        raise typer.BadParameter("--inference-service needs --namespace", param_hint="--namespace")
    from recloop.serving import cluster

    for check, value, hint in ((cluster.check_storage_uri, registry, "--registry"),
                               (cluster.check_canary_percent, canary_percent, "--canary-percent")):
        try:
            if value is not None:
                check(value)
        except cluster.InvalidRollout as e:
            raise typer.BadParameter(str(e), param_hint=hint) from None
    try:
        client = kserve_client()
        cluster.preflight(client, name, namespace, canary_percent)
    except Exception as e:  # noqa: BLE001 - no kubeconfig, no cluster, an API error, a refusal: nothing moved yet
        console.print(f"[red]push refused:[/red] {_one_line(e)} (nothing was pushed)", soft_wrap=True)
        raise typer.Exit(1) from None
    return client


def _deploy(client: Any, registry: str, storage_uri: str, name: str, namespace: str,
            canary_percent: int | None) -> None:
    from recloop.serving import cluster

    try:
        rollout = cluster.deploy(client, name, namespace, storage_uri, canary_percent)
    except Exception as e:  # noqa: BLE001 - the pointer has moved: whatever failed, say where things stand
        console.print(f"[red]the registry pointer moved, but InferenceService {namespace}/{name} was NOT "
                      f"updated:[/red] {_one_line(e)}", soft_wrap=True)
        spec = cluster.serialize(cluster.update_patch(name, namespace, storage_uri, canary_percent))["spec"]
        console.print(f"servers watching the registry switch; the cluster serves the old version. Update it by hand: "
                      f"kubectl patch inferenceservice {name} -n {namespace} --type merge -p "
                      f"'{json.dumps({'spec': spec})}', or go back: recloop rollback --registry {registry}",
                      soft_wrap=True)
        raise typer.Exit(1) from None
    _print_rollout(rollout)


def _one_line(e: Exception) -> str:
    """An error on one line (the kubernetes client's messages span several)."""
    return " ".join(str(e).split())


def _print_rollout(rollout: Any) -> None:
    verb = {"create": "created", "patch": "patched", "none": "unchanged"}[rollout.action]
    mode = f" ({rollout.mode.name} mode, from {rollout.mode.source})" if rollout.mode else ""
    console.print(f"InferenceService {rollout.namespace}/{rollout.name} {verb}{mode}: {rollout.note}", soft_wrap=True)
    if rollout.body is not None:
        console.print("sent:")
        console.print_json(data=rollout.body)


def promote(
    inference_service: Annotated[str, typer.Option(help="the KServe InferenceService with a canary")],
    namespace: Annotated[str, typer.Option(help="its namespace")],
) -> None:
    """Move the canary to 100% of the traffic (removes canaryTrafficPercent, as KServe documents)."""
    from recloop.serving import cluster

    try:
        rollout = cluster.promote(kserve_client(), inference_service, namespace)
    except Exception as e:  # noqa: BLE001 - no kubeconfig, no cluster, an API error, no such InferenceService
        console.print(f"[red]promote failed:[/red] {_one_line(e)}", soft_wrap=True)
        raise typer.Exit(1) from None
    _print_rollout(rollout)


def models(registry: Annotated[str, typer.Option(help="registry URI")]) -> None:
    """List the registry's versions, the one actually serving, the replicas and the pointer's history."""
    from recloop.serving import replicas
    from recloop.serving.registry import Registry, read_card

    reg = Registry(registry)
    pointer = reg.pointer()
    now = dt.datetime.now(dt.UTC)
    reports = replicas.read(registry)
    serving, why = replicas.serving_version(pointer.version if pointer else None, replicas.fresh(reports, now))
    console.print(f"in production (actually serving): [bold]{serving or 'nothing yet'}[/bold] ({why})",
                  soft_wrap=True)
    table = Table(title=f"versions in {registry}")
    for column in ("version", "", "span", "train examples", "training s"):
        table.add_column(column)
    for version in reg.versions():
        card = read_card(reg.version_dir(version))
        span = card.get("data", {}).get("span", {})
        marks = [m for m, on in (("pointer", pointer and pointer.version == version), ("serving", version == serving))
                 if on]
        table.add_row(version, "[green]" + ", ".join(marks) + "[/green]" if marks else "",
                      f"{span.get('start', '?')} .. {span.get('end', '?')}",
                      f"{card.get('data', {}).get('train_examples', 0):,}", str(card.get("training_seconds", "")))
    console.print(table)
    if reports:
        live = Table(title=f"replicas (a report older than {replicas.FRESH} is from a replica that is gone)")
        for column in ("replica", "serves", "since", "pointer it saw", "rejected", "reported"):
            live.add_column(column)
        for r in reports:
            age = now - r.at
            live.add_row(r.replica, r.version or f"heuristic ({r.reason})", r.since.isoformat(timespec="seconds"),
                         str(r.pointer), ", ".join(r.rejected) or "-",
                         f"{age.total_seconds():.0f} s ago" + ("" if age <= replicas.FRESH else " [red](gone)[/red]"))
        console.print(live)
    history = Table(title="pointer history (newest last)")
    for column in ("switched at", "version", "previous", "reason", "note"):
        history.add_column(column)
    for p in reg.history()[-20:]:
        history.add_row(p.switched_at.isoformat(timespec="seconds"), p.version, str(p.previous), p.reason, p.note)
    console.print(history)


def rollback(
    registry: Annotated[str, typer.Option(help="registry URI")],
    to: Annotated[str | None, typer.Option(help="the version to go back to (default: the one before)")] = None,
    note: Annotated[str, typer.Option(help="a note for the history")] = "",
) -> None:
    """Point production back at the previous version (servers watching the registry switch back)."""
    from recloop.serving.registry import Registry, RegistryError

    try:
        pointer = Registry(registry).rollback(dt.datetime.now(dt.UTC), to, note)
    except RegistryError as e:
        console.print(f"[red]rollback refused:[/red] {e}")
        raise typer.Exit(1) from None
    console.print(f"production is now [bold]{pointer.version}[/bold] (rolled back from {pointer.previous})")
