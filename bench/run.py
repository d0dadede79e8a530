"""recloop's benchmarks: measure on this machine, record, regenerate bench/README.md.

Usage:
    uv run python bench/run.py simulate      # run one benchmark (writes bench/results/simulate.json)
    uv run python bench/run.py ingest        # ingest throughput, linearity, reference join (~6 min)
    uv run python bench/run.py validate      # validate a default-scale week (~3 min)
    uv run python bench/run.py detection     # each injected bug on unseen seeds, clean distances (~12 min)
    uv run python bench/run.py weekly        # `recloop run` on one default-scale week, per task (~20 min)
    uv run python bench/run.py train         # training quality vs baseline and oracle, time (~15 min)
    uv run python bench/run.py ablation      # the learning levers one at a time vs the oracle and hand rule (~40 min)
    uv run python bench/run.py serving       # four servers under hey at 1, 8, 32 clients (10k items), the code before in-process, 1M items (~13 min)
    uv run python bench/run.py offpolicy     # the gate's off-policy estimate vs the simulator's truth (~13 min)
    uv run python bench/run.py closed_loop   # `recloop demo` (defaults): online click rate week after week (~10-20 min)
    uv run python bench/run.py closed_loop_gate   # the demo under a gate that compares explored views (~15 min)
    uv run python bench/run.py scaling       # ingest, validate (2/4/8 weeks), train (1/2/4 weeks) (~60 min, ~11 GB)
    uv run python bench/run.py window        # training on the newest 1/2/4/8 default weeks: time, RSS, quality (~80 min)
    uv run python bench/run.py faults        # the fault and security tests, 10k fuzzed requests (~5 min)
    uv run python bench/run.py audit         # pip-audit over uv.lock's pins, findings and decisions (~1.5 min)
    uv run python bench/run.py report        # only regenerate bench/README.md from bench/results/

Every result file holds the command that produced it, the date and the machine,
so a figure in the README can always be traced back and re-measured. The README
is generated from the result files and never edited by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ablation
import audit
import closed_loop
import detection
import faults
import ingest  # bench/*.py (bench/ is on sys.path when this file runs as a script)
import offpolicy
import realdata
import scaling
import serving
import train
import validate
import weekly
import window
from common import machine, table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _record(name: str, command: str, figures: dict[str, object], notes: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({
        "benchmark": name, "command": command, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(), "figures": figures, "notes": notes,
    }, indent=2) + "\n")
    return path


def bench_simulate(repeats: int) -> Path:
    """Wall time of ``recloop simulate --scale default --weeks 1`` (~1M impressions), end to end."""
    runs = []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            argv = ["recloop", "simulate", "--out", out, "--scale", "default", "--weeks", "1", "--seed", "0"]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = json.loads((Path(out) / "simulation.json").read_text())
            size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
            runs.append({"wall_s": round(wall, 2), "cpu_s": round(after.ru_utime + after.ru_stime
                                                                    - before.ru_utime - before.ru_stime, 2),
                         "peak_rss_mib": round(after.ru_maxrss / 1024, 1), "output_mib": round(size / 2**20, 1),
                         "requests": result["totals"]["requests"], "impressions": result["totals"]["impressions"],
                         "events": result["totals"]["events"]})
        print(f"run {i + 1}/{repeats}: {runs[-1]['wall_s']} s", file=sys.stderr)
    walls = sorted(r["wall_s"] for r in runs)
    best = runs[0]
    figures = {
        "runs": runs,
        "median_wall_s": walls[len(walls) // 2],
        "impressions": best["impressions"],
        "impressions_per_s": round(best["impressions"] / walls[len(walls) // 2]),
        "budget_s": 120,
    }
    cmd = "recloop simulate --out DIR --scale default --weeks 1 --seed 0"
    return _record("simulate", f"uv run python bench/run.py simulate --repeats {repeats}  # times: {cmd}", figures,
                   "Whole command: interpreter start, world, traffic, policy, behaviour, JSON + gzip writes, "
                   "truth parquet. The issue's budget is 120 s on a 2-core machine.")


def _section_simulate(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a simulate result."""
    f = r["figures"]
    rows = [[i + 1, run["wall_s"], run["cpu_s"], run["peak_rss_mib"], f"{run['impressions']:,}", run["output_mib"]]
            for i, run in enumerate(f["runs"])]
    return "\n".join([
        "## Simulator: one default-scale week",
        "",
        (f"Median wall time **{f['median_wall_s']} s** for {f['impressions']:,} impressions "
        f"({f['impressions_per_s']:,} impressions/s); budget {f['budget_s']} s."),
        "",
        table(["run", "wall s", "cpu s", "peak RSS MiB", "impressions", "output MiB"], rows),
        "",
        r["notes"],
    ])


# benchmarks that live in their own module: (measure, notes for the README)
MODULES = {
    "ingest": (ingest.bench_ingest, ingest.NOTES),
    "validate": (validate.bench_validate, validate.NOTES),
    "detection": (detection.bench_detection, detection.NOTES),
    "weekly": (weekly.bench_weekly, weekly.NOTES),
    "serving": (serving.bench_serving, serving.NOTES),
    "train": (train.bench_train, train.NOTES),
    "ablation": (ablation.bench_ablation, ablation.NOTES),
    "realdata": (realdata.bench, realdata.NOTES),
    "offpolicy": (offpolicy.bench_offpolicy, offpolicy.NOTES),
    "closed_loop": (closed_loop.bench_closed_loop, closed_loop.NOTES),
    "closed_loop_gate": (closed_loop.bench_closed_loop_gate, closed_loop.GATE_NOTES),
    "scaling": (scaling.bench_scaling, scaling.NOTES),
    "window": (window.bench_window, window.NOTES),
    "faults": (faults.bench_faults, faults.NOTES),
    "audit": (audit.bench_audit, audit.NOTES),
}


def bench_module(name: str) -> Path:
    """Runs one of ``MODULES`` (see bench/<name>.py) and records its figures."""
    measure, notes = MODULES[name]
    return _record(name, f"uv run python bench/run.py {name}", measure(), notes)


def bench_ablation_seeds(seeds: tuple[int, ...]) -> Path:
    """The ablation on ``seeds`` only (one seed is ~25 min on 2 cores), merged with the recorded runs of the
    other seeds; the command says which seeds were measured when."""
    path = RESULTS / "ablation.json"
    before = json.loads(path.read_text()) if path.exists() else None
    kept = [r for r in (before["figures"]["runs"] if before else []) if r["seed"] not in seeds]
    figures = ablation.bench_ablation(seeds)
    if kept and before["figures"]["variants"] != figures["variants"]:
        raise SystemExit("the recorded ablation ran other variants: rerun every seed")
    figures["runs"] = sorted(kept + figures["runs"], key=lambda r: r["seed"])  # stable: variant order kept
    merged = "" if not kept else f" (merged with seed(s) {sorted({r['seed'] for r in kept})} of " \
        f"{before['date']}: {before['command']})"
    command = f"uv run python bench/run.py ablation --seeds {','.join(map(str, seeds))}{merged}"
    return _record("ablation", command, figures, ablation.NOTES)


def bench_offpolicy_settings(settings: tuple[tuple[float, float], ...]) -> Path:
    """The off-policy benchmark on ``settings`` only (with the greedy reference, ~9 min a setting), merged with the
    recorded runs of the others (each keeps its cost against its own invocation's greedy run)."""
    path = RESULTS / "offpolicy.json"
    before = json.loads(path.read_text()) if path.exists() else None
    figures = offpolicy.bench_offpolicy(settings)
    measured = {(r["temperature"], r["catalog_share"]) for r in figures["runs"]}
    kept = []
    for r in before["figures"]["runs"] if before else []:
        if "temperature" not in r or (r["temperature"], r["catalog_share"]) in measured:
            continue  # measured now, or a run of the epsilon-greedy policy before it
        greedy = before["figures"]["runs"][0]["truth"]["P_world_A"]["expected"]  # that invocation's greedy run
        kept.append({**r, "cost_vs_greedy": r.get("cost_vs_greedy", r["truth"]["P_world_A"]["expected"] / greedy - 1)})
    order = {s: i for i, s in enumerate(offpolicy.SETTINGS)}
    figures["runs"] = sorted(figures["runs"] + kept, key=lambda r: order.get((r["temperature"], r["catalog_share"]),
                                                                               len(order)))
    figures["settings"] = [[r["temperature"], r["catalog_share"]] for r in figures["runs"]]
    merged = "" if not kept else (f" (merged with the runs of {before['date']}: {before['command']}, whole run "
                                  f"{before['figures']['timings_s']['total']} s)")
    arg = ",".join(f"{t:g}:{s:g}" for t, s in settings)
    return _record("offpolicy", f"uv run python bench/run.py offpolicy --settings {arg}{merged}", figures,
                   offpolicy.NOTES)


# name -> section(result, results folder for its PNGs) -> markdown, in the README's order
SECTIONS: dict[str, Callable[[dict[str, Any], Path], str]] = {
    "serving": serving.section,
    "scaling": scaling.section,
    "window": window.section,
    "ingest": ingest.section,
    "validate": validate.section,
    "detection": detection.section,
    "weekly": weekly.section,
    "train": train.section,
    "ablation": ablation.section,
    "realdata": realdata.section,
    "closed_loop": closed_loop.section,
    "closed_loop_gate": closed_loop.gate_section,
    "offpolicy": offpolicy.section,
    "simulate": _section_simulate,
    "faults": faults.section,
    "audit": audit.section,
}

# name -> headline(figures) -> one line of the headline list at the top of the README (listed in SECTIONS' order)
HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "serving": serving.headline,
    "scaling": scaling.headline,
    "window": window.headline,
    "ingest": ingest.headline,
    "detection": detection.headline,
    "weekly": weekly.headline,
    "train": train.headline,
    "ablation": ablation.headline,
    "realdata": realdata.headline,
    "closed_loop": closed_loop.headline,
    "offpolicy": offpolicy.headline,
    "faults": faults.headline,
    "audit": audit.headline,
}


def headlines(found: dict[str, dict[str, Any]]) -> list[str]:
    """The headline list, one line per benchmark that has one, in the README's order."""
    return [f"- {HEADLINES[name](found[name]['figures'])}" for name in SECTIONS if name in found and name in HEADLINES]


# name -> block(every result by benchmark) -> markdown between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
# in the top-level README
README_BLOCKS: dict[str, Callable[[dict[str, dict[str, Any]]], str]] = {
    "headlines": lambda found: "\n".join(headlines(found)),
    "closed_loop": lambda found: closed_loop.readme_block(found["closed_loop"]),
}


def readme_blocks(text: str, found: dict[str, dict[str, Any]]) -> str:
    """``text`` (the top-level README) with every marked block regenerated from the results."""
    for name, block in README_BLOCKS.items():
        begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if begin not in text:
            continue
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{block(found)}\n{end}{tail}"
    return text


def report(results: Path = RESULTS, out: Path = HERE / "README.md", readme: Path | None = HERE.parent / "README.md"
           ) -> Path:
    """Regenerates bench/README.md (and the PNGs beside the results) from every result file, and the marked
    blocks of the top-level ``readme`` (None: left alone)."""
    found = {r["benchmark"]: (path, r) for path in sorted(results.glob("*.json"))
             for r in [json.loads(path.read_text())]}
    parts = ["# recloop benchmarks", "",
             "Generated by `uv run python bench/run.py report` from `bench/results/*.json`; do not edit by hand.",
             "Each section names the command that measured it, when, and on what machine.", "",
             "## Headline figures", ""]
    parts += [*headlines({name: r for name, (_, r) in found.items()}), ""]
    for name, section in SECTIONS.items():
        if name not in found:
            continue
        path, r = found[name]
        m = r["machine"]
        parts += [section(r, results), "",
                  (f"Measured {r['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), "
                   f"Python {m['python']}. Command: `{r['command']}`. "
                   f"Raw: [`results/{path.name}`](results/{path.name})."),
                  ""]
    out.write_text("\n".join(parts))
    if readme is not None:
        readme.write_text(readme_blocks(readme.read_text(), {name: r for name, (_, r) in found.items()}))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", choices=["simulate", *MODULES, "report"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", help="ablation only: comma-separated seeds to measure, merged with the "
                                        "recorded runs of the others")
    parser.add_argument("--settings", help="offpolicy only: comma-separated TEMPERATURE:CATALOG_SHARE settings to "
                                           "measure (with the greedy reference), merged with the recorded others")
    parser.add_argument("--windows", help="window only: comma-separated window sizes in weeks (default 1,2,4,8)")
    parser.add_argument("--work", help="window only: a folder that keeps the simulated weeks and their ingests "
                                       "between runs (reused when they are the ones this benchmark makes)")
    args = parser.parse_args(argv)
    if args.benchmark == "window" and (args.windows or args.work):
        windows = tuple(int(x) for x in args.windows.split(",")) if args.windows else window.WINDOWS
        path = _record("window", f"uv run python bench/run.py window --windows {','.join(map(str, windows))}",
                       window.bench_window(windows, args.work), window.NOTES)
        print(f"wrote {path}", file=sys.stderr)
    elif args.benchmark == "offpolicy" and args.settings:
        settings = tuple(tuple(float(x) for x in s.split(":")) for s in args.settings.split(","))
        print(f"wrote {bench_offpolicy_settings(settings)}", file=sys.stderr)  # type: ignore[arg-type]
    elif args.benchmark == "ablation" and args.seeds:
        print(f"wrote {bench_ablation_seeds(tuple(int(x) for x in args.seeds.split(',')))}", file=sys.stderr)
    elif args.benchmark == "simulate":
        print(f"wrote {bench_simulate(args.repeats)}", file=sys.stderr)
    elif args.benchmark in MODULES:
        print(f"wrote {bench_module(args.benchmark)}", file=sys.stderr)
    print(f"wrote {report()}", file=sys.stderr)
    print(shlex.join(sys.argv), file=sys.stderr)


if __name__ == "__main__":
    main()
