"""The real-data check: public implicit feedback with a time split, the model against popularity.

Data: Last.fm HetRec 2011 (hetrec2011-lastfm-2k, GroupLens), the tagging events
``user_taggedartists`` (who tagged which artist with which tag, dated to the
month), ``artists.dat`` and ``tags.dat``; provenance in ``/tmp/realdata/SOURCE.md``.
MovieLens is not used. The data goes in the way a user bringing real logs would
bring it: ``convert`` writes request and event logs and an item feed in the
contract's layout (docs/architecture.md, "Data contract"; the simulator's
``logwriter`` layout), and then only the product's commands run on them:
``recloop ingest`` over ONE long span whose last ``EVAL_DAYS`` days are eval
(the time split at ``SPLIT``), ``recloop train`` with the defaults and with
``--config`` variants.

Conversion choices:

- one interaction = one distinct (member, artist) pair, stamped with the month
  of its first tagging event; the 5 bogus rows dated before 2005 are dropped;
- dates have month resolution, so each interaction is spread over its month by
  a hash of (member, artist): day of month, hour and minute come from
  ``blake2b("member:artist")``; hour of day and day of week are therefore
  noise, not behaviour, and the order of one member's interactions within a
  month is arbitrary;
- one logged request per interaction (unique ``request_id``), with one
  impression at position 0, propensity 1, of the interacted artist, and one
  ``click`` event 30 s later (same day, inside the 24 h attribution window);
  no ``start``/``complete``/``like``: tagging says nothing about them;
- the features are declared for this data (``bench/lastfm_features.yaml``,
  ``RECLOOP_FEATURES``): members and requests have none besides the member id,
  and an artist has one, ``tag``, its most frequent tag among tagging events
  dated before ``SPLIT`` (ties: lowest tag id; ``untagged`` when none: no
  leakage from eval time), and no release date (the declaration says
  ``release_dates: false``: no model reads ``age_days`` and ``recloop validate``
  accepts it absent, with its default config);
- the member's history: ``recent_artists``, the (up to) ``HISTORY`` artists the
  member interacted with before the request, newest first, sent with the request
  as a client (or the server's history store) would and logged with it; the
  order inside a month follows the hashed instants above. ``--history 0`` drops
  the feature from the declaration and the logs (the "no member history" row);
- item feed: every artist (artists.dat, plus tagged ids that artists.dat lacks);
  the contract's logging facts the data does not have are constants
  (``PLACEHOLDERS``: score, row, model version).

Measured: for every eval interaction, whether its artist is in the top K of the
whole catalog (the trainer's catalog: every artist shown in the span) for the
exported model (its saved towers, re-scored here per interaction and checked
against the trainer's ``metrics.json``), the trainer's popularity baseline, and
recent popularity (plain counts over the last W days before the split, W chosen
on the last training month). Hit rates with binomial standard errors; ratios
with a paired bootstrap interval over eval interactions (and, more
conservative, over members). The trainer's logged recall@10/@100 is checked to
equal these hit rates (one positive per eval request).

``VARIANTS`` are ``recloop train --config`` overrides measured one at a time on
the eval year; since comparing them there flatters the best, ``VALIDATED`` of
them are also compared on a validation split that ends at the split (the same
logs ingested up to 2010-05-31, May 2010 as eval) and the one chosen there is
reported on the eval year. ``recloop validate`` runs on the ingest output to
record what the weekly pipeline's check would say about such data.

Get the data: ``git clone https://github.com/rafaelpossas/admusic`` (commit ``afcc86f``) and point
``RECLOOP_REALDATA`` at its ``data/`` folder (default ``/tmp/realdata/lastfm_hetrec2011``).
Run: ``uv run python bench/run.py realdata`` (every variant on the working tree, ~25 min on 2 cores; results
to ``bench/results/realdata.json`` and its README section), or ``uv run python bench/realdata.py --commit HEAD``
(``--commit`` freezes that commit's recloop/, ``--reuse`` re-measures what ``--work`` holds, ``--variants`` and
``--extra`` pick variants; results to ``/tmp/realdata/results.json``).
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from common import MEASURED, machine, table

SRC = Path(os.environ.get("RECLOOP_REALDATA", "/tmp/realdata/lastfm_hetrec2011"))  # the HetRec files
WORK = Path(os.environ.get("RECLOOP_REALDATA_WORK", "/tmp/realdata/work"))
REPO = Path(__file__).resolve().parent.parent
RESULTS_JSON = Path("/tmp/realdata/results.json")

SPAN_START = dt.date(2005, 8, 1)  # first month with real data
SPLIT = dt.date(2010, 6, 1)  # first eval day: ~80/20 of the interactions
SPAN_END = dt.date(2011, 5, 31)  # last month with data (2011-05)
EVAL_DAYS = (SPAN_END - SPLIT).days + 1  # recloop ingest --eval-days: 365
VALIDATION_START = dt.date(2010, 5, 1)  # the last training month chooses recent popularity's window
WINDOWS = (7, 14, 30, 61, 91, 182, 365, 730, None)  # candidate W in days (None: all training data)
KS = (10, 100)
BOOTSTRAP = 2000
SEED = 0

MODEL_VERSION = "import-lastfm-hetrec2011"
ROW = "import"
CLICK_DELAY_S = 30
UNTAGGED = "untagged"
# required by the contract, absent from the data: constants (friction, listed in the results)
DECLARATION = Path(__file__).resolve().parent / "lastfm_features.yaml"  # RECLOOP_FEATURES of every step
HISTORY_FEATURE, HISTORY = "recent_artists", 20  # the declared list feature and its max_length
PLACEHOLDERS = {
    "impression.score": 0.0,
    "impression.row": ROW,
    "request.model_version": MODEL_VERSION,
}

# measured one at a time against the defaults; "before" is the configuration before issue #21
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "before #21 (dot products, 50 OOV buckets, no id L2, 12 epochs, no early stopping)": {
        "retrieval": {"normalize": False, "temperature": None, "oov_buckets": 50, "id_l2": 0.0, "epochs": 12},
        "validation_days": 0},
    "dot products (no cosine, temperature 1)": {"retrieval": {"normalize": False, "temperature": None}},
    "no L2 on ids": {"retrieval": {"id_l2": 0.0}},
    "50 OOV buckets": {"retrieval": {"oov_buckets": 50}},
    "recency weights (90-day half-life)": {"retrieval": {"recency_half_life_days": 90.0}},
    "embedding 64": {"retrieval": {"embedding_dim": 64}},
}
# The variants above are compared on the eval year itself, so the best of them is an optimistic figure. The
# honest one: choose among these on a validation split that ends at SPLIT (the same logs ingested up to
# 2010-05-31, its last month as eval), then read the chosen one's figure on the eval year.
VALIDATED = ("default", "no L2 on ids", "recency weights (90-day half-life)", "embedding 64")
VALIDATION_END = SPLIT - dt.timedelta(days=1)
VALIDATION_EVAL_DAYS = (VALIDATION_END - VALIDATION_START).days + 1  # 31: eval = 2010-05
VALIDATION_RECENT_START = dt.date(2010, 4, 1)  # recent popularity's W, for the validation split, chosen on 2010-04

NOTES = ("Last.fm HetRec 2011 tagging events as implicit feedback: one logged request per distinct (member, artist) "
         "pair at its first tagging month, spread over the month by a hash (hour and day of week are noise), one "
         "impression (position 0, propensity 1) and one click. One `recloop ingest` span "
         f"{SPAN_START}..{SPAN_END} with `--eval-days {EVAL_DAYS}` (eval = {SPLIT}..{SPAN_END}), then `recloop train` "
         "per variant. Hit@K: the eval interaction's artist in the top K of the whole catalog (every artist in the "
         "span), ties broken at random in expectation; ± one binomial standard error. Ratios: paired bootstrap "
         f"({BOOTSTRAP} resamples of eval interactions, seed {SEED}), 95% percentile interval; the member-level "
         "bootstrap interval is in the JSON. Recent popularity: plain counts over the last W days before the split, "
         f"W chosen on {VALIDATION_START:%Y-%m} (the last training month) by hit@100. Train seconds: `train.run`'s "
         "`training_seconds` (both models, export, evaluation); process seconds add interpreter start and imports. "
         "2 shared CPU cores.")


# ---------------------------------------------------------------- conversion

def _unit(user: str, artist: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{user}:{artist}".encode(), digest_size=8).digest(), "big")


def spread(user: str, artist: str, year: int, month: int) -> dt.datetime:
    """A deterministic instant inside the month for one interaction: day, hour and minute from a hash.

    Minutes stop at 58 so the click, ``CLICK_DELAY_S`` later, stays in the same day and hour.
    """
    h = _unit(user, artist)
    days = calendar.monthrange(year, month)[1]
    day, hour, minute = h % days + 1, (h >> 16) % 24, (h >> 32) % 59
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def read_tagging(src: Path) -> list[tuple[str, str, int, dt.date]]:
    """``(user, artist, tag, date)`` per tagging row, bogus pre-2005 rows dropped."""
    rows = []
    with open(src / "user_taggedartists_merged.tsv", newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            year = int(r["year"])
            if year < 2005:  # the 5 rows dated 1956/1957/1979
                continue
            rows.append((r["userID"], r["artistID"], int(r["tagID"]), dt.date(year, int(r["month"]), int(r["day"]))))
    return rows


def interactions(tagging: list[tuple[str, str, int, dt.date]]) -> dict[tuple[str, str], dt.date]:
    """Distinct (user, artist) pairs -> the date of the first tagging event."""
    first: dict[tuple[str, str], dt.date] = {}
    for user, artist, _, day in tagging:
        key = (user, artist)
        if key not in first or day < first[key]:
            first[key] = day
    return first


def categories(tagging: list[tuple[str, str, int, dt.date]], tags: dict[int, str], split: dt.date) -> dict[str, str]:
    """Each artist's most frequent tag among tagging events before ``split`` (ties: lowest tag id)."""
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for _, artist, tag, day in tagging:
        if day < split:
            counts[artist][tag] += 1
    out = {}
    for artist, c in counts.items():
        best = min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        out[artist] = tags.get(best, "").strip() or f"tag-{best}"
    return out


def convert(src_dir: str | Path, out_logs: str | Path, split: dt.date = SPLIT, history: int = 0) -> dict[str, Any]:
    """Writes the dataset as recloop logs: ``requests/``, ``events/`` (``dt=`` partitions) and ``catalog/``.

    Layout (the simulator's): ``<out>/requests/dt=D/part-00000.jsonl.gz``,
    ``<out>/events/dt=D/part-00000.jsonl.gz``, ``<out>/catalog/dt=<first day>/items.jsonl.gz``.
    Every request and event line is parsed back through ``recloop.features.records`` before it is written.

    Returns:
      What was written and how (counts, placeholders, the artists only the tagging file knows).
    """
    from recloop.features import logs
    from recloop.features.records import ImpressionColumns, format_request, parse_event, parse_request

    src, out = Path(src_dir), str(out_logs)
    tagging = read_tagging(src)
    first = interactions(tagging)
    with open(src / "tags.dat", encoding="latin-1", newline="") as f:
        tags = {int(r["tagID"]): r["tagValue"] for r in csv.DictReader(f, delimiter="\t")}
    with open(src / "artists.dat", encoding="utf-8", newline="") as f:
        listed = [r["id"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    category = categories(tagging, tags, split)
    tagged = {a for _, a in first}
    only_tagged = sorted(tagged - set(listed), key=int)
    artists = [*listed, *only_tagged]

    def item(artist: str) -> str:
        return f"a{artist}"

    requests: dict[dt.date, list[str]] = defaultdict(list)
    events: dict[dt.date, list[str]] = defaultdict(list)
    stamped = sorted(((spread(user, artist, day.year, day.month), int(user), int(artist))
                      for (user, artist), day in first.items()))
    seen: dict[str, list[str]] = defaultdict(list)  # member -> artists so far, oldest first
    for ts, user_id, artist_id in stamped:
        user, artist = str(user_id), str(artist_id)
        rid = f"lfm-u{user}-a{artist}"
        cat = category.get(artist, UNTAGGED)
        shown = ImpressionColumns(item_id=[item(artist)], position=[0], row=[ROW], explored=[False],
                                  score=[PLACEHOLDERS["impression.score"]], propensity=[1.0],
                                  item={"tag": [cat]}, release_date=[None], age_days=[None])
        member = {HISTORY_FEATURE: seen[user][::-1][:history]} if history else {}
        seen[user].append(item(artist))
        line = format_request(rid, ts, MODEL_VERSION, f"u{user}", member, {}, shown)
        parse_request(line, source=rid)  # the contract's own check: raises naming the field
        requests[ts.date()].append(line)
        click = ts + dt.timedelta(seconds=CLICK_DELAY_S)
        event = json.dumps({"request_id": rid, "item_id": item(artist), "event": "click",
                            "ts": click.strftime("%Y-%m-%dT%H:%M:%SZ")}, separators=(",", ":"))
        parse_event(event, source=rid)
        events[click.date()].append(event)
    for stream, by_day in (("requests", requests), ("events", events)):
        for day in sorted(by_day):
            logs.write_lines(f"{logs.partition_dir(out, stream, day)}/part-00000.jsonl.gz", sorted(by_day[day]),
                             compresslevel=1)
    feed = (json.dumps({"item_id": item(a), "tag": category.get(a, UNTAGGED), "release_date": None},
                       separators=(",", ":")) for a in artists)
    feed_day = min(requests)
    logs.write_lines(f"{out}/catalog/dt={feed_day.isoformat()}/items.jsonl.gz", feed)
    before = [d for d in first.values() if d < split]
    return {
        "tagging_rows": len(tagging), "interactions": len(first), "members": len({u for u, _ in first}),
        "artists_interacted": len(tagged), "feed_items": len(artists), "feed_day": feed_day.isoformat(),
        "artists_only_in_tagging_file": len(only_tagged),
        "artists_with_pre_split_tag": sum(a in category for a in artists),
        "categories": len(set(category.values())),
        "interactions_before_split": len(before), "interactions_from_split": len(first) - len(before),
        "request_days": len(requests), "event_days": len(events),
        "placeholders": PLACEHOLDERS, "declaration": DECLARATION.name, "history": history,
    }


# ---------------------------------------------------------------- running the product

def freeze(commit: str, work: Path) -> dict[str, Any]:
    """Measures the ``recloop`` package of ``commit`` instead of the working tree, here and in every subprocess.

    A run takes about an hour, and the trainer's defaults changed under the first attempt (others edit recloop/):
    ``git archive`` of the commit's ``recloop/`` goes under ``work`` and is put first on ``sys.path`` and
    ``PYTHONPATH`` (the venv's editable install is a plain path entry, so it comes after).
    """
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", commit], check=True, capture_output=True,
                         text=True).stdout.strip()
    root = work / f"product-{sha[:7]}"
    if not (root / "recloop" / "__init__.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "recloop"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    if "recloop" in sys.modules:
        raise RuntimeError("recloop is already imported; freeze before anything imports it")
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return {"commit": sha, "package": str(root / "recloop")}


def product_state() -> dict[str, Any]:
    """Which recloop was measured: a frozen commit, or the working tree (with its uncommitted trainer edits)."""
    import recloop

    where = Path(recloop.__file__).resolve().parent
    if where.parent == REPO:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], check=False, capture_output=True, text=True).stdout
        dirty = subprocess.run([*git, "status", "--short", "recloop"], check=False, capture_output=True,
                               text=True).stdout.split("\n")
        return {"source": "working tree", "head": head.strip(), "uncommitted": [d for d in dirty if d]}
    return {"source": "frozen", "package": str(where)}


def _run(argv: list[str], log: Path) -> float:
    """Runs a command with its output in ``log``; wall seconds, or RuntimeError with the output's tail."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(argv, check=False, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"exit {code}: {' '.join(argv)}\n{tail}")
    return time.perf_counter() - t0


def _recloop(*args: str, log: Path) -> tuple[float, int]:
    """``recloop ARGS`` in this interpreter, measured: (wall seconds, peak RSS MiB)."""
    rss = log.with_suffix(".rss")
    wall = _run([sys.executable, "-c", MEASURED, str(rss), *args], log)
    return wall, round(int(rss.read_text()) / 1024)


def ingest(logs: Path, out: Path, end: dt.date = SPAN_END, eval_days: int = EVAL_DAYS) -> dict[str, Any]:
    wall, rss = _recloop("ingest", "--logs", str(logs), "--start", SPAN_START.isoformat(), "--end",
                         end.isoformat(), "--eval-days", str(eval_days), "--out", str(out), "--overwrite",
                         log=out.with_suffix(".log"))
    s = json.loads((out / "summary.json").read_text())
    return {"process_s": round(wall, 1), "job_s": s["wall_seconds"], "peak_rss_mib": rss, "span": s["span"],
            "lines": s["lines"], "examples": s["examples"], "members": s["members"], "items": s["items"],
            "impressions": s["impressions"],
            "dead_letters": {k: v["dead_letters"] for k, v in s["dead_letters"].items()},
            "reconciles": all(eq["holds"] for eq in s["reconciliation"].values())}


def validate(data: Path, out: Path) -> dict[str, Any]:
    """``recloop validate`` on the ingest output: what the weekly pipeline's check would say (exit 3 = blocking)."""
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        argv = [sys.executable, "-m", "recloop.cli", "validate", "--data", str(data), "--out", str(out)]
        code = subprocess.run(argv, check=False, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if code not in (0, 3):
        raise RuntimeError(f"recloop validate exit {code}; see {log}")
    a = json.loads((out / "anomalies.json").read_text())
    return {"exit_code": code, "blocking": a["blocking"], "process_s": round(wall, 1),
            "catalog_mismatch": a.get("catalog", {}).get("mismatch_share"),
            "anomalies": [{k: x[k] for k in ("feature", "check", "measure", "blocking")} | {
                "description": x["description"][:160]} for x in a["anomalies"]]}


def train(data: Path, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    args = ["train", "--data", str(data), "--out", str(out), "--overwrite"]
    if overrides:
        config = out.with_suffix(".yaml")
        config.write_text(json.dumps(overrides))  # JSON is YAML
        args += ["--config", str(config)]
    wall, rss = _recloop(*args, log=out.with_suffix(".log"))
    card = json.loads((out / "model_card.json").read_text())
    return {"config": overrides, "process_s": round(wall, 1), "peak_rss_mib": rss,
            "train_s": card["training_seconds"],
            "retrieval_s": card["training"]["retrieval"]["seconds"],
            "ranking_s": card["training"]["ranking"]["seconds"],
            "version": card["version"], "data": {k: card["data"][k] for k in (
                "train_examples", "eval_examples", "catalog_items", "train_members", "train_items")}}


def gate(model: Path, data: Path, out: Path) -> dict[str, Any]:
    """``recloop evaluate`` on a model with an empty registry (a first run): what the weekly pipeline's gate
    would decide on such logs, with the default checks it picks for them."""
    wall, _ = _recloop("evaluate", "--candidate", str(model), "--data", str(data), "--registry",
                       str(out.parent / "empty-registry"), "--out", str(out), log=out.with_suffix(".log"))
    b = json.loads((out / "blessing.json").read_text())
    keys = ("kind", "metric", "slice", "value", "se", "reference", "reference_se", "threshold", "bound", "verdict",
            "note")
    return {"blessed": b["blessed"], "logs": b["logs"], "process_s": round(wall, 1),
            "checks": [{k: c.get(k) for k in keys} for c in b["checks"]]}


# ---------------------------------------------------------------- measuring

def expected_hits(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """P(the positive is in the top k) per row, ties broken uniformly at random (as the trainer's recall@k)."""
    return np.clip((k - greater.astype(np.float64)) / (ties + 1.0), 0.0, 1.0)


def ranks(scorer: Any, positives: Any, catalog: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(greater, ties)`` of each positive's item among the catalog under a trainer scorer (queries per request)."""
    from recloop.trainer import metrics
    from recloop.trainer.evaluate import CHUNK, request_queries

    queries, inverse = request_queries(positives)
    index = {i: n for n, i in enumerate(catalog["item_id"])}
    target = np.array([index[i] for i in positives["item_id"]], dtype=np.int64)
    greater, ties = np.zeros(len(positives), np.int64), np.zeros(len(positives), np.int64)
    for lo in range(0, len(queries), CHUNK):
        hi = min(lo + CHUNK, len(queries))
        scores = np.asarray(scorer(queries.take(np.arange(lo, hi)), catalog), dtype=np.float64)
        rows = np.flatnonzero((inverse >= lo) & (inverse < hi))
        greater[rows], ties[rows] = metrics.positive_ranks(scores[inverse[rows] - lo], target[rows])
    return greater, ties


def global_ranks(scores: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(greater, ties)`` of catalog indices ``target`` under one score per catalog item (the same for everyone)."""
    s = np.sort(scores)
    t = scores[target]
    below, upto = np.searchsorted(s, t, side="left"), np.searchsorted(s, t, side="right")
    return (len(s) - upto).astype(np.int64), (upto - below - 1).astype(np.int64)


def hit_figures(h: dict[int, np.ndarray]) -> dict[str, float]:
    out = {}
    for k, v in h.items():
        p = float(v.mean())
        out[f"hit@{k}"], out[f"hit@{k}_se"] = round(p, 5), round(float(np.sqrt(p * (1 - p) / len(v))), 5)
    return out


def paired_ratio(a: np.ndarray, b: np.ndarray, members: np.ndarray, seed: int = SEED) -> dict[str, Any]:
    """mean(a) / mean(b) with 95% percentile intervals: bootstrap over rows, and over members (clusters)."""
    rng = np.random.default_rng(seed)
    n, ratios = len(a), []
    for _ in range(0, BOOTSTRAP, 200):
        idx = rng.integers(0, n, size=(200, n))
        ratios.append(a[idx].sum(axis=1) / np.maximum(b[idx].sum(axis=1), 1e-12))
    r = np.concatenate(ratios)
    uniq, inverse = np.unique(members, return_inverse=True)
    sa, sb = np.bincount(inverse, weights=a), np.bincount(inverse, weights=b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(uniq), size=(BOOTSTRAP, len(uniq)))
    rm = sa[idx].sum(axis=1) / np.maximum(sb[idx].sum(axis=1), 1e-12)
    return {"ratio": round(float(a.mean() / b.mean()), 4) if b.mean() else None,
            "ci95": [round(float(x), 4) for x in np.percentile(r, [2.5, 97.5])],
            "ci95_members": [round(float(x), 4) for x in np.percentile(rm, [2.5, 97.5])],
            "p_ratio_below_1": round(float((r < 1).mean()), 4)}


def recent_popularity(train_ts: np.ndarray, train_items: np.ndarray, catalog: np.ndarray, eval_items: np.ndarray,
                      split: dt.date = SPLIT, validation_start: dt.date = VALIDATION_START) -> dict[str, Any]:
    """Plain counts over the last W days before ``split``; W chosen on the last training month by hit@100."""
    index = {i: n for n, i in enumerate(catalog)}
    item_idx = np.array([index[i] for i in train_items], dtype=np.int64)

    def scores(before: dt.date, days: int | None) -> np.ndarray:
        end = dt.datetime.combine(before, dt.time(), tzinfo=dt.UTC).timestamp()
        start = -np.inf if days is None else end - days * 86_400
        m = (train_ts >= start) & (train_ts < end)
        return np.bincount(item_idx[m], minlength=len(catalog)).astype(np.float64)

    val_start = dt.datetime.combine(validation_start, dt.time(), tzinfo=dt.UTC).timestamp()
    val = item_idx[train_ts >= val_start]
    choice = {}
    for w in WINDOWS:
        g, t = global_ranks(scores(validation_start, w), val)
        choice["all" if w is None else str(w)] = {str(k): round(float(expected_hits(g, t, k).mean()), 5) for k in KS}
    best = max(WINDOWS, key=lambda w: choice["all" if w is None else str(w)]["100"])  # first max: the shorter W
    target = np.array([index[i] for i in eval_items], dtype=np.int64)
    out = {}
    for name, w in (("recent", best), ("all_time", None)):
        g, t = global_ranks(scores(split, w), target)
        out[name] = {k: expected_hits(g, t, k) for k in KS}
    return {"window_days": best, "validation": {"month": f"{validation_start:%Y-%m}", "positives": len(val),
                                                "hit_by_window": choice},
            "hits": out["recent"], "all_time_hits": out["all_time"]}


class Evaluation:
    """The eval interactions and the per-interaction hits of the baselines, shared by every variant."""

    def __init__(self, data_dir: Path, split: dt.date = SPLIT, validation_start: dt.date = VALIDATION_START):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from recloop.trainer.data import load
        from recloop.trainer.scorers import popularity, popularity_scorers
        from recloop.trainer.train import eval_day

        self.data = load([str(data_dir)])
        self.day = eval_day(self.data)
        ev, tr = self.data.eval, self.data.train
        self.positives = ev.take(ev["label_click"] == 1)
        p = self.positives
        per_request = np.unique(p["request_id"], return_counts=True)[1]
        train_members = np.unique(tr["member_id"]).astype(str)  # str: np.isin is pairwise on object arrays
        new_member = ~np.isin(p["member_id"], train_members)
        new_item = ~np.isin(p["item_id"], np.unique(tr["item_id"]).astype(str))
        self.sizes = {
            "eval_interactions": len(p), "eval_examples": len(ev), "eval_members": len(np.unique(p["member_id"])),
            "eval_members_unseen_share": round(float(np.mean(~np.isin(np.unique(p["member_id"]), train_members))), 4),
            "eval_interactions_of_unseen_members_share": round(float(new_member.mean()), 4),
            "eval_interactions_of_unseen_items_share": round(float(new_item.mean()), 4),
            "train_interactions": int(tr["label_click"].sum()), "train_members": len(train_members),
            "catalog_items": len(self.data.catalog), "eval_requests": len(per_request),
            "positives_per_eval_request": sorted(set(per_request.tolist())),
            "train_share": round(float(tr["label_click"].sum() / (tr["label_click"].sum() + len(p))), 4),
            "eval_period": [self.day.isoformat(), self.data.span["end"]],
        }
        self.masks = {"member=new": new_member, "member=active": ~new_member, "item=new": new_item}
        g, t = ranks(popularity_scorers(popularity(tr, self.day))[0], p, self.data.catalog)
        self.popularity = {k: expected_hits(g, t, k) for k in KS}
        clicks = tr.take(tr["label_click"] == 1)
        if self.day != split:
            raise ValueError(f"{data_dir}: eval starts {self.day}, expected {split}")
        self.recent = recent_popularity(clicks["ts"], clicks["item_id"], self.data.catalog["item_id"], p["item_id"],
                                        split, validation_start)

    def model_hits(self, export: Path) -> dict[int, np.ndarray]:
        from recloop.trainer.scorers import model_scorers

        g, t = ranks(model_scorers(str(export), self.day)[0], self.positives, self.data.catalog)
        return {k: expected_hits(g, t, k) for k in KS}

    def figures(self, hits: dict[int, np.ndarray]) -> dict[str, Any]:
        members = self.positives["member_id"]
        out: dict[str, Any] = hit_figures(hits)
        out["vs_popularity"] = {str(k): paired_ratio(hits[k], self.popularity[k], members) for k in KS}
        out["vs_recent_popularity"] = {str(k): paired_ratio(hits[k], self.recent["hits"][k], members) for k in KS}
        out["vs_all_time_popularity"] = {str(k): paired_ratio(hits[k], self.recent["all_time_hits"][k], members)
                                         for k in KS}
        out["cohorts"] = self.cohorts(hits)
        return out

    def cohorts(self, hits: dict[int, np.ndarray]) -> dict[str, Any]:
        """Hit rates of eval members unseen / seen in training and of artists unseen in training."""
        return {name: hit_figures({k: v[m] for k, v in hits.items()}) | {"interactions": int(m.sum())}
                for name, m in self.masks.items()}


def check_against_trainer(metrics: dict[str, Any], name: str, hits: dict[int, np.ndarray]) -> dict[str, Any]:
    """The trainer's logged recall@K of ``name`` vs the hit rate recomputed here (equal: one positive per request)."""
    logged = metrics["scorers"][name]["retrieval"]["logged"]["overall"]
    diffs = {k: abs(logged[f"recall@{k}"] - float(hits[k].mean())) for k in KS}
    return {"trainer_recall": {str(k): logged[f"recall@{k}"] for k in KS}, "positives": logged["positives"],
            "max_abs_diff": round(max(diffs.values()), 7), "equal": max(diffs.values()) < 1e-5}


# ---------------------------------------------------------------- the benchmark

def _trained(data_dir: Path, export: Path, overrides: dict[str, Any], reuse: bool) -> dict[str, Any]:
    record_file = export.with_suffix(".run.json")
    if reuse and record_file.exists() and (export / "metrics.json").exists():
        return json.loads(record_file.read_text())
    run = train(data_dir, export, overrides)
    record_file.write_text(json.dumps(run, indent=2))
    return run


def select_on_validation(work: Path, variants: dict[str, dict[str, Any]], reuse: bool = False) -> dict[str, Any]:
    """Compares ``variants`` on a split that ends where the eval year starts; names the best by hit@100."""
    data_dir = work / "ingest-validation"
    if not (reuse and (data_dir / "summary.json").exists()):
        ingest(work / "logs", data_dir, VALIDATION_END, VALIDATION_EVAL_DAYS)
    ev = Evaluation(data_dir, VALIDATION_START, VALIDATION_RECENT_START)
    runs = {}
    for name, overrides in variants.items():
        export = work / f"validation-{_slug(name)}"
        run = _trained(data_dir, export, overrides, reuse)
        print(f"  validation {name}: {run['process_s']} s", file=sys.stderr)
        runs[name] = {k: run[k] for k in ("config", "train_s", "process_s")} | ev.figures(ev.model_hits(export))
    return {"span": [SPAN_START.isoformat(), VALIDATION_END.isoformat()], "eval_days": VALIDATION_EVAL_DAYS,
            "sizes": ev.sizes, "popularity": hit_figures(ev.popularity),
            "recent_popularity": hit_figures(ev.recent["hits"]) | {"window_days": ev.recent["window_days"]},
            "variants": runs, "chosen": max(runs, key=lambda n: runs[n]["hit@100"])}


def bench_realdata(work: Path = WORK, variants: dict[str, dict[str, Any]] | None = None,
                   validated: tuple[str, ...] = VALIDATED, reuse: bool = False, history: int = HISTORY
                   ) -> dict[str, Any]:
    """Converts, ingests, trains every variant and measures; returns the figures.

    Args:
      work: where the logs, the ingest output and the exports go (kept for inspection).
      variants: name -> TrainConfig overrides (``VARIANTS`` by default).
      validated: names of ``variants`` compared on the validation split (``select_on_validation``).
      reuse: keep logs, ingest output and exports already in ``work`` (re-measures them).
      history: the length of ``recent_artists`` in the logs (0: no history; the declaration must match).
    """
    variants = VARIANTS if variants is None else variants
    work.mkdir(parents=True, exist_ok=True)
    logs_dir, data_dir = work / "logs", work / "ingest"
    conversion_file = work / "conversion.json"
    if reuse and conversion_file.exists():
        conversion = json.loads(conversion_file.read_text())
    else:
        t0 = time.perf_counter()
        conversion = convert(SRC, logs_dir, history=history) | {"seconds": None}
        conversion["seconds"] = round(time.perf_counter() - t0, 1)
        conversion_file.write_text(json.dumps(conversion, indent=2))
    print(f"converted: {conversion['interactions']:,} interactions", file=sys.stderr)
    if reuse and (data_dir / "summary.json").exists():
        ingested = {"reused": True}
    else:
        ingested = ingest(logs_dir, data_dir)
        print(f"ingested in {ingested['process_s']} s", file=sys.stderr)
    validation = validate(data_dir, work / "validate-run")
    print(f"validate: exit {validation['exit_code']}, blocking {validation['blocking']}", file=sys.stderr)
    ingest_summary = json.loads((data_dir / "summary.json").read_text())
    ingested |= {"examples": ingest_summary["examples"], "wall_seconds": ingest_summary["wall_seconds"]}
    ev = Evaluation(data_dir)
    runs: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    for name, overrides in variants.items():
        export = work / f"model-{_slug(name)}"
        run = _trained(data_dir, export, overrides, reuse)
        print(f"  {name}: {run['process_s']} s", file=sys.stderr)
        hits = ev.model_hits(export)
        if name == "default":  # kept for the paired comparison across declarations (bench())
            np.savez(work / "default-hits.npz", members=ev.positives["member_id"], request=ev.positives["request_id"],
                     **{f"hit{k}": hits[k] for k in KS})
        metrics = json.loads((export / "metrics.json").read_text())
        checks[name] = check_against_trainer(metrics, "model", hits)
        if "popularity" not in checks:
            checks["popularity"] = check_against_trainer(metrics, "popularity", ev.popularity)
        runs[name] = run | ev.figures(hits) | {"trainer_ratios": metrics.get("ratios", {})}
        _save_partial(work, conversion, ingested, ev, runs, checks)
    result = _result(conversion, ingested, ev, runs, checks) | {"validate": validation}
    if "default" in variants:
        result["gate"] = gate(work / "model-default", data_dir, work / "gate-default")
        print(f"gate on the default model: blessed {result['gate']['blessed']}", file=sys.stderr)
    chosen = [n for n in validated if n in variants]
    if chosen:
        selection = select_on_validation(work, {n: variants[n] for n in chosen}, reuse)
        pick = runs[selection["chosen"]]
        result["selection"] = selection | {"on_eval_year": {k: pick[k] for k in (
            "hit@100", "hit@100_se", "hit@10", "hit@10_se", "vs_popularity", "vs_recent_popularity",
            "vs_all_time_popularity")}}
    return result


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _result(conversion: dict[str, Any], ingested: dict[str, Any], ev: Evaluation, runs: dict[str, Any],
            checks: dict[str, Any]) -> dict[str, Any]:
    members = ev.positives["member_id"]
    recent = ev.recent
    return {
        "dataset": "Last.fm HetRec 2011 (hetrec2011-lastfm-2k) tagging events; see /tmp/realdata/SOURCE.md",
        "split": {"span": [SPAN_START.isoformat(), SPAN_END.isoformat()], "eval_start": SPLIT.isoformat(),
                  "eval_days": EVAL_DAYS, "validation_month": f"{VALIDATION_START:%Y-%m}"},
        "conversion": conversion, "ingest": ingested, "sizes": ev.sizes,
        "baselines": {
            "popularity": hit_figures(ev.popularity) | {"cohorts": ev.cohorts(ev.popularity),
                "what": "the trainer's baseline: clicks per (daypart, platform) with back-off, half-life 7 days, "
                        "at the eval day"},
            "recent_popularity": hit_figures(recent["hits"]) | {
                "window_days": recent["window_days"], "validation": recent["validation"],
                "cohorts": ev.cohorts(recent["hits"]),
                "vs_popularity": {str(k): paired_ratio(recent["hits"][k], ev.popularity[k], members) for k in KS}},
            "all_time_popularity": hit_figures(recent["all_time_hits"]) | {
                "cohorts": ev.cohorts(recent["all_time_hits"]),
                "what": "plain counts over all training data"},
        },
        "trainer_check": checks,
        "variants": runs,
        "bar": {"ratio_vs_popularity_at_100": 1.2, "vs_recent_popularity_at_100": 1.0},
    }


def _save_partial(work: Path, *parts: Any) -> None:
    (work / "partial.json").write_text(json.dumps(_result(*parts), indent=2, default=str))


# ---------------------------------------------------------------- the README section

def _pm(f: dict[str, Any], k: int) -> str:
    return f"{f[f'hit@{k}']:.4f} ± {f[f'hit@{k}_se']:.4f}"


def _ratio(r: dict[str, Any]) -> str:
    return f"{r['ratio']:.2f}x [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r["ratio"] is not None else "-"


def _ci(r: dict[str, Any]) -> str:
    return f"[{r['ci95_members'][0]:.2f}, {r['ci95_members'][1]:.2f}]"


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of a real-data result."""
    f = r["figures"]
    s, b, c = f["sizes"], f["baselines"], f["conversion"]
    rows = [[f"`{name}`", _pm(v, 100), _pm(v, 10), _ratio(v["vs_popularity"]["100"]),
             _ratio(v["vs_recent_popularity"]["100"]), _ratio(v["vs_popularity"]["10"]),
             f"{v['cohorts']['member=new']['hit@100']:.3f} / {v['cohorts']['member=active']['hit@100']:.3f}",
             v["train_s"], v["process_s"]] for name, v in f["variants"].items()]
    rec = b["recent_popularity"]
    for name, x, vs_pop in (("popularity (the trainer's baseline)", b["popularity"], None),
                            (f"recent popularity (W = {rec['window_days']} d)", rec, rec["vs_popularity"]),
                            ("all-time counts", b["all_time_popularity"], None)):
        rows.append([name, _pm(x, 100), _pm(x, 10), _ratio(vs_pop["100"]) if vs_pop else "", "",
                     _ratio(vs_pop["10"]) if vs_pop else "",
                     f"{x['cohorts']['member=new']['hit@100']:.3f} / {x['cohorts']['member=active']['hit@100']:.3f}",
                     "", ""])
    parts = [
        "## Real data: Last.fm HetRec 2011 with a time split", "",
        (f"{c['interactions']:,} (member, artist) interactions of {c['members']:,} members; catalog "
         f"{s['catalog_items']:,} artists (every artist with an interaction in the span). Train "
         f"{f['split']['span'][0]}..{SPLIT - dt.timedelta(days=1)}: {s['train_interactions']:,} interactions "
         f"({s['train_share']:.0%}); eval {s['eval_period'][0]}..{s['eval_period'][1]}: {s['eval_interactions']:,} "
         f"interactions of {s['eval_members']:,} members, {s['eval_members_unseen_share']:.0%} of them unseen in "
         f"training ({s['eval_interactions_of_unseen_members_share']:.0%} of the interactions); "
         f"{s['eval_interactions_of_unseen_items_share']:.0%} of eval interactions are on artists absent from "
         "training (no scorer can rank those). The issue's bar: model hit@100 >= 1.2x popularity and >= recent "
         "popularity."), ""]
    sel = f.get("selection")
    if sel:
        v = sel["on_eval_year"]
        parts += [(f"**Chosen without looking at the eval year** (best hit@100 of {len(sel['variants'])} variants on "
                   f"{sel['span'][1][:7]}, a validation split of the same logs ending at the split): "
                   f"`{sel['chosen']}`, on the eval year hit@100 {_pm(v, 100)}, "
                   f"{_ratio(v['vs_popularity']['100'])} popularity, {_ratio(v['vs_recent_popularity']['100'])} "
                   f"recent popularity (member-level bootstrap {_ci(v['vs_recent_popularity']['100'])}), "
                   f"{_ratio(v['vs_all_time_popularity']['100'])} all-time counts."), "",
                  table(["validation (" + sel["span"][1][:7] + ")", "hit@100", "hit@10", "x recent pop. @100 [95%]"],
                        [[f"`{n}`", _pm(x, 100), _pm(x, 10), _ratio(x["vs_recent_popularity"]["100"])]
                         for n, x in sel["variants"].items()]
                        + [[f"recent popularity (W = {sel['recent_popularity']['window_days']} d)",
                            _pm(sel["recent_popularity"], 100), _pm(sel["recent_popularity"], 10), ""],
                           ["popularity (the trainer's baseline)", _pm(sel["popularity"], 100),
                            _pm(sel["popularity"], 10), ""]]), ""]
    parts += [
        ("Every variant on the eval year (compared there, so the best of them is optimistic). New / seen members: "
         "hit@100 of eval interactions of members without / with training interactions:"), "",
        table(["variant", "hit@100", "hit@10", "x popularity @100 [95%]", "x recent pop. @100 [95%]",
               "x popularity @10 [95%]", "hit@100 new / seen members", "train s", "process s"], rows), "",
        (f"Features declared for this data (`bench/{c.get('declaration', 'lastfm_features.yaml')}`): members "
         f"their last {c.get('history', 0)} artists before the request (`recent_artists`, sent with the request and "
         "logged with it), requests none, artists their tag. Constants for the contract's logging facts the "
         "data does not have: " + ", ".join(f"`{k}` = {v!r}" for k, v in c["placeholders"].items()) + "."), ""]
    plain = f["variants"].get(NO_HISTORY)
    if plain:
        h = plain["vs_history"]
        parts += [(f"The member's history (`recent_artists`) as a query feature: the default model with it over the "
                   f"same model without it, paired on the same eval interactions: hit@100 {_ratio(h['100'])}, "
                   f"hit@10 {_ratio(h['10'])}."), ""]
    g = f.get("gate")
    if g:
        judged = [c for c in g["checks"] if c["verdict"] != "skipped"]
        parts += [(f"`recloop evaluate` on the default model (first run, the default checks it picks for "
                   f"{g['logs']}): **{'blessed' if g['blessed'] else 'not blessed'}**; "
                   + "; ".join(f"{c['metric']} {c['kind']} {c['verdict']} (bound {c['bound']:.4f} vs "
                               f"{c['threshold']:.4f})" for c in judged if c["bound"] is not None) + "."), ""]
    val = f.get("validate")
    if val:
        parts += [(f"`recloop validate` on this ingest output: exit {val['exit_code']}"
                   + (" (blocking: " + "; ".join(f"`{x['feature']}` {x['measure']}" for x in val["anomalies"]
                                                 if x["blocking"]) + "), so the weekly pipeline's check would "
                      "stop before training; these figures train directly" if val["blocking"] else "") + "."), ""]
    parts.append(r["notes"])
    return "\n".join(parts)


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a real-data result: the default config, and the variant chosen on validation."""
    d, b = f["variants"]["default"], f["baselines"]
    line = (f"**Real data** (Last.fm HetRec 2011, eval {f['sizes']['eval_period'][0]}..{f['sizes']['eval_period'][1]}, "
            f"{f['sizes']['eval_interactions']:,} interactions): popularity hit@100 {b['popularity']['hit@100']:.3f}, "
            f"recent popularity {b['recent_popularity']['hit@100']:.3f}; default config {d['hit@100']:.3f} "
            f"({_ratio(d['vs_popularity']['100'])} popularity, {_ratio(d['vs_recent_popularity']['100'])} recent)")
    plain = f["variants"].get(NO_HISTORY)
    if plain:
        line += (f"; the member's recent artists as a query feature give {_ratio(plain['vs_history']['100'])} "
                 f"the default without them ({plain['hit@100']:.3f})")
    sel = f.get("selection")
    if sel and sel["chosen"] == "default":
        line += "; the default is also the variant chosen on validation"
    elif sel:
        v = sel["on_eval_year"]
        line += (f"; `{sel['chosen']}` (chosen on validation) {v['hit@100']:.3f} "
                 f"({_ratio(v['vs_popularity']['100'])} popularity, {_ratio(v['vs_recent_popularity']['100'])} recent)")
    return line + "."


def bench() -> dict[str, Any]:
    """``bench/run.py realdata``: every variant on the working tree's recloop/, with what was measured.

    In a process of its own: the declaration (``RECLOOP_FEATURES``) is read once, when recloop is first
    imported, and bench/run.py's process has imported it with the default one.
    """
    out, plain = WORK / "results.json", WORK / "no-history"
    subprocess.run([sys.executable, __file__, "--work", str(WORK), "--out", str(out)], check=True)
    subprocess.run([sys.executable, __file__, "--work", str(plain), "--out", str(plain / "results.json"),
                    "--history", "0", "--variants", "default"], check=True)
    figures = json.loads(out.read_text())["figures"]
    without = json.loads((plain / "results.json").read_text())["figures"]
    figures["variants"][NO_HISTORY] = without["variants"]["default"] | {
        "vs_history": history_ratio(WORK / "default-hits.npz", plain / "default-hits.npz")}
    return figures


NO_HISTORY = "no member history (declaration without recent_artists)"


def history_ratio(with_history: Path, without: Path) -> dict[str, Any]:
    """The default model with the member's history over the one without, paired on the same eval interactions."""
    a, b = np.load(with_history), np.load(without)
    ia, ib = np.argsort(a["request"], kind="stable"), np.argsort(b["request"], kind="stable")
    if not np.array_equal(a["request"][ia], b["request"][ib]):
        raise ValueError(f"{with_history} and {without} hold different eval interactions")
    return {str(k): paired_ratio(a[f"hit{k}"][ia], b[f"hit{k}"][ib], a["members"][ia]) for k in KS}


def declaration_without_history(work: Path) -> Path:
    """``DECLARATION`` without ``HISTORY_FEATURE``, written under ``work``: the no-history run's RECLOOP_FEATURES."""
    import yaml

    raw = yaml.safe_load(DECLARATION.read_text())
    raw["features"] = [f for f in raw["features"] if f["name"] != HISTORY_FEATURE]
    work.mkdir(parents=True, exist_ok=True)
    path = work / "features-no-history.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="the real-data check (Last.fm HetRec 2011)")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--variants", nargs="*", help=f"names from {list(VARIANTS)} (default: all)")
    parser.add_argument("--extra", help="JSON {name: overrides} of more variants")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_JSON)
    parser.add_argument("--commit", help="measure this commit's recloop/ (git archive) instead of the working tree")
    parser.add_argument("--history", type=int, default=HISTORY, choices=(0, HISTORY),
                        help=f"{HISTORY}: requests carry the member's recent artists; 0: no history feature")
    args = parser.parse_args()
    declared = DECLARATION if args.history else declaration_without_history(args.work)
    os.environ["RECLOOP_FEATURES"] = str(declared)  # before anything imports recloop, and for every step
    frozen = freeze(args.commit, args.work) if args.commit else None
    chosen = {n: VARIANTS[n] for n in (args.variants or VARIANTS)}
    if args.extra:
        chosen |= json.loads(args.extra)
    figures = bench_realdata(args.work, chosen, reuse=args.reuse, history=args.history)
    figures["product"] = product_state() | (frozen or {})
    command = " ".join(["python", "bench/realdata.py", *sys.argv[1:]])
    args.out.write_text(json.dumps({"benchmark": "realdata", "command": command,
                                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                    "machine": machine(), "figures": figures, "notes": NOTES},
                                   indent=2, default=str) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
