"""Training windows: ``recloop train`` on the newest 1, 2, 4 and 8 default-scale weeks, same eval day.

A default-scale world is simulated for nine weeks (week 0 is the bootstrap week and is not used); weeks 1-8 are
ingested one by one as the weekly run does (``--eval-days 1``), and each window trains on the newest N of them
with the default config. The evaluation set is the same for every window: week 8's eval day. Training streams
its examples from the files (``trainer.data``), so its peak memory should not follow the window; the issue's
target is 4 weeks at most 1.3x the peak of 1 week, and 8 weeks training on this machine. Each run is a
subprocess whose own peak RSS is recorded; quality is read from the model's ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import MEASURED, ingest_week, run_timed, table

SCALE = "default"
WINDOWS = (1, 2, 4, 8)
TARGET_RATIO = 1.3  # peak RSS of 4 weeks over 1 week
NOTES = ("`recloop simulate --scale default --weeks W+1 --seed 0`, W the largest window; weeks 1..W each "
         "`recloop ingest` with `--eval-days 1`; then `recloop train --data <the newest N weeks>` with the default "
         "config (early stopping on the last training day), so every window is evaluated on the same day (week W's "
         "last). Process seconds: the whole subprocess; in-job seconds: the model card's `training_seconds` (read, "
         "checks, both models, export, index, offline evaluation). Peak RSS: the process's own `ru_maxrss`. "
         "Quality: the model's explored recall@100 over the catalog (± one standard error), explored click AUC and "
         "debiased NDCG@10, and the model over popularity on the same requests (paired, 95% interval).")


def _quality(export: Path) -> dict[str, Any]:
    metrics = json.loads((export / "metrics.json").read_text())
    card = json.loads((export / "model_card.json").read_text())
    model = metrics["scorers"]["model"]
    explored, ranking = model["retrieval"]["explored"]["overall"], model["ranking"]["overall"]
    ratios = metrics["ratios"]
    return {
        "explored_recall@100": explored["recall@100"], "explored_recall@100_se": explored["recall@100_se"],
        "explored_positives": explored["positives"], "auc_click_explored": ranking["auc_click_explored"],
        "ndcg@10_debiased": ranking["ndcg@10_debiased"],
        "vs_popularity": {figure: {k: ratios[figure]["model"][k] for k in ("ratio", "low", "high")}
                          for figure in ("retrieval_recall@100_explored", "ranking_ndcg@10_debiased")},
        "train_examples": card["data"]["train_examples"], "eval_examples": card["data"]["eval_examples"],
        "epochs": {m: len(card["training"][m]["history"]) for m in ("retrieval", "ranking")},
        "best_epoch": {m: card["training"][m]["best_epoch"] for m in ("retrieval", "ranking")},
        "eval_day": card["data"]["span"]["eval_start"][:10], "job_s": card["training_seconds"]}


def bench_window(windows: tuple[int, ...] = WINDOWS, work: str | None = None) -> dict[str, Any]:
    """Simulates, ingests and trains each window; the figures for results/window.json.

    Args:
      work: a folder to keep the world and the ingested weeks in, reusing what an earlier run of the same
        commands left there (the simulation is seeded, so they are the same files); default a temporary one.
    """
    t0 = time.perf_counter()
    newest = max(windows)
    with contextlib.nullcontext(work) if work else tempfile.TemporaryDirectory() as tmp:
        logs, simulate_s = f"{tmp}/logs", None
        if _simulated(logs, newest + 1):
            print(f"reusing the world in {logs}", file=sys.stderr)
        else:
            print(f"simulating {SCALE} ({newest + 1} weeks) ...", file=sys.stderr)
            shutil.rmtree(logs, ignore_errors=True)
            simulate_s = run_timed(["recloop", "simulate", "--out", logs, "--scale", SCALE, "--weeks",
                                    str(newest + 1), "--seed", "0"])
        weeks = {}
        for week in range(1, newest + 1):
            weeks[week] = f"{tmp}/week{week}"
            if not Path(weeks[week], "summary.json").exists():  # ingest publishes its folder whole
                print(f"ingesting week {week} ...", file=sys.stderr)
                ingest_week(logs, weeks[week], week, 1)
        runs = []
        for n in windows:
            export, rss = Path(f"{tmp}/model{n}"), f"{tmp}/model{n}.rss"
            shutil.rmtree(export, ignore_errors=True)
            data = [arg for week in range(newest - n + 1, newest + 1) for arg in ("--data", weeks[week])]
            print(f"training on {n} week(s) ...", file=sys.stderr)
            wall = run_timed([sys.executable, "-c", MEASURED, rss, "train", *data, "--out", str(export)])
            run = {"weeks": n, "process_s": round(wall, 1), "peak_rss_mib": round(int(Path(rss).read_text()) / 1024),
                   **_quality(export)}
            runs.append(run)
            print(f"  {n} week(s): {run['process_s']} s, {run['peak_rss_mib']} MiB, explored recall@100 "
                  f"{run['explored_recall@100']:.4f}", file=sys.stderr)
    one = runs[0]["peak_rss_mib"]
    four = next((r["peak_rss_mib"] for r in runs if r["weeks"] == 4), None)
    return {"scale": SCALE, "windows": list(windows), "simulate_s": simulate_s and round(simulate_s, 1),
            "runs": runs,
            "rss_ratio_4_to_1": round(four / one, 3) if four else None,
            "rss_target_met": four is not None and four / one <= TARGET_RATIO,
            "same_eval_day": len({run["eval_day"] for run in runs}) == 1,
            "total_s": round(time.perf_counter() - t0)}


def _simulated(logs: str, weeks: int) -> bool:
    """Whether ``logs`` holds the world this benchmark simulates: its scale, seed and number of weeks."""
    path = Path(logs, "simulation.json")
    if not path.exists():
        return False
    summary = json.loads(path.read_text())
    params = summary["params"]
    return (params["scale"], params["seed"], params["drifts"], len(summary["weeks"])) == (SCALE, 0, [], weeks)


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _ratio(r: dict[str, float]) -> str:
    return f"{r['ratio']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a window result."""
    f = r["figures"]
    one = f["runs"][0]
    rows = [[f"{run['weeks']} week(s)", f"{run['train_examples']:,}", run["process_s"], run["job_s"],
             f"{run['process_s'] / one['process_s']:.2f}", f"{run['peak_rss_mib']:,}",
             f"{run['peak_rss_mib'] / one['peak_rss_mib']:.2f}",
             f"{_r(run['explored_recall@100'])} ± {_r(run['explored_recall@100_se'])}",
             _r(run["auc_click_explored"]), _r(run["ndcg@10_debiased"]),
             _ratio(run["vs_popularity"]["retrieval_recall@100_explored"]),
             _ratio(run["vs_popularity"]["ranking_ndcg@10_debiased"]),
             f"{run['epochs']['retrieval']}/{run['epochs']['ranking']}"] for run in f["runs"]]
    verdict = ("met" if f["rss_target_met"] else "**missed**") if f["rss_ratio_4_to_1"] is not None else "not measured"
    return "\n".join([
        "## Training windows: 1/2/4/8 default weeks, streamed", "",
        (f"`{f['scale']}` scale, the newest N of weeks 1-{max(f['windows'])}, one eval day for all "
         f"({one['eval_day']}; the same in every run: {f['same_eval_day']}); whole benchmark {f['total_s']} s. Peak RSS of 4 weeks over 1 week: **{f['rss_ratio_4_to_1']}** (target at most "
         f"{TARGET_RATIO}: {verdict})."), "",
        table(["window", "train examples", "process s", "in-job s", "time / 1 week", "peak RSS MiB",
               "RSS / 1 week", "explored recall@100", "explored AUC click", "NDCG@10 debiased",
               "recall vs popularity", "NDCG vs popularity", "epochs (retrieval/ranking)"], rows), "",
        r["notes"]])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a window result."""
    runs = {run["weeks"]: run for run in f["runs"]}
    last = runs[max(runs)]
    eight = "" if 8 in runs else " (8 weeks not measured in this run)"
    return (f"**Training windows** (streamed, default weeks): peak RSS {runs[min(runs)]['peak_rss_mib']:,} MiB for "
            f"{min(runs)} week, {last['peak_rss_mib']:,} MiB for {last['weeks']} weeks "
            f"({f['rss_ratio_4_to_1']}x at 4 weeks, target at most {TARGET_RATIO}); {last['weeks']} weeks train in "
            f"{last['process_s'] / 60:.1f} min{eight}.")
