"""The fault suite: what breaks, what the system does, and what is lost, read off the tests that inject each fault.

Every fault and security check is a pytest test against the real pieces (a ``recloop serve``
subprocess under ``hey``, a push killed by SIGKILL, a real Alertmanager, the rendered manifests).
``bench_faults`` runs them once in one pytest process, with 10,000 fuzzed requests instead of CI's
150, and reads outcome, seconds and the figures each test records (``record_property``) from the
JUnit XML.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from common import table

ROOT = Path(__file__).resolve().parents[1]
FUZZ_EXAMPLES = 10_000

# (fault, expectation, pytest node id)
FAULTS: list[tuple[str, str, str]] = [
    ("kill -9 of the server during a hey load (3000 requests, 8 clients, killed after 1 s)",
     "every line on disk parses as a request record (no torn line); at most the records still queued are lost",
     "tests/test_faults.py::test_a_kill_9_under_load_leaves_whole_lines_and_a_restart_serves_the_same_version"),
    ("restart after the kill, on the same registry and logs folder",
     "serves the version the pointer names; the old files are appended to, never rewritten",
     "tests/test_faults.py::test_a_kill_9_under_load_leaves_whole_lines_and_a_restart_serves_the_same_version"),
    ("push killed (SIGKILL) at each of its steps",
     "the pointer stays on the old complete version until the switch; the next push completes",
     "tests/test_push.py::test_a_push_killed_at_any_step_leaves_the_pointer_on_a_complete_version"),
    ("corrupt model directory pushed (no model yet, then over a good one)",
     "rejected and counted; the heuristic fallback, then the old model, keeps serving",
     "tests/test_server.py::test_hot_reload_fallbacks_and_rejection"),
    ("the rejection reaches the on-call engineer",
     "RecloopModelRejected (and the other serving alerts) fire on synthetic series: promtool test rules",
     "tests/test_manifests.py::test_promtool_checks_and_unit_tests_the_rules"),
    ("ingest of logs with every corrupt-line kind at 1%",
     "each corrupt line is a dead letter with its reason and field; the reconciliation equations hold",
     "tests/test_ingest.py::test_every_corrupt_line_kind_lands_in_dead_letters_with_its_reason"),
    ("ingest reconciliation on hand-built logs",
     "every input line is accounted for (examples, drops, dead letters)",
     "tests/test_ingest.py::test_reconciliation_holds_and_is_in_the_summary"),
    (f"{FUZZ_EXAMPLES:,} fuzzed bad requests (bytes, arbitrary JSON, near-valid with one part replaced)",
     "200 or 400 with an error message; never a 5xx",
     "tests/test_server.py::test_fuzzed_requests_never_get_a_5xx"),
    ("hot swap of the model under a hey load (600 requests, 4 clients)",
     "0 failed requests; the new version serves after the swap",
     "tests/test_server.py::test_hot_reload_fallbacks_and_rejection"),
    ("Alertmanager down when a run raises an alert",
     "retried, warned, kept on disk; the next run re-sends it",
     "tests/test_alerts.py::test_alertmanager_down_retries_warns_keeps_and_the_next_run_resends"),
]

SECURITY: list[tuple[str, str, str]] = [
    ("container runs as non-root", "the final stage's USER is a numeric non-zero UID:GID",
     "tests/test_dockerfile.py::test_the_runtime_user_is_numeric_and_not_root"),
    ("server binds 127.0.0.1 by default", ("`recloop serve` without --host listens on 127.0.0.1 only (no 0.0.0.0, "
     "no IPv6)"), "tests/test_server.py::test_it_listens_on_loopback_only"),
    ("RBAC: nothing cluster-wide", "no ClusterRole(Binding), no wildcard, namespaced and named resources",
     "tests/test_manifests.py::test_rbac_is_namespaced_named_and_without_wildcards"),
    ("RBAC enforced by an API server", "the service account gets 403 outside its namespace and objects",
     "tests/test_manifests.py::test_the_service_account_is_confined_to_its_namespace_and_objects"),
    ("request size limit: Content-Length", ("a Content-Length over the limit is refused with 400 naming the limit, "
     "before the body is read"),
     "tests/test_server.py::test_a_content_length_over_the_limit_is_refused_without_reading_the_body"),
    ("request size limit: chunked body", "a chunked body over the limit is refused with 400 naming the limit",
     "tests/test_server.py::test_an_oversized_chunked_body_and_a_missing_clock_header_are_400"),
]

NOTES = ("One pytest process runs every test above (`RECLOOP_FUZZ_EXAMPLES=10000`; CI runs the same tests with 150 "
         "fuzzed requests). Figures are what each test recorded with `record_property`; a fault listed twice is "
         "checked by one test. Seconds are pytest's for the test, including its share of session fixtures (the "
         "tiny world, the tiny model, a server start). After a kill -9 a record is lost only when it was still in "
         "the request log's in-memory queue; a record is queued before its answer is sent, so up to one per "
         "client in flight can be on disk without an answer.")


def _node_name(node: str) -> tuple[str, str]:
    """(JUnit classname, name) of a node id: ``tests/test_x.py::test_y`` -> (``tests.test_x``, ``test_y``)."""
    path, _, name = node.partition("::")
    return path.removesuffix(".py").replace("/", "."), name


def _outcomes(junit: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Per test case of a JUnit XML: outcome, message, seconds and recorded properties."""
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (child.get("message") or child.text or "").strip()[:500]
                break
        out[case.get("classname", ""), case.get("name", "")] = {
            "outcome": outcome, "message": message, "seconds": round(float(case.get("time") or 0), 1),
            "figures": {p.get("name"): p.get("value") for p in case.iter("property")}}
    return out


def bench_faults() -> dict[str, Any]:
    """Runs the fault and security tests once (10,000 fuzzed requests) and collects their outcomes and figures."""
    nodes = list(dict.fromkeys(node for *_, node in FAULTS + SECURITY))
    env = dict(os.environ, RECLOOP_FUZZ_EXAMPLES=str(FUZZ_EXAMPLES))
    with tempfile.TemporaryDirectory() as tmp:
        junit = f"{tmp}/junit.xml"
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "pytest", *nodes, "-p", "no:cacheprovider", "-q",
                              "-o", "junit_family=xunit1", f"--junitxml={junit}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if not Path(junit).exists():
            raise RuntimeError(f"pytest wrote no JUnit XML (exit {run.returncode}):\n{run.stdout[-3000:]}"
                               f"\n{run.stderr[-3000:]}")
        cases = _outcomes(junit)
    missing = {"outcome": "not run", "message": "not in the JUnit XML", "seconds": 0.0, "figures": {}}

    def rows(items: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        return [{"fault": what, "expectation": expected, "test": node, **cases.get(_node_name(node), missing)}
                for what, expected, node in items]

    return {"faults": rows(FAULTS), "security": rows(SECURITY), "pytest_s": round(seconds, 1),
            "pytest_exit": run.returncode, "fuzz_examples": FUZZ_EXAMPLES}


def _figures(figures: dict[str, str]) -> str:
    return "; ".join(f"{k} {v}" for k, v in figures.items()).replace("|", "\\|") or "-"


def _result(row: dict[str, Any]) -> str:
    text = f"{row['outcome']} ({row['seconds']} s)"
    return text + (f": {row['message'][:200]}" if row["message"] else "")


def _short(node: str) -> str:
    return f"`{node.removeprefix('tests/')}`"


def section(r: dict[str, Any], results: Path) -> str:
    """The README's fault and security sections from a recorded ``bench_faults`` result."""
    f = r.get("figures", r)
    faults = [[x["fault"], x["expectation"], _result(x), _figures(x["figures"]), _short(x["test"])]
              for x in f["faults"]]
    security = [[x["fault"], x["expectation"], _result(x), _figures(x["figures"]), _short(x["test"])]
                for x in f["security"]]
    passed = sum(x["outcome"] == "passed" for x in f["faults"] + f["security"])
    return "\n".join([
        "## Faults: what breaks, what is lost", "",
        (f"{passed} of {len(f['faults']) + len(f['security'])} checks passed in one pytest run of "
         f"{f['pytest_s']} s ({f['fuzz_examples']:,} fuzzed requests)."), "",
        table(["fault", "expectation", "result", "figures", "test"], faults), "",
        "## Security checks", "",
        table(["check", "expectation", "result", "figures", "test"], security), "",
        r.get("notes", NOTES)])


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of a faults result's figures: checks passed, then the kill -9 and fuzz tests'
    figures (the two with the most at stake)."""
    passed = f"{_passed(f['faults'])} fault and {_passed(f['security'])} security checks passed"
    parts = [f"**Faults and security**: {passed}"]
    kill = next((x["figures"] for x in f["faults"] if "kill_9" in x["test"]), None)
    if kill:
        parts.append(f"kill -9 under load: {kill['log_lines']} log lines for {kill['answered_200']} answers, "
                     f"{kill['torn_lines']} torn, {kill['lines_lost_at_kill']} lost; restart in {kill['restart_s']} s "
                     f"serving {kill['restart_model_version']}")
    fuzz = next((x["figures"] for x in f["security"] + f["faults"] if "fuzz" in x["test"]), None)
    if fuzz:
        statuses = ", ".join(f"{n:,} x {code}" for code, n in json.loads(fuzz["status_histogram"]).items())
        parts.append(f"{int(fuzz['requests_sent']):,} fuzzed bad requests: {statuses}, {fuzz['responses_5xx']} 5xx")
    return "; ".join(parts) + "."


def _passed(rows: list[dict[str, Any]]) -> str:
    return f"{sum(x['outcome'] == 'passed' for x in rows)}/{len(rows)}"
