"""One training run: data -> checks -> both models -> export -> offline evaluation -> model card.

``run`` is what ``recloop train`` and the KFP train component call. The export
is written to ``OUT.staging-<id>`` and moved to ``OUT`` only when every step and
check passed, so a failed run never leaves a half export where a model is expected.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

import recloop
from recloop.features import logs, recorded
from recloop.features.spec import FEATURES, LABELS
from recloop.trainer import checks, distribute, evaluate, export, fit, memory
from recloop.trainer.config import TrainConfig
from recloop.trainer.data import TrainingData, load
from recloop.trainer.evaluate import RankingScorer, RetrievalScorer
from recloop.trainer.ranking import INPUTS as RANKING_INPUTS
from recloop.trainer.scorers import (
    choose_recent_window,
    counts_scorers,
    model_scorers,
    popularity,
    popularity_scorers,
    recent_popularity,
)
from recloop.trainer.tables import write_tables
from recloop.trainer.towers import CANDIDATE, MAX_POSITION, QUERY

Scorers = tuple[RetrievalScorer, RankingScorer]
# A scorer that needs the training data or the eval day (the simulator's oracle, built by the caller).
ExtraScorers = Mapping[str, Callable[[TrainingData, dt.date], Scorers]]


class TrainError(RuntimeError):
    """A run that failed; its partial output is left in ``OUT.failed`` for inspection."""


def model_version(data: TrainingData, config: TrainConfig) -> str:
    """``v<span end>-<config hash>``: the same data and config give the same version."""
    return f"v{data.span['end'].replace('-', '')}-{config.fingerprint()}"


def eval_day(data: TrainingData) -> dt.date:
    return dt.datetime.fromisoformat(data.span["eval_start"]).date()


def run(config: TrainConfig, data_dirs: Sequence[str], out: str, validation_dir: str | None = None,
        extra_scorers: ExtraScorers | None = None, truth: RetrievalScorer | None = None, overwrite: bool = False,
        progress: Callable[[str], None] = lambda line: None,
        on_epoch: fit.OnEpoch | None = None, eval_dirs: Sequence[str] = (), feed: str | None = None) -> dict[str, Any]:
    """Trains, exports and evaluates; returns the model card.

    Args:
      config: the training configuration.
      data_dirs: ingest outputs (one per week); all, or the newest ``config.window_weeks``.
      out: the export directory (local path).
      validation_dir: a ``recloop validate`` output whose statistics and schema
        go into the export (the serving skew reference).
      extra_scorers: more scorers to evaluate next to the model and the
        baseline, e.g. ``{"oracle": ...}`` in benchmarks.
      overwrite: replace an existing export at ``out``.
      progress: receives one line per step.
      on_epoch: receives per-epoch training logs.
      eval_dirs: separate ingest outputs to evaluate on (``data.load``); by default the evaluation set
        comes from ``data_dirs`` (``config.eval_days``).
      feed: the item feed (a file, or a root with ``catalog/dt=``) the index and evaluation cover beside
        the items served in the data.

    Raises:
      FileExistsError: when ``out`` exists and ``overwrite`` is false.
      data.DataError, checks.TrainingCheckError: bad data (made under another feature declaration, too)
        or a failed check.
    """
    strategy = distribute.strategy()  # first: several workers set up their collectives before any other op
    memory.map_large_blocks()  # a window's temporaries are given back, not kept in the heap
    scratch = None
    if not distribute.is_chief():  # every worker exports (saving a mirrored model takes all); the chief's is kept
        scratch = out = tempfile.mkdtemp(prefix="recloop-worker-export-")
        shutil.rmtree(out)
    elif os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    started = time.perf_counter()
    progress(f"reading {len(data_dirs) + len(eval_dirs)} ingest output(s)")
    data = load(data_dirs, config.window_weeks, config.eval_days, config.validation_days, eval_dirs, feed, progress,
                config.validation_min_positives, config.retrieval.positives)
    day = eval_day(data)
    checks.check_inputs((*QUERY, *CANDIDATE, *RANKING_INPUTS, "position"))
    checks.check_no_label_copies(data.train, (*RANKING_INPUTS, "position"))
    for name, split in (("train", data.train), ("eval", data.eval)):
        checks.check_unique_pairs(split, name)
    checks.check_time_order(data.train, data.eval)
    progress(f"data: {data.sizes()} span {data.span}")
    if strategy.num_replicas_in_sync > 1:
        progress(f"training on {distribute.workers()} workers ({strategy.num_replicas_in_sync} replicas), this one "
                 f"{'the chief' if scratch is None else 'a worker: its export is discarded'}")

    fit.seed_everything(config.seed)
    vocabs = fit.vocabularies(data.train, config)
    memory.trim()  # the read's and the checks' temporaries
    # with a validation split the models fit the days before it and stop early on it
    rows, held_out = (data.fit, data.validation) if len(data.validation) else (data.train, None)
    retrieval = fit.fit_retrieval(rows, vocabs, config, on_epoch, held_out)
    memory.trim()
    ranking = fit.fit_ranking(rows, vocabs, config, on_epoch, held_out)
    memory.trim()

    staging = f"{out.rstrip('/')}.staging-{uuid.uuid4().hex[:8]}"
    try:
        card = _export(config, data, day, retrieval, ranking, staging, validation_dir, extra_scorers, truth,
                       progress)
        card["training_seconds"] = round(time.perf_counter() - started, 2)
        recorded.write(staging)  # the declaration travels with the model: the server checks it at load
        logs.write_json(posixpath.join(staging, "model_card.json"), card)
    except BaseException:
        failed = f"{out.rstrip('/')}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        if os.path.exists(staging):
            shutil.move(staging, failed)
        raise
    if os.path.exists(out):
        shutil.rmtree(out)
    shutil.move(staging, out)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
        progress(f"worker done in {card['training_seconds']} s (the chief writes the export)")
        return card
    progress(f"export written to {out} in {card['training_seconds']} s")
    return card


def _export(config: TrainConfig, data: TrainingData, day: dt.date, retrieval: fit.Fitted, ranking: fit.Fitted,
            staging: str, validation_dir: str | None, extra_scorers: ExtraScorers | None,
            truth: RetrievalScorer | None, progress: Callable[[str], None]) -> dict[str, Any]:
    progress("exporting SavedModels")
    export.save_tower(retrieval.model.query_tower, QUERY, posixpath.join(staging, "query_tower"))
    export.save_tower(retrieval.model.candidate_tower, CANDIDATE, posixpath.join(staging, "candidate_tower"))
    export.save_ranking(ranking.model, config.ranking.score_weights, config.ranking.serving_position,
                        posixpath.join(staging, "ranking"))
    index = export.build_index(staging, data.catalog, day, config.retrieval.candidates)
    tables = write_tables(data.train, day, posixpath.join(staging, "tables"))
    validation = _copy_validation(validation_dir, posixpath.join(staging, "validation"))

    progress("choosing the recent-popularity window on the validation split")
    validation_start = data.span.get("validation_start")
    recent = choose_recent_window(data.fit, data.validation, data.catalog,
                                  dt.datetime.fromisoformat(validation_start).date() if validation_start else None,
                                  config.retrieval.positives)
    progress(f"evaluating on the eval split from {data.span['eval_start']}")
    scorers: dict[str, Scorers] = {
        "model": model_scorers(staging, day), "popularity": popularity_scorers(popularity(data.train, day)),
        # refitted on every training day with the window chosen on validation
        "recent_popularity": counts_scorers(recent_popularity(data.train, day, recent["window_days"]))}
    for name, make in (extra_scorers or {}).items():
        scorers[name] = make(data, day)
    positives = data.eval.take(data.eval[f"label_{config.retrieval.positives}"] == 1)
    seen = evaluate.examination(data.train, MAX_POSITION)
    results, estimates = {}, {}
    for name, (retrieve, rank) in scorers.items():
        progress(f"evaluating {name}")
        if name == "model":
            checks.check_scores("ranking model", rank(data.eval.take(np.arange(min(len(data.eval), 50_000)))))
        found = estimates[name] = {}
        results[name] = {
            "retrieval": evaluate.evaluate_retrieval(retrieve, data.train, positives, data.catalog, config.recall_ks,
                                                     config.top_k, config.eval_max_queries, truth, found),
            "ranking": evaluate.evaluate_ranking(rank, data.train, data.eval, config.top_k, seen, found)}
    eval_set = {"start": data.span["eval_start"], "end": data.span["end"],
                "sources": data.eval_from, **evaluate.sizes(data.eval),
                "retrieval_positives": len(positives)}
    metrics = evaluate.clean({"eval": eval_set, "confidence": evaluate.CONFIDENCE, "scorers": results,
                              "recent_popularity": recent, "examination": seen.tolist(),
                              "ratios": headline_ratios(estimates, config)}
                             | ({"truth_agreement": evaluate.truth_agreement(results, max(config.recall_ks),
                                                                             config.top_k)} if truth else {}))
    logs.write_json(posixpath.join(staging, "metrics.json"), metrics)
    card_metrics: dict[str, Any] = {
        name: {"retrieval": {view: r["retrieval"][view]["overall"]
                             for view in ("logged", "explored", "expected") if view in r["retrieval"]},
               "ranking": r["ranking"]["overall"]}
        for name, r in metrics["scorers"].items()}
    card_metrics["recent_popularity"] |= {k: v for k, v in metrics["recent_popularity"].items() if k != "candidates"}
    return {
        "version": model_version(data, config),
        "recloop_version": recloop.__version__,
        "tensorflow_version": tf.__version__,
        "data": {"sources": data.sources, "eval_sources": data.eval_sources, "span": data.span,
                 "weeks": len(data.sources), **data.sizes(),
                 "positives": {h: int(data.train[f"label_{h}"].sum()) for h in LABELS},
                 "eval_positives": eval_set["positives"], "eval": eval_set},
        "features": {"query": list(QUERY), "candidate": list(CANDIDATE), "ranking": list(RANKING_INPUTS),
                     "training_only": [f.name for f in FEATURES if f.training_only]},
        "config": config.model_dump(mode="json"),
        "training": {"retrieval": retrieval.record(), "ranking": ranking.record(), "workers": distribute.workers()},
        "index": index, "tables": tables, "validation": validation,
        "metrics": card_metrics | {"ratios": metrics["ratios"]},
    }


def headline_ratios(estimates: Mapping[str, Mapping[str, Any]], config: TrainConfig
                    ) -> dict[str, dict[str, dict[str, float | int]]]:
    """Each scorer against the popularity baseline on the figures the quality bar is stated in.

    Args:
      estimates: ``{scorer: {figure: metrics.Estimate}}`` from the evaluation.

    Returns:
      ``{figure: {scorer: {"ratio", "low", "high", "difference", ...}}}`` (``evaluate.paired_ratios``): paired
      on the same requests, with the intervals at ``evaluate.CONFIDENCE``.
    """
    k, n = max(config.recall_ks), config.top_k
    figures = [*(f"retrieval_recall@{k}_{view}" for view in ("explored", "logged")),
               *(f"ranking_ndcg@{n}{suffix}" for suffix in ("_debiased", "")), "ranking_auc_click_explored"]
    return {figure: evaluate.paired_ratios(estimates, figure, "popularity") for figure in figures}


def _copy_validation(source: str | None, target: str) -> dict[str, Any] | None:
    """Copies the training statistics and schema of a validate run (the skew reference) into the export."""
    if source is None:
        return None
    copied = []
    for name in ("stats/train.pb", "stats/eval.pb", "schema.pbtxt"):
        path = posixpath.join(source, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.makedirs(posixpath.dirname(posixpath.join(target, name)))
            tf.io.gfile.copy(path, posixpath.join(target, name), overwrite=True)
            copied.append(name)
    if not copied:
        raise FileNotFoundError(f"{source}: no stats/train.pb or schema.pbtxt; is it a `recloop validate` output?")
    return {"source": source, "files": copied}

