"""The off-policy benchmark: the gate's estimate of a candidate's click rate next to the simulator's true value.

One seed, two worlds that share every random stream (traffic, members, clicks):

  * World A: week 0 under the bootstrap heuristic; model P (production) is trained on it and serves
    week 1 through a real ``recloop serve`` (simulated clock, exploration setting E: the softmax
    temperature and the catalog-wide share of ``serving.rows``). Candidate C is trained on
    week 1; ``recloop evaluate`` (P in the registry) estimates C's click rate on week 1's eval day
    from P's logs (per-position IPS/SNIPS through ``serving.replay``). P is also replayed on its own
    logs: every weight should be 1, the sanity check that the replay reproduces the server.
  * World B: the same seed and week 0, but week 1 served by C (same setting and page). The same
    members visit at the same times, so C's true click rate on that day is measured on the same
    requests: expected (mean of the truth's click probabilities) and realised (clicks / impressions).

Each setting's click-rate cost is P's expected click rate in world A against the greedy setting's
(temperature 0, no catalog share: what the model would get without exploring, and the setting whose
logs support no estimate). Both worlds get the week-1 item feed before their server starts from a twin simulation of the same
seed (the simulator is deterministic), as tests/test_served_policy.py does.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from common import START, WINDOW_S, table

SCALE, SEED, K = "small", 3, 3
# (temperature, catalog share): the greedy reference first, then epsilon-greedy over the catalog, the default
# and a softer softmax
SETTINGS = ((0.0, 0.0), (0.0, 0.05), (0.0, 0.1), (0.05, 0.05), (0.1, 0.05))
GREEDY = (0.0, 0.0)
WEEK1 = START + dt.timedelta(days=7)
EVAL_DAY = WEEK1 + dt.timedelta(days=6)  # ingest's default --eval-days 1: the week's last day
NOTES = ("IPS/SNIPS are the gate's (`recloop evaluate`, P in the registry, `offpolicy.temperature` and "
         "`offpolicy.catalog_share` = the serving setting); P's row replays P on its own logs through the same code. True expected = mean of the "
         "simulator's click probabilities over the impressions the policy served that day (world A for P, "
         "world B for C); realised = clicked impressions (24-h window) / impressions, interval by request. "
         "Models: default training config, seed 0; week 0 is the bootstrap heuristic's. The estimator is "
         "per-position and conditions on the logged items above each slot, which biases it upward when P and "
         "C disagree (recloop/trainer/offpolicy.py); 'covered' compares the truth with the 95% interval. "
         "Server and replay both embed the catalog for the request's day (item age enters the candidate "
         "tower), so P's replay reproduces the logged propensities up to float32 rounding. The simulator sends "
         "its own seeded request ids, which seed each page's exploration. Explored recall@100 is the gate's "
         "recall over clicks on catalog-wide slots (uniform over every item the row admits).")


def _cli(log: Path, *args: str) -> float:
    """Runs ``recloop ARGS`` (its output to ``log``); returns its wall seconds."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        code = subprocess.run([sys.executable, "-m", "recloop.cli", *args], stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise RuntimeError(f"recloop {args[0]} exited {code}:\n{log.read_text()[-3000:]}")
    return round(time.perf_counter() - t0, 1)


def _ready(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/models/recommender", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def _server(tmp: Path, model: str, world: str, setting: tuple[float, float]):
    """``recloop serve --model`` on a free loopback port, simulated clock from week 1's Monday."""
    from recloop.serving.infra import free_port

    port, output = free_port(), tmp / f"server-{Path(world).name}.txt"
    with open(output, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "recloop.cli", "serve", "--model", model,
                                 "--catalog", world, "--logs", world, "--port", str(port), "--simulated-clock",
                                 "--start-time", f"{WEEK1}T00:00:00Z", "--temperature", str(setting[0]),
                                 "--catalog-share", str(setting[1])],
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{output.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1/models/recommender:predict"
    finally:
        proc.send_signal(signal.SIGTERM)  # flushes the request log
        proc.wait(timeout=60)


def _served_world(tmp: Path, name: str, twin: str, model: str, setting: tuple[float, float]) -> dict[str, Any]:
    """Week 0 under the heuristic, week 1 served by ``model``; returns the week-1 summary and timings."""
    from recloop.simulator import Simulation
    from recloop.simulator.policy import HeuristicPolicy
    from recloop.simulator.served import ServedPolicy

    world = str(tmp / name)
    sim = Simulation(out=world, start=START, scale=SCALE, seed=SEED)
    sim.run_week(0, HeuristicPolicy())
    shutil.copytree(f"{twin}/catalog/dt={WEEK1}", f"{world}/catalog/dt={WEEK1}")
    t0 = time.perf_counter()
    with _server(tmp, model, world, setting) as url:
        started = time.perf_counter() - t0
        policy = ServedPolicy(url, k=K)
        summary = sim.run_week(1, policy)
    served = time.perf_counter() - t0 - started
    return {"world": world, "summary": summary, "server_start_s": round(started, 1), "serve_s": round(served, 1),
            "requests_per_s": round(summary["requests"] / policy.week_stats[1].seconds, 1)}


def _server_requests(world: str, day: dt.date) -> list[dict[str, Any]]:
    """The request records the server logged for ``day`` (not the simulator's week-0 ``part-`` files)."""
    from recloop.features.logs import read_lines

    files = sorted(p for p in Path(world, "requests", f"dt={day}").glob("*.jsonl*") if not p.name.startswith("part-"))
    return [json.loads(line) for p in files for line in read_lines(str(p))]


def _truth(world: str, day: dt.date) -> dict[str, Any]:
    """The served policy's click rate on ``day``: expected (truth's p_click) and realised (clicks in the window)."""
    import pyarrow.parquet as pq

    from recloop.features.logs import read_lines
    from recloop.trainer import offpolicy

    requests = {r["request_id"]: dt.datetime.fromisoformat(r["ts"]).timestamp() for r in _server_requests(world, day)}
    truth = pq.read_table(f"{world}/truth/impressions/week-00001.parquet").to_pydict()
    keep = np.isin(np.array(truth["request_id"]), list(requests))
    rid = np.array(truth["request_id"])[keep]
    items = np.array(truth["item_id"])[keep]
    clicked = set()
    for d in (day, day + dt.timedelta(days=1)):
        for p in sorted(Path(world, "events", f"dt={d}").glob("*.jsonl*")):
            for e in map(json.loads, read_lines(str(p))):
                delay = dt.datetime.fromisoformat(e["ts"]).timestamp() - requests.get(e["request_id"], -1e18)
                if e["event"] == "click" and 0 <= delay <= WINDOW_S:
                    clicked.add((e["request_id"], e["item_id"]))
    clicks = np.array([(r, i) in clicked for r, i in zip(rid, items, strict=True)], dtype=float)
    ones = np.ones(len(clicks))
    realised = offpolicy.estimate(clicks, ones, ones, rid)
    return {"expected": float(np.array(truth["p_click"])[keep].mean()), "realised": realised.logged_rate,
            "realised_ci": list(realised.logged_ci), "impressions": int(keep.sum()), "requests": len(requests)}


def _traffic(a: str, b: str) -> dict[str, Any]:
    """Week 1's requests and members per day in both worlds, and whether the eval day's requests are the same."""
    days, same = [], {}
    for i in range(7):
        day = WEEK1 + dt.timedelta(days=i)
        ra, rb = _server_requests(a, day), _server_requests(b, day)
        days.append({"day": str(day), "requests_a": len(ra), "requests_b": len(rb),
                     "members_a": len({r["member"]["member_id"] for r in ra}),
                     "members_b": len({r["member"]["member_id"] for r in rb})})
        key = lambda rs: sorted((r["ts"], json.dumps(r["member"], sort_keys=True),
                                 json.dumps(r["context"], sort_keys=True)) for r in rs)
        same[str(day)] = key(ra) == key(rb)
    return {"days": days, "same_requests_by_day": same, "same_traffic": all(same.values())}


def _replay(version: str, ingest: str, world: str, setting: tuple[float, float]
            ) -> tuple[dict[str, Any], np.ndarray, Any]:
    """The gate's estimate for ``version`` on ``ingest``'s eval split, computed as ``gate._estimate`` does,
    with the per-impression target probabilities and the rows they belong to."""
    from recloop.serving import replay
    from recloop.serving.rows import RowsConfig
    from recloop.trainer import evaluate, offpolicy
    from recloop.trainer.data import load
    from recloop.trainer.gate_config import OffPolicyConfig

    config = OffPolicyConfig(temperature=setting[0], catalog_share=setting[1])
    rows = load([ingest], 1).eval
    rows = rows.take(evaluate._sample(rows["request_id"], config.max_requests))
    r = replay.target_probabilities(version, rows.columns, world,
                                    RowsConfig(temperature=setting[0], catalog_share=setting[1]))
    est = offpolicy.estimate(rows["label_click"], rows["propensity"], r.probability, rows["request_id"],
                             confidence=config.confidence)
    return est.to_dict() | {"outside_pool": r.outside_pool}, r.probability, rows


def _reproduces(pi: np.ndarray, mu: np.ndarray) -> dict[str, float]:
    """How far a replay of the logging version is from the logged propensities (stored as float32 by ingest)."""
    return {"mismatch_share": float((np.abs(pi - mu) > 1e-9).mean()),
            "float32_mismatch_share": float((pi.astype(np.float32) != mu.astype(np.float32)).mean()),
            "over_0.01_share": float((np.abs(pi - mu) > 0.01).mean()), "max_abs_diff": float(np.abs(pi - mu).max())}


def _support(pi: np.ndarray, mu: np.ndarray, explored: np.ndarray) -> dict[str, float]:
    """What the candidate's estimate rests on: how often C would show what P logged, and where the weight is."""
    w = pi / mu
    return {"explored_share": float(explored.mean()), "c_zero_on_logged": float((pi == 0).mean()),
            "weight_p50": float(np.median(w)), "weight_p99": float(np.quantile(w, 0.99)), "weight_max": float(w.max()),
            "explored_weight_share": float(w[explored].sum() / w.sum()) if w.sum() else 0.0}


def _row(policy: str, est: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    covered = lambda ci: ci[0] is not None and ci[0] <= truth["expected"] <= ci[1]
    return {"policy": policy, "ips": est["ips"], "ips_ci": est["ips_ci"], "snips": est["snips"],
            "snips_ci": est["snips_ci"], "ess": est["ess"], "mean_weight": est["mean_weight"],
            "true_expected": truth["expected"], "realised": truth["realised"], "realised_ci": truth["realised_ci"],
            "ips_covers": covered(est["ips_ci"]), "snips_covers": covered(est["snips_ci"]),
            "snips_error": est["snips"] / truth["expected"] - 1}


def _setting(tmp: Path, twin: str, production: str, registry: str, setting: tuple[float, float]) -> dict[str, Any]:
    """One exploration setting: world A served by P, C trained and gated on it, world B served by C, the truth."""
    eps = f"t{setting[0]}-s{setting[1]}"
    print(f"  setting {eps}: world A served by P", file=sys.stderr)
    t: dict[str, float] = {}
    a = _served_world(tmp, f"A-{eps}", twin, production, setting)
    ingest1, candidate, gate = str(tmp / f"ingest1-{eps}"), str(tmp / f"C-{eps}"), tmp / f"gate-{eps}"
    t["ingest_week1"] = _cli(tmp / "i1.txt", "ingest", "--logs", a["world"], "--start", str(WEEK1), "--end",
                             str(EVAL_DAY), "--out", ingest1)
    t["train_C"] = _cli(tmp / "trainC.txt", "train", "--data", ingest1, "--out", candidate, "--seed", "0")
    Path(f"{gate}.json").write_text(json.dumps({"offpolicy": {"temperature": setting[0],
                                                              "catalog_share": setting[1]}}))
    t["gate"] = _cli(tmp / "gate.txt", "evaluate", "--candidate", candidate, "--data", ingest1, "--registry",
                     registry, "--out", str(gate), "--catalog", a["world"], "--config", f"{gate}.json")
    blessing = json.loads((gate / "blessing.json").read_text())
    gate_est = blessing["offpolicy"]["estimate"]
    print(f"  setting {eps}: replays", file=sys.stderr)
    t0 = time.perf_counter()
    mine, pi_c, rows = _replay(candidate, ingest1, a["world"], setting)
    self_est, pi_p, _ = _replay(production, ingest1, a["world"], setting)
    t["replays"] = round(time.perf_counter() - t0, 1)
    mu = rows["propensity"]
    print(f"  setting {eps}: world B served by C", file=sys.stderr)
    b = _served_world(tmp, f"B-{eps}", twin, candidate, setting)
    truth_p, truth_c = _truth(a["world"], EVAL_DAY), _truth(b["world"], EVAL_DAY)
    truth_p["logged_rate_gate"] = gate_est["logged_rate"]  # the same clicks, counted by ingest
    check = next(c for c in blessing["checks"] if c["kind"] == "offpolicy")
    recall = {who: (blessing["metrics"].get(who) or {}).get("recall@100_explored")
              for who in ("candidate", "production")}
    return {
        "temperature": setting[0], "catalog_share": setting[1],
        "explored_recall_at_100": recall,
        "table": [_row("P (production, replayed on its own logs)", self_est, truth_p),
                  _row("C (candidate, the gate's estimate)", gate_est, truth_c)],
        "gate": {"blessed": blessing["blessed"], "estimate": gate_est,
                 "failed": [{k: c[k] for k in ("kind", "metric", "slice", "value", "reference", "threshold")}
                            for c in blessing["checks"] if c["verdict"] == "fail"],
                 "replay": blessing["offpolicy"]["replay"], "offpolicy_check": {k: check[k] for k in ("verdict", "note")},
                 "in_process_replay_matches": all(bool(np.isclose(mine[k], gate_est[k], rtol=1e-9))
                                                  for k in ("ips", "snips", "ess")),
                 "candidate": blessing["candidate_version"], "production": blessing["production_version"]},
        "self_replay": self_est | _reproduces(pi_p, mu),
        "agreement": _support(pi_c, mu, rows["explored"] == 1),
        "truth": {"P_world_A": truth_p, "C_world_B": truth_c},
        "traffic": _traffic(a["world"], b["world"]),
        "worlds": {w: {k: x["summary"].get(k) for k in ("requests", "impressions", "click_rate", "explored_share",
                                                         "fallbacks")}
                   | {k: x[k] for k in ("server_start_s", "serve_s", "requests_per_s")} for w, x in (("A", a), ("B", b))},
        "eval_split": {"impressions": len(rows), "requests": len(np.unique(rows["request_id"])),
                       "logging_versions": dict(Counter(rows["model_version"].tolist()))},
        "timings_s": t | {"serve_A": a["serve_s"], "serve_B": b["serve_s"]},
    }


def bench_offpolicy(settings: tuple[tuple[float, float], ...] = SETTINGS) -> dict[str, Any]:
    """Every setting of ``settings`` (the greedy one first, measured in any case: each run's click-rate cost is
    against the greedy run of the same invocation, the same P on the same traffic)."""
    from recloop.simulator import simulate

    settings = (GREEDY, *(s for s in settings if s != GREEDY))
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        twin, registry, production = str(tmp / "twin"), str(tmp / "registry"), str(tmp / "P")
        simulate(twin, weeks=2, start=START, scale=SCALE, seed=SEED)
        timings["ingest_week0"] = _cli(tmp / "ingest0.txt", "ingest", "--logs", twin, "--start", str(START), "--end",
                                       str(START + dt.timedelta(days=6)), "--out", str(tmp / "ingest0"))
        timings["train_P"] = _cli(tmp / "trainP.txt", "train", "--data", str(tmp / "ingest0"), "--out", production,
                                  "--seed", "0")
        _cli(tmp / "push.txt", "push", "--model", production, "--registry", registry, "--force",
             "--note", "bench/offpolicy: production")
        runs = [_setting(tmp, twin, production, registry, setting) for setting in settings]
    greedy = runs[0]["truth"]["P_world_A"]["expected"]
    for run in runs:
        run["cost_vs_greedy"] = run["truth"]["P_world_A"]["expected"] / greedy - 1
    timings["total"] = round(time.perf_counter() - t_all, 1)
    return {"scale": SCALE, "seed": SEED, "page": {"rows": 4, "k": K}, "settings": [list(x) for x in settings],
            "week0_policy": "bootstrap heuristic (epsilon-greedy 0.1 over the catalog)", "eval_day": str(EVAL_DAY), "runs": runs,
            "timings_s": timings}


def _name(run: dict[str, Any]) -> str:
    t, share = run["temperature"], run["catalog_share"]
    return f"temperature {t:g}, catalog share {share:g}" + (" (greedy)" if not t and not share else "")


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of an off-policy result: the settings side by side (what exploring costs and
    what it buys), then per setting the estimates against the truth."""
    f = r["figures"]
    ci = lambda v, c: f"{v:.4f} [{c[0]:.4f}, {c[1]:.4f}]" if c and c[0] is not None else f"{v:.4f}"
    summary = []
    for run in f["runs"]:
        p, c = run["truth"]["P_world_A"]["expected"], run["table"][1]
        rec = run["explored_recall_at_100"]
        summary.append([_name(run), f"{run['worlds']['A']['explored_share']:.1%}", f"{p:.4f}",
                        f"{run['cost_vs_greedy']:+.1%}", f"{c['ess']:,.0f}", ci(c["snips"], c["snips_ci"]),
                        f"{c['realised']:.4f}", f"{c['snips_error']:+.1%}", "yes" if c["snips_covers"] else "no",
                        run["gate"]["offpolicy_check"]["verdict"],
                        "–" if rec["candidate"] is None else f"{rec['candidate']:.3f} / {rec['production']:.3f}"])
    out = ["## Off-policy estimate vs the simulator's truth, per exploration setting", "",
           (f"`{f['scale']}` scale, seed {f['seed']}, page {f['page']['rows']} rows x {f['page']['k']}; week 0 under the "
            f"{f['week0_policy']}; estimates on week 1's eval day ({f['eval_day']}). Whole run "
            f"{f['timings_s']['total']} s."), "",
           table(["setting", "catalog-wide slots", "P's expected CTR (world A)", "click-rate cost vs greedy (same run)",
                  "C's ESS", "C's SNIPS [95%]", "C's true expected CTR", "SNIPS vs truth", "covered",
                  "gate's off-policy check", "explored recall@100 C / P"], summary), ""]
    for run in f["runs"]:
        rows = [[x["policy"], ci(x["ips"], x["ips_ci"]), ci(x["snips"], x["snips_ci"]), f"{x['ess']:,.1f}",
                 f"{x['mean_weight']:.3f}", f"{x['true_expected']:.4f}", ci(x["realised"], x["realised_ci"]),
                 f"IPS {'yes' if x['ips_covers'] else 'no'}, SNIPS {'yes' if x['snips_covers'] else 'no'}",
                 f"{x['snips_error']:+.1%}"] for x in run["table"]]
        sr, ag = run["self_replay"], run["agreement"]
        check, ev, t = run["gate"]["offpolicy_check"], run["eval_split"], run["traffic"]
        out += [f"### {_name(run)}", "",
                table(["policy", "IPS [95% CI]", "SNIPS [95% CI]", "ESS", "mean weight", "true expected",
                       "realised [95% CI]", "truth covered?", "SNIPS vs truth"], rows), "",
                (f"Eval split: {ev['impressions']:,} impressions, {ev['requests']:,} requests, logged by P. Gate: "
                 f"off-policy check {check['verdict']} ({check['note']}); blessed: {run['gate']['blessed']}"
                 + "".join(f"; failed {c['kind']} {c['metric']} [{c['slice']}]: {c['value']:.4f} vs production "
                           f"{c['reference']:.4f} (threshold {c['threshold']:.4f})" for c in run["gate"]["failed"]
                           if c["value"] is not None and c["reference"] is not None) + ". "
                 f"Week-1 traffic of A and B identical request by request: {t['same_traffic']}."), "",
                (f"P replayed on its own logs: {sr['mismatch_share']:.1%} of impressions with |pi - mu| > 1e-9, "
                 f"{sr['float32_mismatch_share']:.1%} still different after float32 rounding (ingest stores mu as "
                 f"float32), {sr['over_0.01_share']:.1%} off by more than 0.01 (max {sr['max_abs_diff']:.3f})."), "",
                (f"C against P's logs: {ag['c_zero_on_logged']:.1%} of logged items C would never show (pi = 0); "
                 f"weights pi / mu: median {ag['weight_p50']:.2f}, 99th percentile {ag['weight_p99']:.1f}, max "
                 f"{ag['weight_max']:.0f}; the catalog-wide slots ({ag['explored_share']:.1%} of impressions) carry "
                 f"{ag['explored_weight_share']:.0%} of the weight."), ""]
    out.append(r["notes"])
    return "\n".join(out)


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of an off-policy result's figures: per setting, the candidate's SNIPS against
    the truth with its ESS, and the click-rate cost."""
    return "**Off-policy**: " + "; ".join(
        f"{_name(run)}: candidate SNIPS {run['table'][1]['snips_error']:+.1%} from the truth "
        f"(ESS {run['table'][1]['ess']:,.0f}), click-rate cost {run['cost_vs_greedy']:+.1%}"
        for run in f["runs"]) + "."
