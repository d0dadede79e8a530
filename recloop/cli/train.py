"""``recloop train``: fit, export and evaluate both models on weekly ingest outputs.

Registered on the app in ``cli``. ``--truth`` adds the simulator's oracle to the
evaluation (benchmarks only: the oracle reads the simulation's hidden truth and
is never a training input).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recloop import storage
from recloop.cli.console import console, local_out

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
    out: Annotated[str, typer.Option(help="export folder: SavedModels, index, tables, model_card.json, metrics.json")],
    config: Annotated[str | None, typer.Option(help="training config, YAML or JSON (any subset of fields)")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="epochs of both models (overrides the config)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (overrides the config)")] = None,
    window_weeks: Annotated[int | None, typer.Option(min=1, help="use the newest N --data weeks")] = None,
    positives: Annotated[str | None, typer.Option(help="retrieval positives: click | start | complete")] = None,
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
        cfg = load_config(config, seed=seed, window_weeks=window_weeks, retrieval__epochs=epochs,
                          ranking__epochs=epochs, retrieval__positives=positives)
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
            shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k == "loss" or k.endswith("auc"))
            bar.update(tasks[model], completed=epoch, logs=shown)

        try:
            with storage.local_views([*data, validation]) as local:  # TensorFlow reads local paths
                card = run(cfg, local[:-1], local_out(out, "--out"), validation_dir=local[-1], extra_scorers=extra,
                           truth=true_clicks, overwrite=overwrite, progress=console.log, on_epoch=on_epoch)
        except (DataError, TrainingCheckError, FileExistsError, FileNotFoundError) as e:
            console.print(f"[red]training failed:[/red] {e}")
            raise typer.Exit(1) from None
    _print_card(card, out)


def _print_card(card: dict[str, Any], out: str) -> None:
    scorers = {name: m for name, m in card["metrics"].items() if name != "ratios"}
    expected = any("expected" in m["retrieval"] for m in scorers.values())
    table = Table(title=f"{card['version']}: offline evaluation on {card['data']['eval_examples']:,} eval examples")
    columns = ["scorer", *(["recall@100 expected"] if expected else []), "recall@100 explored (± se)",
               "recall@100 logged", "NDCG@10 debiased", "NDCG@10 logged", "AUC click", "AUC click explored"]
    for column in columns:
        table.add_column(column, justify="right" if column != "scorer" else "left")
    for name, m in scorers.items():
        r, k = m["retrieval"], m["ranking"]
        explored = f"{_fmt(r['explored']['recall@100'])} ± {_fmt(r['explored']['recall@100_se'])}"
        table.add_row(name, *([_fmt(r["expected"]["recall@100"])] if expected else []), explored,
                      *(_fmt(v) for v in (r["logged"]["recall@100"], k["ndcg@10_debiased"], k["ndcg@10"],
                                          k["auc_click"], k["auc_click_explored"])))
    console.print(table)
    console.print("logged: all eval feedback, biased toward what the logging policy showed; explored: clicks in "
                  "slots shown at random (unbiased, few); expected: true click probabilities (--truth).")
    t = card["training"]
    console.print(f"retrieval {t['retrieval']['seconds']} s ({t['retrieval']['examples_per_second']:,} examples/s), "
                  f"ranking {t['ranking']['seconds']} s ({t['ranking']['examples_per_second']:,} examples/s); "
                  f"total {card['training_seconds']} s. Export, model_card.json and metrics.json in {out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
