"""The learning ablation: each lever a recommender team would try, measured one at a time against the truth.

On `small` simulated worlds of seeds not used for tuning (tuning used seed 3), the same three weeks as
the training benchmark (weeks 0-1 and the Monday of week 2 train, the rest of week 2 evaluates). Every
variant is one ``train.run`` (both models, export, evaluation) with the simulator's oracle and the
two-feature hand rule ("declared category == item category, and the item's language is the member's
country's") evaluated beside the model, popularity in context and recent popularity, on the same
examples by the same code. The levers start from the configuration before this benchmark existed
(softmax over clicks, 12 epochs) and change one thing per row. Per run, ``truth_agreement`` says how
well each offline figure orders the run's scorers as the true expected recall does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ingest_week, run_timed, table

SEEDS = (1, 2)  # one seed is ~25 min on 2 cores (bench/run.py ablation --seeds N measures one)
# lever -> TrainConfig overrides; each row changes one thing from the row it names
BEFORE = {"loss": "softmax", "epochs": 12, "id_l2": 0.0, "oov_buckets": 50, "normalize": False, "temperature": None}
VARIANTS: dict[str, dict[str, Any]] = {
    "softmax over clicks, 12 epochs (before)": {"retrieval": BEFORE, "validation_days": 0},
    "+ early stopping on the validation day": {"retrieval": BEFORE},
    "+ IPS-weighted positives (cap 10)": {"retrieval": BEFORE | {"ips_cap": 10.0}},
    "pointwise over impressions, early stopping": {"retrieval": {"loss": "pointwise", "id_l2": 0.0,
                                                                  "oov_buckets": 50}},
    "+ L2 on id embeddings": {"retrieval": {"oov_buckets": 50}},
    "+ one OOV bucket (the default)": {},
    "+ recency weights (7-day half-life)": {"retrieval": {"recency_half_life_days": 7.0}},
}
DEFAULT = "+ one OOV bucket (the default)"
NOTES = ("Expected recall@100: the share of each eval request's true expected clicks (simulator) that the top 100 "
         "of the whole catalog holds, ± one standard error over requests. Explored: clicks in uniformly explored "
         "slots (what logs can estimate). Truth agreement: Spearman's rank correlation, across the scorers of a run "
         "(model, popularity, recent popularity, hand rule, oracle), between an offline figure and the expected "
         "recall. Seconds: training of both models (early stopping included), export and evaluation excluded.")


def _hand_rule() -> Any:
    """The two-feature rule as (retrieval, ranking) scorers: +1 declared category match, +1 language match."""
    import numpy as np

    from recloop.features.spec import COUNTRIES, LANGUAGES
    from recloop.simulator.world import COUNTRY_LANGUAGE

    language = {c: LANGUAGES[COUNTRY_LANGUAGE[i]] for i, c in enumerate(COUNTRIES)}

    def retrieval(queries: Any, catalog: Any) -> Any:
        spoken = np.array([language.get(c, "") for c in queries["country"]])[:, None]
        return ((queries["preferred_category"][:, None] == catalog["category"][None, :]).astype(float)
                + (spoken == catalog["language"][None, :]).astype(float))

    def ranking(rows: Any) -> dict[str, Any]:
        spoken = np.array([language.get(c, "") for c in rows["country"]])
        return {"score": (rows["preferred_category"] == rows["category"]).astype(float)
                + (spoken == rows["language"]).astype(float)}

    return retrieval, ranking


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, r in metrics["scorers"].items():
        ret, rank = r["retrieval"], r["ranking"]["overall"]
        expected = ret.get("expected", {}).get("overall", {})
        out[name] = {"expected_recall@100": expected.get("recall@100"),
                     "expected_recall@100_se": expected.get("recall@100_se"),
                     "explored_recall@100": ret["explored"]["overall"]["recall@100"],
                     "explored_recall@100_se": ret["explored"]["overall"]["recall@100_se"],
                     "logged_recall@100": ret["logged"]["overall"]["recall@100"],
                     "ndcg@10_debiased": rank["ndcg@10_debiased"], "ndcg@10_debiased_se": rank.get("ndcg@10_debiased_se"),
                     "auc_click": rank["auc_click"], "auc_click_se": rank.get("auc_click_se")}
    return out


def bench_ablation(seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from recloop.cli.train import oracle_scorers
    from recloop.trainer import train
    from recloop.trainer.config import TrainConfig

    hand = _hand_rule()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            logs = f"{tmp}/sim{seed}"
            run_timed(["recloop", "simulate", "--out", logs, "--scale", "small", "--weeks", "3", "--seed", str(seed)])
            for week, eval_days in ((0, 1), (1, 1), (2, 6)):
                ingest_week(logs, f"{tmp}/s{seed}w{week}", week, eval_days)
            make, truth = oracle_scorers(logs)
            for name, overrides in VARIANTS.items():
                config = TrainConfig.model_validate(overrides)
                t0 = time.perf_counter()
                out = f"{tmp}/m{seed}-{len(runs)}"
                card = train.run(config, [f"{tmp}/s{seed}w{w}" for w in range(3)], out, truth=truth,
                                 extra_scorers={"oracle": make, "hand rule": lambda _d, _day: hand})
                metrics = json.loads(Path(out, "metrics.json").read_text())
                runs.append({"seed": seed, "variant": name, "overrides": overrides,
                             "process_s": round(time.perf_counter() - t0, 1),
                             "training_s": round(card["training"]["retrieval"]["seconds"]
                                                 + card["training"]["ranking"]["seconds"], 1),
                             "retrieval": {k: card["training"]["retrieval"].get(k)
                                           for k in ("loss", "best_epoch", "seconds")} | {
                                 "epochs_run": card["training"]["retrieval"]["epochs"]},
                             "eval": metrics["eval"], "scorers": _figures(metrics),
                             "truth_agreement": metrics.get("truth_agreement")})
                print(f"  seed {seed} {name}: {runs[-1]['process_s']:.0f} s", file=sys.stderr)
    return {"runs": runs, "variants": VARIANTS}


def _r(x: float | None, se: float | None = None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def section(r: dict[str, Any], results: Any) -> str:
    """The bench/README.md section of an ablation result."""
    f = r["figures"]
    rows, refs = [], []
    for run in f["runs"]:
        m = run["scorers"]["model"]
        rows.append([run["seed"], run["variant"], _r(m["expected_recall@100"], m["expected_recall@100_se"], 4),
                     _r(m["explored_recall@100"], m["explored_recall@100_se"]),
                     _r(m["ndcg@10_debiased"], m["ndcg@10_debiased_se"]), _r(m["auc_click"], m["auc_click_se"]),
                     (f"{run['retrieval']['loss']}, {run['retrieval']['epochs_run']}"
                      f" ({run['retrieval']['best_epoch'] or 'last'})"), run["training_s"]])
        if run["variant"] == DEFAULT:
            for name in ("oracle", "hand rule", "popularity", "recent_popularity"):
                s = run["scorers"][name]
                refs.append([run["seed"], name, _r(s["expected_recall@100"], s["expected_recall@100_se"], 4),
                             _r(s["explored_recall@100"], s["explored_recall@100_se"]),
                             _r(s["ndcg@10_debiased"], s["ndcg@10_debiased_se"]), _r(s["auc_click"], s["auc_click_se"])])
    agreement = []
    for run in f["runs"]:
        a = run.get("truth_agreement") or {}
        if run["variant"] == DEFAULT and a:
            agreement.append([run["seed"], *(_r(a.get(k), digits=2) for k in (
                "recall@100_explored", "recall@100_logged", "ndcg@10_debiased", "ndcg@10", "auc_click_explored"))])
    evals = {run["seed"]: run["eval"] for run in f["runs"] if run["variant"] == DEFAULT}
    sizes = "; ".join(f"seed {seed}: {e['impressions']:,} impressions, {e['requests']:,} requests, "
                      f"{e['retrieval_positives']:,} clicks" for seed, e in evals.items())
    return "\n".join([
        "## Learning: the ablation", "",
        f"Each row changes one lever from the row above it (or names its start). Eval: the rest of week 2 ({sizes}).",
        "",
        table(["seed", "lever", "recall@100 expected", "explored", "NDCG@10 debiased", "AUC click",
               "retrieval loss, epochs (kept)", "training s"], rows), "",
        "The references on the same eval (from the default's run):", "",
        table(["seed", "scorer", "recall@100 expected", "explored", "NDCG@10 debiased", "AUC click"], refs), "",
        "Truth agreement of the offline figures (default's run, across its scorers):", "",
        table(["seed", "recall@100 explored", "recall@100 logged", "NDCG@10 debiased", "NDCG@10 logged",
               "AUC click explored"], agreement), "", r["notes"]])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line: the default's expected recall against the oracle and the hand rule."""
    parts = []
    for run in f["runs"]:
        if run["variant"] != DEFAULT:
            continue
        s = run["scorers"]
        parts.append(f"seed {run['seed']} recall@100 expected {s['model']['expected_recall@100']:.3f} = "
                     f"{s['model']['expected_recall@100'] / s['oracle']['expected_recall@100']:.2f}x the oracle, "
                     f"hand rule {s['hand rule']['expected_recall@100']:.3f}, popularity "
                     f"{s['popularity']['expected_recall@100']:.3f}")
    return "**Learning** (default config, held-out week): " + "; ".join(parts) + "."
