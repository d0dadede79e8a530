"""The evaluation gate: is the candidate good enough, and no worse than the model in production?

``run`` evaluates the candidate, the production model (when there is one), the
popularity baseline and recent popularity (the trainer's window) on the same eval split with the same code
(``evaluate.py``: what the trainer reports), then ``judge`` applies the checks
of ``gate_config.py`` and ``run`` writes ``blessing.json`` and the Markdown
summary of ``gate_summary.py``. The blessing is what push reads before it moves
production.

A metric that was not measured fails its check: a gate never passes by not
looking. Each figure's standard error widens the checks (``gate_config.py``): a
floor must be cleared by the figure's lower bound, and a drop from production
fails only when the data show it. Not blessed is a normal outcome, written like a
blessing; only unusable inputs raise.
"""

from __future__ import annotations

import datetime as dt
import math
import posixpath
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from recloop.features import logs, recorded
from recloop.trainer import evaluate, fit, metrics, offpolicy
from recloop.trainer.config import TrainConfig
from recloop.trainer.data import DataError, Examples, TrainingData, load
from recloop.trainer.gate_config import GateConfig, OffPolicyConfig, Threshold, thresholds_for
from recloop.trainer.gate_summary import summary
from recloop.trainer.scorers import (
    choose_recent_window,
    counts_scorers,
    model_scorers,
    popularity,
    popularity_scorers,
    recent_popularity,
)
from recloop.trainer.towers import MAX_POSITION

# (version dir, eval impressions) -> (the version's probability of each logged item in its logged slot, facts)
Replay = Callable[[str, Mapping[str, np.ndarray]], tuple[np.ndarray, dict[str, Any]]]
Verdict = Literal["pass", "fail", "skipped"]
FLOORS = ("min", "min_vs_popularity", "min_vs_recent_popularity")  # the checks on the candidate alone


# ------------------------------------------------------------------------------------------- metrics

def flat_metrics(result: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """One scorer's evaluation (``retrieval`` + ``ranking``) as ``{slice: {metric: value}}``.

    Every metric ``m`` comes with ``m:se``, its standard error (``evaluate.py``), and ``m:support``, the
    count its value rests on (positives for recall, impressions for AUC, requests with a click for NDCG/MAP).
    """
    out: dict[str, dict[str, float | None]] = {}
    retrieval, ranking = result["retrieval"], result["ranking"]
    for view, suffix in (("logged", ""), ("explored", "_explored")):
        for slice_, values in [("overall", retrieval[view]["overall"]), *retrieval[view]["cohorts"].items()]:
            row = out.setdefault(slice_, {})
            for key, value in values.items():
                if key.startswith("recall@") and not key.endswith("_se"):
                    row[f"{key}{suffix}"] = value
                    row[f"{key}{suffix}:se"] = values.get(f"{key}_se")
                    row[f"{key}{suffix}:support"] = values["positives"]
    for slice_, values in [("overall", ranking["overall"]), *ranking["cohorts"].items()]:
        row = out.setdefault(slice_, {})
        for key, value in values.items():
            if key in ("impressions", "explored_impressions", "requests_with_click") or key.endswith("_se"):
                continue
            row[key] = value
            row[f"{key}:se"] = values.get(f"{key}_se")
            count = ("requests_with_click" if not key.startswith("auc_") else
                     "explored_impressions" if key.endswith("_explored") else "impressions")
            row[f"{key}:support"] = values[count]
    return out


# ------------------------------------------------------------------------------------------- judging

def judge(config: GateConfig, candidate: Mapping[str, Mapping[str, Any]],
          production: Mapping[str, Mapping[str, Any]] | None, baseline: Mapping[str, Mapping[str, Any]] | None,
          estimate: Mapping[str, Any] | None = None, recent: Mapping[str, Mapping[str, Any]] | None = None,
          interaction_logs: bool = False, no_production: str = "first run: no production model",
          paired: Mapping[tuple[str, str], float] | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """Applies every configured check; returns (blessed, checks).

    Args:
      candidate, production, baseline, recent: ``flat_metrics`` of the candidate, the production model (None
        on the first run), the popularity baseline and recent popularity (None: its checks fail, unmeasured).
      estimate: the candidate's off-policy estimate (``OffPolicyEstimate.to_dict``), None when unavailable.
      interaction_logs: the data are interaction logs (``fit.interaction_logs``; picks the default checks).
      no_production: why ``production`` is None, the note of every skipped change check.
      paired: the standard error of ``candidate - production`` by ``(slice, metric)``, both measured on the
        same requests (``paired_errors``); a change check with one uses it instead of the two figures'
        errors as if independent, which the shared requests' noise inflates.

    Blessed when no check failed and at least one check on the candidate alone passed. A floor (``min``,
    ``min_vs_popularity``) passes when the candidate's lower bound ``value - z * se`` clears it; ``max_drop``
    fails only when ``value + z * sqrt(se**2 + reference_se**2)`` (``value + z * paired_se`` when paired) is
    below ``production - max_drop``, z from ``config.confidence``. A figure without a standard error is judged on its value and says so.
    Every check records ``se``, ``reference_se`` and ``bound``, the figure compared with its threshold.
    """
    z = NormalDist().inv_cdf(0.5 + config.confidence / 2)
    checks: list[dict[str, Any]] = []
    for t in thresholds_for(config, interaction_logs):
        got = candidate.get(t.slice, {})
        value, se = _number(got.get(t.metric)), _number(got.get(f"{t.metric}:se"))
        support = got.get(f"{t.metric}:support")
        base = {"metric": t.metric, "slice": t.slice, "value": value, "se": se, "support": support}
        # kind, reference and its se, threshold, rule
        bounds: list[tuple[str, float | None, float | None, float | None, str]] = []
        if t.min is not None:
            bounds.append(("min", None, None, t.min, f">= {t.min:g}"))
        if t.min_vs_popularity is not None:
            ref, ref_se = _reference(baseline, t.slice, t.metric)
            bounds.append(("min_vs_popularity", ref, ref_se, None if ref is None else t.min_vs_popularity * ref,
                           f">= {t.min_vs_popularity:g} x popularity"))
        if t.min_vs_recent_popularity is not None:
            ref, ref_se = _reference(recent, t.slice, t.metric)
            bounds.append(("min_vs_recent_popularity", ref, ref_se,
                           None if ref is None else t.min_vs_recent_popularity * ref,
                           f">= {t.min_vs_recent_popularity:g} x recent popularity"))
        if t.max_drop is not None:
            ref, ref_se = _reference(production, t.slice, t.metric)
            bounds.append(("max_drop", ref, ref_se, None if ref is None else ref - t.max_drop,
                           f">= production - {t.max_drop:g}"))
        for kind, ref, ref_se, threshold, rule in bounds:
            check = base | {"kind": kind, "reference": ref, "reference_se": ref_se, "threshold": threshold,
                            "rule": rule, "bound": None}
            if kind == "max_drop" and production is None:
                checks.append(check | {"verdict": "skipped", "note": no_production})
            elif support is not None and support < t.min_support:
                checks.append(check | {"verdict": "skipped",
                                       "note": f"support {support} < min_support {t.min_support}"})
            elif value is None or threshold is None:
                what = "the candidate's value" if value is None else (
                    "production's value" if kind == "max_drop" else "the baseline's value")
                checks.append(check | {"verdict": "fail", "note": f"not measured: {what} is missing or undefined"})
            else:
                difference_se = (paired or {}).get((t.slice, t.metric)) if kind == "max_drop" else None
                checks.append(check | _bounded(kind, value, se, ref, ref_se, threshold, z, difference_se))
    checks.append(_offpolicy_check(config.offpolicy, estimate))
    failed = any(c["verdict"] == "fail" for c in checks)
    passed_alone = any(c["verdict"] == "pass" and c["kind"] in FLOORS for c in checks)
    return (not failed and passed_alone), checks


def paired_errors(thresholds: Sequence[Threshold], candidate: Mapping[str, Any],
                  production: Mapping[str, Any] | None) -> dict[tuple[str, str], float]:
    """The standard error of ``candidate - production`` for every change check, paired by request.

    Both models score the same eval requests, so much of each figure's noise (which requests, which
    members, which items were shown) is shared and cancels in the difference; treating the two errors
    as independent would leave a real drop inside the noise. ``candidate``, ``production``: the
    scorers' estimates (``evaluate.Estimates``); a figure without an estimate gets no entry.
    """
    out: dict[tuple[str, str], float] = {}
    for t in thresholds:
        key = evaluate.estimate_key(_figure(t.metric), t.slice)
        if t.max_drop is None or production is None or key not in candidate or key not in production:
            continue
        se = metrics.difference(candidate[key], production[key]).se
        if not math.isnan(se):
            out[(t.slice, t.metric)] = se
    return out


def _figure(metric: str) -> str:
    """A gate metric's name among ``evaluate``'s estimates (recall@K is the logged view's)."""
    if metric.startswith("recall@"):
        return f"retrieval_{metric}" if metric.endswith("_explored") else f"retrieval_{metric}_logged"
    return f"ranking_{metric}"


def _reference(figures: Mapping[str, Mapping[str, Any]] | None, slice_: str, metric: str
               ) -> tuple[float | None, float | None]:
    """A reference scorer's value and standard error (None, None without the scorer)."""
    got = (figures or {}).get(slice_, {})
    return _number(got.get(metric)), _number(got.get(f"{metric}:se"))


def _bounded(kind: str, value: float, se: float | None, ref: float | None, ref_se: float | None,
             threshold: float, z: float, difference_se: float | None = None) -> dict[str, Any]:
    """The verdict of a measured check: the bound, ``pass`` or ``fail``, and a note that says how sure it is."""
    unknown = [] if difference_se is not None else [
        who for who, e in (("the candidate", se), ("the reference", ref_se if kind == "max_drop" else 0.0))
        if e is None]
    extra: dict[str, Any] = {}
    if kind == "max_drop":
        assert ref is not None
        paired = difference_se is not None
        # unpaired: the two figures' errors as if independent (a bound that is too wide when they are not)
        used = difference_se if paired else math.hypot(se or 0.0, ref_se or 0.0)
        spread = z * used
        bound = value + spread  # worse only when even the favourable end of the difference is below the drop
        note = (f"difference {value - ref:+.4f} ± {spread:.4f}{' (paired by request)' if paired else ''} "
                f"vs allowed -{ref - threshold:g}")
        extra = {"difference_se": None if unknown else used, "paired": paired}
    else:
        spread = z * (se or 0.0)
        bound = value - spread  # a floor is cleared by the lower bound, not by noise
        note = f"lower bound {bound:.4f} ({value:.4f} - {spread:.4f}) {_margin(bound, threshold)}"
    if unknown:
        note += f"; no standard error for {' and '.join(unknown)}: judged on the value"
    return {"bound": bound, "verdict": "pass" if bound >= threshold - 1e-12 else "fail", "note": note, **extra}


def _offpolicy_check(config: OffPolicyConfig, estimate: Mapping[str, Any] | None) -> dict[str, Any]:
    check: dict[str, Any] = {"kind": "offpolicy", "metric": "snips_click_rate", "slice": "overall",
                             "se": None, "reference_se": None, "bound": None,
                             "rule": f">= logged rate x (1 - {config.max_relative_drop:g}), when ESS >= "
                                     f"{config.min_ess:g} and mean weight ~ 1"}
    if not config.enabled or estimate is None:
        reason = "disabled" if not config.enabled else "no estimate (see offpolicy.reason)"
        return check | {"value": None, "reference": None, "threshold": None, "support": None,
                        "verdict": "skipped", "note": reason}
    value, ref, ess = _number(estimate.get("snips")), estimate["logged_rate"], estimate["ess"]
    threshold = ref * (1 - config.max_relative_drop)
    check |= {"value": value, "reference": ref, "threshold": threshold, "support": ess}
    if ess < config.min_ess:
        return check | {"verdict": "skipped", "note": f"effective sample size {ess:.0f} < min_ess {config.min_ess:g}"}
    if abs(estimate["mean_weight"] - 1) > config.max_mean_weight_error:
        return check | {"verdict": "skipped", "note": f"mean weight {estimate['mean_weight']:.3f} is not within "
                                                      f"{config.max_mean_weight_error:g} of 1: the logs rarely show "
                                                      "what the candidate would show"}
    if value is None:
        return check | {"verdict": "fail", "note": "not measured: the estimate is undefined"}
    return check | {"verdict": "pass" if value >= threshold else "fail", "note": _margin(value, threshold)}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _margin(value: float, threshold: float) -> str:
    return f"{value - threshold:+.4f} vs the threshold"


# ------------------------------------------------------------------------------------------- the run

def run(candidate: str, production: str | None, data_dirs: Sequence[str], out: str, config: GateConfig,
        replay: Replay | None = None, baseline_version: str | None = None,
        progress: Callable[[str], None] = lambda line: None, eval_dirs: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluates ``candidate`` against ``production`` on the eval split and writes ``OUT/blessing.json``
    and ``OUT/summary.md``; returns the blessing.

    Args:
      candidate, production: trainer exports (local paths); production None on the first run.
      data_dirs: the ingest outputs the candidate was trained on (its evaluation set is the gate's, chosen
        by the candidate's training config: ``eval_days``, ``validation_days``).
      replay: the off-policy estimate's target side (``serving.replay``); None: no estimate.
      baseline_version: the registry version ``production`` is; recorded for push's compare-and-swap.
      eval_dirs: the separate eval ingests the candidate was evaluated on (``recloop train --eval-data``).

    Raises:
      DataError: the data's span is not the one the candidate was trained and held out on, or the
        candidate was evaluated on separate eval ingests and ``eval_dirs`` is empty.
      DeclarationMismatch: the candidate was made under another feature declaration than the active one.
    """
    card = logs.read_json(posixpath.join(candidate, "model_card.json"))
    train_config = TrainConfig.model_validate(card["config"])
    if card["data"].get("eval_sources") and not eval_dirs:
        raise DataError(f"{card['version']} was evaluated on separate eval data {card['data']['eval_sources']}; "
                        "pass the same --eval-data as to train")
    recorded.check(candidate, "candidate model")  # before the data, which are read under the active declaration
    data = load(data_dirs, train_config.window_weeks, train_config.eval_days, train_config.validation_days,
                eval_dirs, validation_min_positives=train_config.validation_min_positives,
                positive=train_config.retrieval.positives)
    trained = card["data"]["span"]
    if {k: data.span.get(k) for k in trained} != trained:  # a card from before a key was added has fewer
        raise DataError(f"the data spans {data.span}, but {card['version']} was trained with span "
                        f"{trained}: the gate evaluates on the eval split the candidate held out; "
                        "pass the same --data as to train (and the same --eval-data)")
    day = dt.datetime.fromisoformat(data.span["eval_start"]).date()
    notes = []
    production_card, incomparable = None, None
    if production is not None:
        production_card = logs.read_json(posixpath.join(production, "model_card.json"))
        differs = recorded.difference(production)
        if differs is not None:  # a new declaration's first run: floors only, like the very first run
            incomparable = (f"production ({production_card['version']}) was made under another feature "
                            f"declaration ({differs}): no change checks against it")
            notes.append(incomparable)
        if production_card["data"]["span"]["eval_start"] > data.span["eval_start"]:
            notes.append(f"production ({production_card['version']}) was trained on data up to "
                         f"{production_card['data']['span']['eval_start']}, after this eval split starts "
                         f"({data.span['eval_start']}): the comparison favours it")
    scorers = {"candidate": model_scorers(candidate, day),
               "popularity": popularity_scorers(popularity(data.train, day)),
               "recent_popularity": counts_scorers(recent_popularity(data.train, day,
                                                                     _recent_window(card, train_config, data)))}
    if production is not None and incomparable is None:
        scorers["production"] = model_scorers(production, day)
    positives = data.eval.take(data.eval[f"label_{train_config.retrieval.positives}"] == 1)
    seen = evaluate.examination(data.train, MAX_POSITION)
    results: dict[str, Any] = {}
    estimates: dict[str, evaluate.Estimates] = {}
    for name, (retrieve, rank) in scorers.items():
        progress(f"evaluating {name}")
        found = estimates[name] = {}
        results[name] = evaluate.clean({
            "retrieval": evaluate.evaluate_retrieval(retrieve, data.train, positives, data.catalog,
                                                     train_config.recall_ks, train_config.top_k,
                                                     train_config.eval_max_queries, estimates=found),
            "ranking": evaluate.evaluate_ranking(rank, data.train, data.eval, train_config.top_k, seen, found)})
    flat = {name: flat_metrics(r) for name, r in results.items()}

    estimate, offpolicy_info = None, {"reason": "disabled"} if not config.offpolicy.enabled else {}
    if config.offpolicy.enabled:
        if replay is None:
            offpolicy_info = {"reason": "no replay given (the library was called without serving's replay)"}
        else:
            progress("off-policy estimate: replaying the candidate on the logged requests")
            estimate, offpolicy_info = _estimate(candidate, data.eval, config.offpolicy, replay)

    interactions = fit.interaction_logs(data.train, train_config.retrieval.positives)
    paired = paired_errors(thresholds_for(config, interactions), estimates["candidate"], estimates.get("production"))
    blessed, checks = judge(config, flat["candidate"], flat.get("production"), flat["popularity"], estimate,
                            flat["recent_popularity"], interactions,
                            **({"no_production": incomparable} if incomparable else {}), paired=paired)
    blessing = {
        "blessed": blessed,
        "candidate_version": card["version"],
        "baseline_version": baseline_version,
        "first_run": production is None,
        "production_version": production_card["version"] if production_card else None,
        "production_compared": production is not None and incomparable is None,
        "data": {"sources": data.sources, "eval_sources": data.eval_sources, "span": data.span, **data.sizes(),
                 "eval_requests": len(np.unique(data.eval["request_id"])), "eval": evaluate.sizes(data.eval),
                 "logging_versions": _counts(data.eval["model_version"])},
        "config": config.model_dump(mode="json"),
        # which default checks applied when the config names none
        "logs": "interactions (most impressions positives)" if interactions else "pages",
        "z": NormalDist().inv_cdf(0.5 + config.confidence / 2),
        "checks": checks,
        "failed": [_name(c) for c in checks if c["verdict"] == "fail"],
        "metrics": {name: f["overall"] for name, f in flat.items()},
        "slices": flat,
        "offpolicy": {"estimate": estimate, **offpolicy_info},
        "notes": notes,
    }
    blessing["summary_markdown"] = summary(blessing)
    Path(out).mkdir(parents=True, exist_ok=True)
    logs.write_json(posixpath.join(out, "blessing.json"), blessing)
    Path(out, "summary.md").write_text(blessing["summary_markdown"])
    return blessing


def _recent_window(card: Mapping[str, Any], config: TrainConfig, data: TrainingData) -> int | None:
    """Recent popularity's window: the one the trainer chose on its validation split (in the candidate's card),
    or chosen the same way here for a card from before it was recorded."""
    recent = card.get("metrics", {}).get("recent_popularity", {})
    if "window_days" in recent:
        return recent["window_days"]
    start = data.span.get("validation_start")
    return choose_recent_window(data.fit, data.validation, data.catalog,
                                dt.datetime.fromisoformat(start).date() if start else None,
                                config.retrieval.positives)["window_days"]


def _estimate(candidate: str, rows: Examples, config: OffPolicyConfig, replay: Replay
              ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    keep = evaluate._sample(rows["request_id"], config.max_requests)
    rows = rows.take(keep)
    try:
        target, facts = replay(candidate, rows.columns)
    except ValueError as e:  # a page the candidate cannot answer: the gate says why instead of failing
        return None, {"reason": f"replay failed: {e}"}
    est = offpolicy.estimate(rows["label_click"], rows["propensity"], target, rows["request_id"],
                             confidence=config.confidence)
    return est.to_dict(), {"replay": facts, "requests_sampled": len(np.unique(rows["request_id"]))}


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(values, return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def _name(check: Mapping[str, Any]) -> str:
    return f"{check['kind']}:{check['metric']}[{check['slice']}]"
