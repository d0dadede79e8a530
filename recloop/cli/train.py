"""``recloop train``: fit, export and evaluate both models on weekly ingest outputs.

Registered on the app in ``cli``. ``--truth`` adds the simulator's oracle to the
evaluation (benchmarks only: the oracle reads the simulation's hidden truth and
is never a training input).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recloop import storage
from recloop.cli.console import console

EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def oracle_scorers(sim_dir: str) -> tuple[Any, Any]:
    """The simulator's hidden relevance as ``train.run``'s ``extra_scorers["oracle"]`` and ``truth``."""
    import numpy as np

    from recloop.simulator.oracle import Oracle

    oracle = Oracle.load(sim_dir)

    def retrieval(queries: Any, catalog: Any) -> Any:
        return oracle.catalog_scores(queries["member_id"], queries["hour_of_day"], queries["day_of_week"],
                                     queries["platform"], queries["ts"] // 86_400 + EPOCH_ORDINAL, catalog["item_id"])

    def ranking(rows: Any) -> dict[str, Any]:
        return {"score": oracle.impression_relevance(rows["request_id"], rows["item_id"])}

    def truth(queries: Any, catalog: Any) -> Any:  # P(click) in the top slot, where examine(0) = 1
        return 1.0 / (1.0 + np.exp(-retrieval(queries, catalog)))

    return (lambda _data, _day: (retrieval, ranking)), truth


def train(
    data: Annotated[list[str], typer.Option(help="an ingest output folder; repeat for several weeks")],
    out: Annotated[str, typer.Option(help="export folder (a local path, or a URI the export is uploaded to): "
                                          "SavedModels, index, tables, model_card.json, metrics.json")],
    config: Annotated[str | None, typer.Option(help="training config, YAML or JSON (any subset of fields)")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="most epochs of both models (overrides the config)")] = None,
    retrieval_epochs: Annotated[int | None, typer.Option(
        min=1, help="most epochs of the retrieval model (early stopping on the validation days may stop sooner)")] = None,
    ranking_epochs: Annotated[int | None, typer.Option(min=1, help="most epochs of the ranking model")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (overrides the config)")] = None,
    window_weeks: Annotated[int | None, typer.Option(min=1, help="use the newest N --data weeks")] = None,
    positives: Annotated[str | None, typer.Option(help="retrieval positives: click | start | complete | like")] = None,
    eval_days: Annotated[int | None, typer.Option(
        min=1, help="evaluate on the last N days of the data (every split); default: the newest --data's eval "
                    "split")] = None,
    validation_days: Annotated[int | None, typer.Option(
        min=0, help="the last N training days are a validation split: the models fit the days before it and stop "
                    "early on it, recent popularity's window is chosen on it (0: none; every day, all epochs)")] = None,
    eval_data: Annotated[list[str] | None, typer.Option(
        help="a separate ingest output to evaluate on, after the --data span; repeatable")] = None,
    catalog: Annotated[str | None, typer.Option(
        help="the item feed (a file, or a root with catalog/dt=...): indexed and evaluated beside the items "
             "served in the data")] = None,
    validation: Annotated[str | None, typer.Option(
        help="a `recloop validate` output: its statistics and schema go into the export")] = None,
    truth: Annotated[str | None, typer.Option(
        help="a simulation folder: also evaluate the simulator's oracle (benchmarks only)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier export in --out")] = False,
) -> None:
    """Train the two-tower retrieval and DCN ranking models, export them and evaluate offline."""
    from recloop.trainer.checks import TrainingCheckError
    from recloop.trainer.config import ConfigError, load_config
    from recloop.trainer.data import DataError
    from recloop.trainer.train import run

    try:
        cfg = load_config(config, seed=seed, window_weeks=window_weeks, retrieval__epochs=retrieval_epochs or epochs,
                          ranking__epochs=ranking_epochs or epochs, retrieval__positives=positives, eval_days=eval_days,
                          validation_days=validation_days)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    extra, true_clicks = None, None
    if truth:
        make, true_clicks = oracle_scorers(truth)
        extra = {"oracle": make}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[logs]}"), TimeElapsedColumn(), console=console) as bar:
        tasks = {"retrieval": bar.add_task("retrieval", total=cfg.retrieval.epochs, logs=""),
                 "ranking": bar.add_task("ranking", total=cfg.ranking.epochs, logs="")}

        def on_epoch(model: str, epoch: int, total: int, logs: dict[str, float]) -> None:
            shown = " ".join(f"{k} {_auc(v) if k.endswith('auc') else f'{v:.4g}'}" for k, v in logs.items()
                             if k == "loss" or k.endswith("auc"))
            bar.update(tasks[model], completed=epoch, logs=shown)

        held = eval_data or []
        try:
            if not storage.is_local(out) and not overwrite and storage.exists(out):
                raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
            with storage.local_views([*data, *held, validation]) as local, _export_folder(out) as target:
                card = run(cfg, local[: len(data)], target, validation_dir=local[-1],
                           extra_scorers=extra, truth=true_clicks, overwrite=overwrite or target != out,
                           progress=console.log, on_epoch=on_epoch, eval_dirs=local[len(data) : -1], feed=catalog)
        except (DataError, TrainingCheckError, FileExistsError, FileNotFoundError) as e:
            console.print(f"[red]training failed:[/red] {e}")
            raise typer.Exit(1) from None
    _print_card(card, out)


@contextlib.contextmanager
def _export_folder(out: str) -> Iterator[str]:
    """Where training writes the export: ``out`` itself when local; else a temporary folder uploaded to the URI
    ``out`` afterwards, by the chief only when several workers train (``trainer.distribute``)."""
    if storage.is_local(out):
        yield out
        return
    from recloop.trainer import distribute

    with tempfile.TemporaryDirectory(prefix="recloop-export-") as tmp:
        target = os.path.join(tmp, "export")
        yield target
        if distribute.is_chief():
            storage.remove(out)  # the whole export replaced, no file of an earlier one left
            storage.upload(target, out)
            console.log(f"export uploaded to {out}")


def _print_card(card: dict[str, Any], out: str) -> None:
    from recloop.trainer.evaluate import CONFIDENCE, Z

    scorers = {name: m for name, m in card["metrics"].items() if name != "ratios"}
    expected = any("expected" in m["retrieval"] for m in scorers.values())
    e = card["data"].get("eval", {})
    title = f"{card['version']}: offline evaluation on {card['data']['eval_examples']:,} eval examples"
    table = Table(title=title, caption=f"± the {CONFIDENCE:.0%} interval ({Z:.2f} standard errors, over requests)")
    figures = [*([("recall@100 expected", ("retrieval", "expected", "recall@100"))] if expected else []),
               ("recall@100 explored", ("retrieval", "explored", "recall@100")),
               ("recall@100 logged", ("retrieval", "logged", "recall@100")),
               ("NDCG@10 debiased", ("ranking", "ndcg@10_debiased")), ("NDCG@10 logged", ("ranking", "ndcg@10")),
               ("AUC click", ("ranking", "auc_click")), ("AUC click explored", ("ranking", "auc_click_explored"))]
    table.add_column("scorer")
    for column, _ in figures:
        table.add_column(column, justify="right")
    for name, m in scorers.items():
        table.add_row(name, *(_interval(m, path, Z) for _, path in figures))
    console.print(table)
    if e:
        console.print(f"eval set from {e['start']} ({', '.join(e['sources'])}): {e['impressions']:,} impressions, "
                      f"{e['requests']:,} requests, {e['members']:,} members, {e['positives']['click']:,} clicks "
                      f"({e['explored_impressions']:,} explored impressions), {e['retrieval_positives']:,} "
                      "retrieval positives.")
    recent = scorers.get("recent_popularity", {})
    if "window_days" in recent:
        days = recent["window_days"]
        window = "all days" if days is None else f"{days} day{'s' if days != 1 else ''}"
        console.print(f"recent_popularity: clicks over the last {window}, chosen on {recent['chosen_on']}"
                      + (f" from {recent['validation_start']} (recall@100 {_fmt(recent.get('validation_recall@100'))}"
                         f" on {recent['validation_positives']:,} positives)" if recent["validation_start"] else ""))
    ratios = card["metrics"].get("ratios", {})
    if ratios:
        vs = Table(title=f"against popularity, paired on the same requests: ratio [{CONFIDENCE:.0%} interval]")
        vs.add_column("scorer")
        for figure in ratios:
            vs.add_column(figure.replace("_", " "), justify="right")
        for name in next(iter(ratios.values())):
            vs.add_row(name, *(_ratio(ratios[figure].get(name, {})) for figure in ratios))
        console.print(vs)
    console.print("logged: all eval feedback, biased toward what the logging policy showed; explored: clicks in "
                  "slots shown at random (unbiased, few); expected: true click probabilities (--truth).")
    t = card["training"]
    console.print(f"retrieval {t['retrieval']['seconds']} s ({t['retrieval']['examples_per_second']:,} examples/s), "
                  f"ranking {t['ranking']['seconds']} s ({t['ranking']['examples_per_second']:,} examples/s); "
                  f"total {card['training_seconds']} s. Export, model_card.json and metrics.json in {out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(metrics: dict[str, Any], path: tuple[str, ...], z: float) -> str:
    """``value ± z * se`` of the figure at ``path`` (``-`` when not measured)."""
    *parents, key = path
    node: Any = metrics
    for p in parents:
        node = node.get(p, {})
    value, se = node.get(key), node.get(f"{key}_se")
    return _fmt(value) if value is None or se is None else f"{_fmt(value)} ± {z * se:.3f}"


def _ratio(r: dict[str, Any]) -> str:
    if r.get("ratio") is None:
        return "-"
    low, high = ("-" if v is None else f"{v:.2f}" for v in (r.get("low"), r.get("high")))
    return f"{r['ratio']:.2f} [{low}, {high}]"


def _auc(value: float) -> str:
    """Keras reports an undefined AUC (no positive or no negative seen) as 0: say so instead."""
    return "n/a" if math.isnan(value) or value == 0 else f"{value:.4g}"
