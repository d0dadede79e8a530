"""The dependency audit: the real pip-audit over the requirements that uv.lock pins, findings listed and decided.

``uv export --frozen`` writes the lock's runtime requirements and its dev group, and pip-audit (pinned
below) audits them with ``--no-deps`` (the lock is the whole set). pip-audit's default service asks
PyPI's per-version JSON API (``/pypi/NAME/VERSION/json``) for each pin. Where that API cannot be reached
(this machine's registry gateway serves only the per-project ``/pypi/NAME/json``, and OSV's API is not
reachable either), every package comes back "not found" and nothing is audited; the benchmark then runs
the same pip-audit through its OSV client (``-s osv --osv-url``) against a loopback endpoint that answers
with PyPI's own vulnerability records from the per-project JSON. Those records are for a project's
latest release only, so a package is audited live only where the lock pins that release; for pins behind
it the endpoint can only serve ``OFFLINE`` (advisories checked by hand against those pins), and the
result names them. ``uv lock --upgrade --dry-run`` says whether any pin could move within the stack.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from common import table
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
PIP_AUDIT = "pip-audit==2.10.1"
EXPORT = ["uv", "export", "--frozen", "--no-emit-project", "--no-hashes", "--format", "requirements-txt"]
AUDIT = ["uvx", PIP_AUDIT, "--no-deps", "--disable-pip", "--format", "json", "--progress-spinner", "off"]

# Advisories against pins that PyPI's live records cannot cover here (the pin is behind the project's
# latest release). Each was read in pypa/advisory-database and checked against the locked version.
OFFLINE: list[dict[str, Any]] = [
    {"id": "PYSEC-2023-238", "aliases": ["CVE-2023-47248", "GHSA-5wvp-7f3h-6wmm"], "package": "pyarrow",
     "introduced": "0.14.0", "fixed": "14.0.1",
     "summary": ("Deserialization of untrusted data in the IPC and Parquet readers of PyArrow 0.14.0 to 14.0.0 "
                 "allows arbitrary code execution when reading Arrow IPC, Feather or Parquet from untrusted sources.")},
]

# (package, advisory id or alias) -> the decision and why. A finding without one is "open"; one with no fix
# version is "no fix". "fixed" findings no longer show up in the audit: their upgrade is in the lock.
DECISIONS: dict[tuple[str, str], str] = {
    ("pyarrow", "PYSEC-2023-238"): (
        "not compatible with docs/stack.md: the fix is pyarrow>=14.0.1, but tfx-bsl 1.16.1 and TFDV 1.16.1 require "
        "pyarrow>=10,<11 (TFDV 1.17+ needs glibc 2.38). Mitigated: pyarrow-hotfix (a recloop dependency) "
        "refuses the unsafe extension type; `import apache_beam` installs it in ingest, and the simulator's "
        "Parquet readers import it; recloop reads only Arrow/Parquet files it wrote itself"),
}

NOTES = ("pip-audit audits the exact pins that `uv export --frozen` takes from uv.lock (runtime requirements "
         "and the dev group, `--no-deps`). Live = the pin's vulnerability records came from PyPI at run time; "
         "a pin behind its project's latest release can only be checked live where PyPI's per-version JSON API "
         "(or OSV's) is reachable, which it is not on this machine: here those pins are checked against the "
         "advisories in bench/audit.py's OFFLINE only. Statuses: fixed (upgraded in the lock), no fix, "
         "not compatible with docs/stack.md (why), open (no decision yet).")


def _run(argv: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def _pins(requirements: str) -> dict[str, str]:
    out = {}
    for line in requirements.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def _same(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _project(name: str) -> dict[str, Any] | None:
    """PyPI's per-project JSON: the latest release and the vulnerability records that affect it."""
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=60) as r:
            data = json.load(r)
        return {"latest": data["info"]["version"], "vulns": data.get("vulnerabilities") or []}
    except (OSError, ValueError, KeyError):
        return None


def _osv(name: str, vuln: dict[str, Any]) -> dict[str, Any]:
    """A PyPI vulnerability record (or an ``OFFLINE`` entry) as the OSV record that pip-audit parses."""
    fixed = vuln.get("fixed_in") if "fixed_in" in vuln else [vuln["fixed"]]
    events = [{"introduced": vuln.get("introduced", "0")}] + [{"fixed": f} for f in fixed or []]
    rec = {"id": vuln["id"], "aliases": vuln.get("aliases") or [],
           "details": vuln.get("details") or vuln.get("summary") or "N/A",
           "affected": [{"package": {"name": name, "ecosystem": "PyPI"},
                         "ranges": [{"type": "ECOSYSTEM", "events": events}]}]}
    if vuln.get("summary"):
        rec["summary"] = vuln["summary"]
    if vuln.get("withdrawn"):
        rec["withdrawn"] = vuln["withdrawn"]
    return rec


def _offline(name: str, version: str) -> list[dict[str, Any]]:
    v = Version(version)
    return [_osv(name, a) for a in OFFLINE
            if a["package"] == name and Version(a["introduced"]) <= v < Version(a["fixed"])]


class _Endpoint:
    """A loopback OSV ``/v1/query`` endpoint: live PyPI records for latest-release pins, ``OFFLINE`` for all."""

    def __init__(self, projects: dict[str, dict[str, Any] | None]):
        projects_ = projects

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name, version = canonicalize_name(query["package"]["name"]), query["version"]
                project = projects_.get(name)
                vulns = _offline(name, version)
                if project and _same(project["latest"], version):
                    vulns += [_osv(name, v) for v in project["vulns"]]
                body = json.dumps({"vulns": vulns} if vulns else {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _audit(requirements: Path, extra: list[str]) -> tuple[list[str], dict[str, Any]]:
    out = requirements.with_suffix(".audit.json")
    argv = [*AUDIT, "-r", str(requirements), *extra, "-o", str(out)]
    _run(argv, ok=(0, 1))  # 1: vulnerabilities found
    return argv, json.loads(out.read_text())


def _status(name: str, ids: list[str], fixes: list[str]) -> str:
    for i in ids:
        if (name, i) in DECISIONS:
            return DECISIONS[(name, i)]
    return "no fix" if not fixes else "open"


def bench_audit() -> dict[str, Any]:
    """pip-audit over uv.lock's runtime requirements and dev group; each finding with its decision."""
    version = _run(["uvx", PIP_AUDIT, "--version"]).stdout.split()[-1]
    runtime_txt = _run([*EXPORT, "--no-dev"]).stdout
    all_txt = _run([*EXPORT, "--all-groups"]).stdout
    runtime, pins = _pins(runtime_txt), _pins(all_txt)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp, "requirements.txt")
        req.write_text(all_txt)
        argv, report = _audit(req, [])
        skipped = [d for d in report["dependencies"] if "skip_reason" in d]
        service, coverage = "pypi (per-version JSON API)", {"live": len(pins) - len(skipped), "behind_latest": {}}
        if len(skipped) == len(report["dependencies"]):
            with ThreadPoolExecutor(4) as pool:
                projects = dict(zip(pins, pool.map(_project, pins)))
            behind = {n: {"locked": v, "latest": (projects[n] or {}).get("latest", "unreachable")}
                      for n, v in pins.items() if not projects[n] or not _same(projects[n]["latest"], v)}
            coverage = {"live": len(pins) - len(behind), "behind_latest": behind}
            service = ("osv client -> loopback endpoint: PyPI's per-project vulnerability records (live) "
                       "+ bench/audit.py OFFLINE")
            with _Endpoint(projects) as endpoint:
                argv, report = _audit(req, ["-s", "osv", "--osv-url", endpoint.url])
                argv = [a if a != endpoint.url else "http://127.0.0.1:PORT/v1/query" for a in argv]
    dry = _run(["uv", "lock", "--upgrade", "--dry-run"]).stderr
    upgradable = [line.strip() for line in dry.splitlines() if re.match(r"\s*(Updated?|Added?|Removed?)\b", line)]
    findings, seen = [], set()
    for dep in report["dependencies"]:
        for v in dep.get("vulns", []):
            name, ids = canonicalize_name(dep["name"]), [v["id"], *v.get("aliases", [])]
            if any((name, i) in seen for i in ids):  # PyPI lists an advisory under its PYSEC and GHSA ids
                continue
            seen.update((name, i) for i in ids)
            findings.append({
                "package": name, "version": dep["version"], "group": "runtime" if name in runtime else "dev",
                "id": v["id"], "aliases": v.get("aliases", []), "fix_versions": v.get("fix_versions", []),
                "description": " ".join(v.get("description", "").split())[:200],
                "source": ("offline" if any(a["id"] in ids and a["package"] == name for a in OFFLINE)
                           else "live"),
                "status": _status(name, ids, v.get("fix_versions", [])),
            })
    counts: dict[str, int] = {}
    for f in findings:
        key = f["status"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return {
        "pip_audit": version, "command": " ".join(argv).replace(tmp + "/", ""),
        "export": " ".join([*EXPORT, "--all-groups"]), "service": service,
        "packages": len(pins), "runtime_packages": len(runtime), "dev_only_packages": len(pins) - len(runtime),
        "pypi_service_skipped": len(skipped), "coverage": coverage,
        "lock_upgrade_dry_run": upgradable or "no lockfile changes: every pin is the newest the stack allows",
        "findings": findings, "counts": counts,
    }


def section(r: dict[str, Any], results: Path) -> str:
    """The bench/README.md section of an audit result: coverage, the lock's upgrades, the findings."""
    f = r["figures"]
    cov, behind = f["coverage"], f["coverage"]["behind_latest"]
    rows = [[x["package"], x["version"],
             x["id"] + (f" ({', '.join(x['aliases'])})" if x["aliases"] else ""),
             ", ".join(x["fix_versions"]) or "none", x["status"]] for x in f["findings"]]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(f["counts"].items())) or "none"
    upg = f["lock_upgrade_dry_run"]
    lines = [
        "## Dependency audit (pip-audit over uv.lock)", "",
        (f"pip-audit {f['pip_audit']} over {f['packages']} locked packages ({f['runtime_packages']} runtime, "
         f"{f['dev_only_packages']} dev only): **{len(f['findings'])} finding(s)**: {counts}. "
         f"Service: {f['service']}."), "",
        f"Command: `{f['command']}` (requirements from `{f['export']}`).", "",
    ]
    if behind:
        lines += [(f"Audited live: {cov['live']} packages (the lock pins their latest release). Behind latest, "
                   f"checked against OFFLINE only: {len(behind)}: "
                   + ", ".join(f"{n} {v['locked']} ({v['latest']})" for n, v in sorted(behind.items()))
                   + " (locked, latest in parentheses)."), ""]
    lines += [("`uv lock --upgrade --dry-run`: " + (upg if isinstance(upg, str) else "; ".join(upg)) + "."), ""]
    lines += [table(["package", "version", "id", "fix", "status"], rows) if rows else "No findings.", "", r["notes"]]
    return "\n".join(lines)


def headline(f: dict[str, Any]) -> str:
    """The README's headline line of an audit result's figures: each finding with its status."""
    findings = "; ".join(f"{x['package']} {x['version']} {x['id']} ({x['status'].split(':')[0]})"
                         for x in f["findings"])
    return (f"**Dependency audit** (pip-audit {f['pip_audit']}, {f['packages']} packages): "
            f"{len(f['findings'])} finding(s)" + (f": {findings}" if findings else "") + ".")


if __name__ == "__main__":
    json.dump(bench_audit(), sys.stdout, indent=1)
