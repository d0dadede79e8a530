"""The training benchmark: quality against the popularity baseline and the oracle, and training time.

On `small` simulated worlds of seeds not used for tuning (tuning used seed 3),
three weeks each: week 0 and 1 ingested as weekly runs are (the last day is
eval), week 2 with six eval days (its Monday is training data), so the
evaluation is a whole week after training and items released that week are
new to the model. ``recloop train --truth`` evaluates the model, the
popularity-in-context baseline and the simulator's oracle on the same examples.
Variants: the default config (its retrieval loss is pointwise on these logged
pages, where log-Q does not apply), and the in-batch softmax with and without
log-Q correction (the issue asks whether it helps). A plain weekly run (week 1
alone, one eval day) gives the training time of one small week.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import plots
from common import MEASURED, ingest_week, run_timed, table

SEEDS = (1, 2)
# retrieval settings of each variant, written to a config file (the default: none)
VARIANTS = {"default": "", "softmax": "retrieval:\n  loss: softmax\n",
            "softmax, no log-Q": "retrieval:\n  loss: softmax\n  log_q: false\n"}
NOTES = ("Quality runs train on weeks 0-1 and the Monday of week 2 and evaluate on the rest of week 2 (default "
         "config: at most 4 retrieval and 3 ranking epochs, early stopping on the last training day). "
         "Week 0 is the bootstrap heuristic's first week. Process "
         "seconds include interpreter start, imports, export, index and evaluation of three scorers.")


SLICES = ("member=new", "member=active", "item=new", "item=established")


def _slice(r: dict[str, Any], cohort: str) -> dict[str, Any]:
    """One cohort's figures: ranking heads (with the impressions they rest on) and retrieval recall@100."""
    rank = r["ranking"]["cohorts"].get(cohort, {})
    out = {k: rank.get(k) for k in ("impressions", "requests_with_click", "auc_click", "auc_complete", "auc_like",
                                    "ndcg@10_debiased")}
    for view in ("expected", "explored", "logged"):
        c = r["retrieval"].get(view, {}).get("cohorts", {}).get(cohort, {})
        out[f"{view}_recall@100"], out[f"{view}_positives"] = c.get("recall@100"), c.get("positives")
    return out


def _figures(metrics: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, r in metrics["scorers"].items():
        ret, rank = r["retrieval"], r["ranking"]["overall"]
        out[name] = {
            "expected_recall@100": ret.get("expected", {}).get("overall", {}).get("recall@100"),
            "explored_recall@100": ret["explored"]["overall"]["recall@100"],
            "explored_recall@100_se": ret["explored"]["overall"]["recall@100_se"],
            "explored_positives": ret["explored"]["overall"]["positives"],
            "logged_recall@100": ret["logged"]["overall"]["recall@100"],
            "logged_recall@100_new_items": ret["logged"]["cohorts"]["item=new"]["recall@100"],
            "logged_recall@100_established_items": ret["logged"]["cohorts"]["item=established"]["recall@100"],
            "logged_new_item_positives": ret["logged"]["cohorts"]["item=new"]["positives"],
            "explored_recall@100_new_items": ret["explored"]["cohorts"]["item=new"]["recall@100"],
            "explored_recall@100_new_members": ret["explored"]["cohorts"]["member=new"]["recall@100"],
            "ndcg@10_debiased": rank["ndcg@10_debiased"], "ndcg@10_logged": rank["ndcg@10"],
            "map@10_logged": rank["map@10"], "auc_click": rank["auc_click"],
            "auc_click_explored": rank["auc_click_explored"], "auc_complete": rank["auc_complete"],
            "auc_like": rank["auc_like"], **{f"top10_{k}": v for k, v in ret["popularity_bias"].items()},
            "slices": {c: _slice(r, c) for c in SLICES}}
    out["training"] = {m: {k: card["training"][m][k] for k in ("examples", "seconds", "examples_per_second")}
                       for m in ("retrieval", "ranking")} | {"total_s": card["training_seconds"]}
    out["data"] = {k: card["data"][k] for k in ("train_examples", "eval_examples", "catalog_items", "weeks")}
    return out


def bench_train() -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for i, (name, text) in enumerate(VARIANTS.items()):
            if text:
                path = Path(tmp, f"variant{i}.yaml")
                path.write_text(text)
                configs[name] = ["--config", str(path)]
        for seed in SEEDS:
            logs = f"{tmp}/sim{seed}"
            run_timed(["recloop", "simulate", "--out", logs, "--scale", "small", "--weeks", "3", "--seed", str(seed)])
            for week, eval_days in ((0, 1), (1, 1), (2, 6)):
                ingest_week(logs, f"{tmp}/s{seed}w{week}", week, eval_days)
            jobs = {name: ["--data", f"{tmp}/s{seed}w0", "--data", f"{tmp}/s{seed}w1", "--data", f"{tmp}/s{seed}w2",
                           *configs.get(name, [])] for name in VARIANTS}
            jobs["one week"] = ["--data", f"{tmp}/s{seed}w1"]
            for name, args in jobs.items():
                out, rss = f"{tmp}/m{seed}-{len(runs)}", f"{tmp}/m{seed}-{len(runs)}.rss"
                wall = run_timed([sys.executable, "-c", MEASURED, rss, "train", *args, "--out", out, "--truth", logs])
                card = json.loads(Path(out, "model_card.json").read_text())
                metrics = json.loads(Path(out, "metrics.json").read_text())
                runs.append({"seed": seed, "variant": name, "process_s": round(wall, 1),
                             "peak_rss_mib": round(int(Path(rss).read_text()) / 1024), **_figures(metrics, card)})
                print(f"  seed {seed} {name}: {wall:.0f} s", file=sys.stderr)
    return {"runs": runs}


def _r(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


SCORERS = ("model", "popularity", "oracle")


def _slices(runs: list[dict[str, Any]]) -> str:
    """Per slice and per head, default config: the issue's new members / new items, and every ranking head."""
    rows = []
    for run in runs:
        if run["variant"] != "default":
            continue
        for cohort in SLICES:
            for name in SCORERS:
                s = run[name]["slices"][cohort]
                # a request holds about one new item: NDCG within that slice is trivially 1
                ndcg = "–" if cohort == "item=new" else _r(s["ndcg@10_debiased"])
                rows.append([run["seed"] if (cohort, name) == (SLICES[0], SCORERS[0]) else "",
                             cohort if name == SCORERS[0] else "", name,
                             f"{_r(s['explored_recall@100'])} ({s['explored_positives']})",
                             f"{_r(s['logged_recall@100'])} ({s['logged_positives']})", ndcg,
                             _r(s["auc_click"]), _r(s["auc_complete"]), _r(s["auc_like"]),
                             f"{s['impressions'] or 0:,}"])
    return table(["seed", "slice", "scorer", "recall@100 explored (clicks)", "logged (clicks)",
                  "NDCG@10 debiased", "AUC click", "AUC complete", "AUC like", "ranked impressions"], rows)


def _plot(runs: list[dict[str, Any]], path: Path) -> None:
    metrics = (("expected_recall@100", "recall@100\nexpected"), ("explored_recall@100", "recall@100\nexplored"),
               ("ndcg@10_debiased", "NDCG@10\ndebiased"), ("auc_click", "AUC click"),
               ("top10_coverage", "top-10\ncoverage"))
    default = [run for run in runs if run["variant"] == "default"]
    width = 0.8 / len(SCORERS)
    with plots.figure(path, width=7.2) as ax:
        for i, name in enumerate(SCORERS):
            means = [sum(run[name][m] for run in default) / len(default) for m, _ in metrics]
            ax.bar([j + i * width for j in range(len(metrics))], means, width, label=name)
        ax.set_xticks([j + width for j in range(len(metrics))], [label for _, label in metrics], fontsize=8)
        ax.set(title=f"quality on a held-out week (mean of {len(default)} seeds)", ylim=(0, 1))
        ax.legend(fontsize=8)


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a training result (and its plot, ``results/train.png``)."""
    quality, timing = [], []
    _plot(r["figures"]["runs"], results / "train.png")
    for run in r["figures"]["runs"]:
        m, p, o = run["model"], run["popularity"], run["oracle"]
        if run["variant"] == "one week":
            timing.append([run["seed"], f"{run['data']['train_examples']:,}", run["training"]["retrieval"]["seconds"],
                           f"{run['training']['retrieval']['examples_per_second']:,.0f}",
                           run["training"]["ranking"]["seconds"],
                           f"{run['training']['ranking']['examples_per_second']:,.0f}", run["training"]["total_s"],
                           run["process_s"], run["peak_rss_mib"]])
            continue
        for name, s in (("model", m), ("popularity", p), ("oracle", o)):
            if name != "model" and run["variant"] != "default":
                continue
            ratio = (f" ({s['expected_recall@100'] / p['expected_recall@100']:.2f}x)"
                     if name != "popularity" and p["expected_recall@100"] else "")
            quality.append([run["seed"], run["variant"] if name == "model" else "", name,
                            _r(s["expected_recall@100"]) + ratio,
                            f"{_r(s['explored_recall@100'])} ± {_r(s['explored_recall@100_se'])}",
                            _r(s["logged_recall@100"]),
                            f"{_r(s['logged_recall@100_new_items'])} / {_r(s['logged_recall@100_established_items'])}",
                            _r(s["ndcg@10_debiased"]), _r(s["ndcg@10_logged"]), _r(s["auc_click"]),
                            _r(s["auc_click_explored"]), f"{s['top10_items_for_50pct']}/{s['top10_items_for_90pct']}",
                            _r(s["top10_coverage"], 2)])
    return "\n".join([
        "## Training: quality vs the popularity baseline and the oracle, and time", "",
        ("Retrieval recall@100 over the whole catalog in three views: *expected* (the share of each eval "
        "request's expected clicks, from the simulator's true click probabilities, that the top 100 holds: "
        "what a model would get if items were shown at random; noise-free), *explored* (clicks in slots the "
        "logging policy explored uniformly: the same quantity estimated from logs, ± one standard error) and "
        "*logged* (all eval clicks: rewards imitating the logging policy, i.e. the popularity heuristic). "
        "New/established: logged recall@100 of items absent from / present in the training data. Ranking: "
        "NDCG@10 of each request's logged impressions with clicks weighted by inverse examination "
        "probability (debiased) and plain (logged), AUC of click over all / explored impressions. Bias: "
        "distinct items making up 50%/90% of the top-10 lists, and catalog coverage."), "",
        table(["seed", "variant", "scorer", "recall@100 expected", "explored", "logged", "new / established",
               "NDCG@10 debiased", "NDCG@10 logged", "AUC click", "AUC click explored", "top-10 50%/90%",
               "coverage"], quality), "",
        "![quality per scorer](results/train.png)", "",
        ("Per slice and per head (default config, all three scorers on the same eval examples). New members: "
         "eval requests of members with no training example; new items: items released after the training data. "
         "Recall@100 over the whole catalog of the slice's clicks (in brackets: the clicks it rests on, so small "
         "slices are noisy; the noise-free expected recall is not computed per slice); NDCG@10 (not for new items: a "
         "request holds about one, so it is trivially 1) and the AUC of each ranking head over the slice's "
         "logged impressions."), "",
        _slices(r["figures"]["runs"]), "",
        "Training time of one `small` week (week 1 alone, its last day as eval), both models, 2 cores:", "",
        table(["seed", "train examples", "retrieval s", "retrieval ex/s", "ranking s", "ranking ex/s",
               "train.run s", "process s", "peak RSS MiB"], timing), "", r["notes"]])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a training result's figures: quality of the default config, per seed."""
    return "**Quality** (held-out week, default config): " + "; ".join(
        f"seed {x['seed']} recall@100 expected {x['model']['expected_recall@100']:.3f} vs popularity "
        f"{x['popularity']['expected_recall@100']:.3f} vs oracle {x['oracle']['expected_recall@100']:.3f}, AUC click "
        f"{x['model']['auc_click']:.3f} / {x['popularity']['auc_click']:.3f} / {x['oracle']['auc_click']:.3f}"
        for x in f["runs"] if x["variant"] == "default") + "."
