"""``recloop report``: one offline HTML page for a pipeline run folder, what the Kubeflow UI shows for the run.

Reads what ``kfp.local`` and ``recloop run`` leave in a run folder: ``pipeline.yaml`` (the compiled IR: task order,
output types), ``run.json`` (parameters, states, seconds, error) and each task's ``executor_output.json`` (output
parameters, artifact metadata: the only place Metrics values live). The page loads nothing: inline CSS, no scripts
of its own, a Content-Security-Policy that blocks every fetch, also in embedded HTML artifacts (srcdoc inherits it).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from recloop.cli.console import console

IR, RUN, OUTPUT = "pipeline.yaml", "run.json", "executor_output.json"
EMBED_LIMIT = 32 << 20  # bytes; a larger HTML artifact is linked, not embedded
_RANK = {"system.Metrics": 0, "system.Markdown": 1, "system.HTML": 2}  # what a reader looks at first
_STAMP = re.compile(r"-(\d{4}(?:-\d\d){5}-\d{6})$")  # kfp.local names a run <pipeline>-<local start time>
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
        "font-src data:")  # inline scripts for HTML artifacts (plots) in their sandboxed frames; no fetch at all
_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#202124}h1{font-size:22px;margin:0 0 8px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dadce0}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #dadce0;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f1f3f4}code,.path{font:12px monospace;word-break:break-all}
.state{font-weight:600;padding:1px 6px;border-radius:3px}.SUCCEEDED{background:#e6f4ea;color:#137333}
.FAILED{background:#fce8e6;color:#c5221f}.NOT_RUN,.INCOMPLETE,.UNKNOWN{background:#f1f3f4;color:#5f6368}
.error{white-space:pre-wrap;background:#fce8e6;padding:8px;font:12px monospace}.note{color:#5f6368}
.frame{resize:vertical;overflow:hidden;height:80vh;min-height:200px;border:1px solid #dadce0}
.frame iframe{width:100%;height:100%;border:0}.md{border-left:3px solid #dadce0;padding-left:12px}"""


class ReportError(Exception):
    """A run folder, or a file in it, is not something a report can be made from."""


@dataclass
class Task:  # one task of the run: where its outputs are and what became of it
    name: str
    folder: str
    state: str  # SUCCEEDED | FAILED | NOT_RUN
    seconds: float | None
    error: str | None
    types: dict[str, str]  # output artifact -> schemaTitle (system.Metrics, ...); empty without the IR
    output: dict[str, Any]  # executor_output.json, {} when missing


@dataclass
class Run:  # what a run folder says about the run
    name: str
    parameters: dict[str, Any]
    state: str  # run.json's, else FAILED | SUCCEEDED | INCOMPLETE (a task did not run) | UNKNOWN (no IR either)
    error: str | None
    started: str | None
    seconds: float | None
    tasks: list[Task]
    notes: list[str]


def _read(path: str, expected: str) -> Any:
    """A JSON file, or the list of documents of a YAML file; ReportError names the file and what was expected."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f) if path.endswith(".json") else list(yaml.safe_load_all(f))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ReportError(f"{path}: expected {expected} ({e})") from None


def _ir_tasks(ir: dict[str, Any], dag: dict[str, Any], out: list[tuple[str, str, dict[str, str]]]) -> None:
    """Appends (task, folder, output types) in kfp.local's order: depth first, dependencies first, ties by name."""
    tasks, components, seen = dag.get("tasks") or {}, ir.get("components") or {}, set()

    def visit(name: str) -> None:
        seen.add(name)
        for dep in sorted(tasks[name].get("dependentTasks") or []):
            if dep in tasks and dep not in seen:
                visit(dep)
        ref = (tasks[name].get("componentRef") or {}).get("name", "")
        component = components.get(ref) or {}
        if "dag" in component:  # a pipeline used as a component: kfp.local runs its tasks in the same folder
            return _ir_tasks(ir, component["dag"], out)
        artifacts = (component.get("outputDefinitions") or {}).get("artifacts") or {}
        types = {k: (a.get("artifactType") or {}).get("schemaTitle", "system.Artifact") for k, a in artifacts.items()}
        out.append((name, ref.removeprefix("comp-") or name, types))  # kfp.local names the folder after the component

    for name in sorted(tasks):
        if name not in seen:
            visit(name)


def load(run_dir: str) -> Run:
    """Reads a run folder. Raises ReportError when it is missing, not a run folder, or holds unreadable files."""
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: no such folder; expected a pipeline run folder "
                          "(kfp.local writes <pipeline_root>/<pipeline>-<timestamp>/)")
    ir_path, run_path = os.path.join(run_dir, IR), os.path.join(run_dir, RUN)
    docs = _read(ir_path, "a compiled KFP pipeline") if os.path.isfile(ir_path) else []  # a platform spec may follow
    ir = next((d for d in docs if isinstance(d, dict) and isinstance(d.get("root"), dict)), None)
    if docs and ir is None:
        raise ReportError(f"{ir_path}: expected a compiled KFP pipeline (a YAML document with root.dag.tasks)")
    meta = _read(run_path, "recloop run's run.json (JSON)") if os.path.isfile(run_path) else None
    if meta is not None and not (isinstance(meta, dict) and isinstance(meta.get("tasks", {}), dict)):
        raise ReportError(f"{run_path}: expected an object with pipeline, parameters, state, "
                          "error and tasks (an object of task -> {state, seconds})")
    done = sorted((d for d in os.listdir(run_dir) if os.path.isfile(os.path.join(run_dir, d, OUTPUT))),
                  key=lambda d: os.path.getmtime(os.path.join(run_dir, d, OUTPUT)))
    if ir is None and meta is None and not done:
        runs = sorted(d for d in os.listdir(run_dir) if _STAMP.search(d))
        hint = f"; this looks like a pipeline root, pass a run: {os.path.join(run_dir, runs[-1])}" if runs else ""
        raise ReportError(f"{run_dir}: not a pipeline run folder: expected {IR}, {RUN} or task folders "
                          f"holding {OUTPUT}{hint}")
    meta, notes, listed = meta or {}, [], []
    if ir is None:
        notes.append(f"no {IR}: output types are guessed and tasks are in the order they finished")
        listed = [(d, d, {}) for d in done] + [(t, t, {}) for t in meta.get("tasks", {}) if t not in done]
    else:
        _ir_tasks(ir, ir["root"].get("dag") or {}, listed)
    if not meta:
        notes.append(f"no {RUN}: states come from the task folders, parameters are the pipeline's defaults")
    tasks = [_task(run_dir, name, folder, types, meta) for name, folder, types in listed]
    states = {t.state for t in tasks}
    base, ir = os.path.basename(os.path.abspath(run_dir)), ir or {}
    stamp = _STAMP.search(base)
    started = stamp and dt.datetime.strptime(stamp[1], "%Y-%m-%d-%H-%M-%S-%f").isoformat(" ", "seconds")
    timed = [t.seconds for t in tasks if t.seconds is not None]
    defaults = ((ir.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return Run(name=meta.get("pipeline") or (ir.get("pipelineInfo") or {}).get("name") or _STAMP.sub("", base),
               parameters=meta.get("parameters") or {k: p.get("defaultValue") for k, p in defaults.items()},
               state=meta.get("state") or ("FAILED" if "FAILED" in states else "UNKNOWN" if not ir  # tasks unknown
                                           else "SUCCEEDED" if states == {"SUCCEEDED"} else "INCOMPLETE"),
               error=meta.get("error"), started=meta.get("started") or started,
               seconds=meta.get("seconds") or (sum(timed) if timed else None), tasks=tasks, notes=notes)


def _task(run_dir: str, name: str, folder: str, types: dict[str, str], meta: dict[str, Any]) -> Task:
    path = os.path.join(run_dir, folder)
    if not os.path.isdir(path) and os.path.isdir(os.path.join(run_dir, name)):
        path = os.path.join(run_dir, name)
    output_path = os.path.join(path, OUTPUT)
    output = _read(output_path, "KFP's executor output (JSON)") if os.path.isfile(output_path) else {}
    if not isinstance(output, dict):
        raise ReportError(f"{output_path}: expected an object with parameterValues and artifacts")
    entry = meta.get("tasks", {}).get(name) or meta.get("tasks", {}).get(folder) or {}
    if not isinstance(entry, dict):
        raise ReportError(f"{RUN}: tasks.{name}: expected an object with state and seconds, got {entry!r}")
    state = entry.get("state") or ("SUCCEEDED" if output else "FAILED" if os.path.isdir(path) else "NOT_RUN")
    error = entry.get("error") or (meta.get("error") if state == "FAILED" else None)
    return Task(name, path, state, entry.get("seconds"), error, types, output)


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value), quote=True)


def _cell(value: Any) -> str:
    return f'<span title="{value!r}">{value:.6g}</span>' if isinstance(value, float) else _e(value)


def _table(rows: dict[str, Any], head: tuple[str, str] = ("name", "value")) -> str:
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_cell(v)}</td></tr>" for k, v in rows.items())
    return f"<table><tr><th>{head[0]}</th><th>{head[1]}</th></tr>{cells}</table>" if rows else "<p>none</p>"


def _size(n: float) -> str:
    units = ["B", "KiB", "MiB", "GiB"]
    while n >= 1024 and len(units) > 1:
        n, units = n / 1024, units[1:]
    return f"{n:.0f} {units[0]}" if units[0] == "B" else f"{n:.1f} {units[0]}"


def _listing(path: str, limit: int = 200) -> str:
    if os.path.isfile(path):
        return _table({os.path.basename(path): _size(os.path.getsize(path))}, ("file", "size"))
    entries, rows = sorted(os.scandir(path), key=lambda e: e.name), {}
    for e in entries[:limit]:
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(e.path) for f in fs) \
            if e.is_dir() else e.stat().st_size
        rows[e.name + "/" * e.is_dir()] = _size(size)
    more = f'<p class="note">and {len(entries) - limit} more</p>' if len(entries) > limit else ""
    return _table(rows, ("file", "size")) + more


def _markdown(text: str) -> str:
    """Markdown with raw HTML escaped, script links unlinked and images not fetched: the page stays inert, offline."""
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class SafeUrls(Treeprocessor):
        def run(self, root: Any) -> None:
            for el in root.iter():
                if el.tag == "a" and not re.match(r"(https?:|mailto:|[^:]*$)", el.get("href", ""), re.IGNORECASE):
                    el.attrib.pop("href")
                if el.tag == "img" and not el.get("src", "").startswith("data:image/"):
                    el.tag, el.text, el.attrib = "span", f"[image: {el.get('alt', '')}]", {}

    md = markdown.Markdown(extensions=["tables", "fenced_code"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(SafeUrls(md), "recloop_safe_urls", 0)  # after the inline patterns made the links
    return f'<div class="md">{md.convert(text)}</div>'


def _artifact(task: Task, name: str, artifact: dict[str, Any]) -> str:
    path = os.path.join(task.folder, name)  # the uri is absolute on the machine that ran it; prefer the copy here
    path = path if os.path.exists(path) else str(artifact.get("uri") or path)
    kind, metadata = task.types.get(name), artifact.get("metadata") or {}
    if kind is None:  # no IR: Metrics leave no file, HTML pages say what they are
        head = Path(path).read_text(errors="replace")[:200].lstrip().lower() if os.path.isfile(path) else ""
        kind = "system.Metrics" if not os.path.exists(path) else "system.HTML" if head.startswith(
            ("<!doctype html", "<html")) else "system.Artifact"
    title = f'<h3>{_e(name)} <span class="note">{_e(kind.removeprefix("system."))}</span></h3>'
    if kind == "system.Metrics":
        return title + _table(metadata)
    if kind == "system.Markdown" and os.path.isfile(path):
        return title + _markdown(Path(path).read_text(encoding="utf-8", errors="replace"))
    if kind == "system.HTML" and os.path.isfile(path) and os.path.getsize(path) > EMBED_LIMIT:
        return title + f'<p>too large to embed ({_size(os.path.getsize(path))}): ' \
                       f'<a href="{_e(Path(path).resolve().as_uri())}">{_e(path)}</a></p>'
    if kind == "system.HTML" and os.path.isfile(path):
        page = Path(path).read_text(encoding="utf-8", errors="replace")
        return title + f'<div class="frame"><iframe sandbox="allow-scripts" title="{_e(name)}" ' \
                       f'srcdoc="{html.escape(page, quote=True)}"></iframe></div>'
    files = _listing(path) if os.path.exists(path) else '<p class="note">not written</p>'
    return f'{title}<p class="path">{_e(path)}</p>{_table(metadata, ("metadata", "value")) if metadata else ""}{files}'


def _section(i: int, task: Task) -> str:
    parts = [f'<h2 id="t{i}">{i}. {_e(task.name)} <span class="state {_e(task.state)}">{_e(task.state)}</span></h2>']
    if task.error:
        parts.append(f'<div class="error">{_e(task.error)}</div>')
    if not task.output:
        return "".join(parts) + f'<p class="note">no outputs: {_e(OUTPUT)} is not in {_e(task.folder)}</p>'
    artifacts = task.output.get("artifacts") or {}
    for name in sorted({*task.types, *artifacts}, key=lambda n: (_RANK.get(task.types.get(n), 3), n)):
        for artifact in (artifacts.get(name) or {}).get("artifacts") or [{}]:
            parts.append(_artifact(task, name, artifact))
    if task.output.get("parameterValues"):
        parts.append("<h3>output parameters</h3>" + _table(task.output["parameterValues"]))
    return "".join(parts)


def _row(i: int, t: Task) -> str:
    outputs = ", ".join(f"{k} ({v.removeprefix('system.')})" for k, v in t.types.items())
    return (f'<tr><td>{i}</td><td><a href="#t{i}">{_e(t.name)}</a></td><td><span class="state {_e(t.state)}">'
            f'{_e(t.state)}</span></td><td>{"" if t.seconds is None else f"{t.seconds:.1f}"}</td>'
            f"<td>{_e(outputs)}</td></tr>")


def render(run_dir: str) -> str:
    """The report of a run folder as one standalone HTML page. Raises ReportError for a missing or bad folder."""
    run = load(run_dir)
    when = {"started": run.started or "unknown",
            "seconds in tasks": "unknown" if run.seconds is None else f"{run.seconds:.1f}"}
    body = (f'<h1>{_e(run.name)} <span class="state {_e(run.state)}">{_e(run.state)}</span></h1>'
            f'<p class="path">{_e(os.path.abspath(run_dir))}</p>'
            + "".join(f'<p class="note">{_e(n)}</p>' for n in run.notes)
            + (f'<div class="error">{_e(run.error)}</div>' if run.error else "")
            + _table(when, ("run", "")) + "<h3>parameters</h3>" + _table(run.parameters)
            + "<h3>tasks</h3><table><tr><th>#</th><th>task</th><th>state</th><th>seconds</th><th>outputs</th></tr>"
            + "".join(_row(i, t) for i, t in enumerate(run.tasks, 1)) + "</table>"
            + "".join(_section(i, t) for i, t in enumerate(run.tasks, 1)))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>{_e(run.name)}: run report</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def write(run_dir: str, out: str | None = None) -> str:
    """Renders the report and writes it atomically to ``out`` (default RUN_DIR/report.html); returns the path."""
    out = out or os.path.join(run_dir, "report.html")
    page = render(run_dir)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(f"{out}.tmp-{os.getpid()}", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(f.name, out)
    return out


def report(
    run_dir: Annotated[str, typer.Argument(help="a run folder (kfp.local: <pipeline_root>/<pipeline>-<time>)")],
    out: Annotated[str | None, typer.Option(help="the HTML file to write (default: RUN_DIR/report.html)")] = None,
) -> None:
    """Write one offline HTML page for a run: tasks in DAG order, states, metrics, Markdown, HTML, datasets."""
    try:
        path = write(run_dir, out)
    except ReportError as e:
        console.print(f"[red]cannot report:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    console.print(f"wrote {escape(path)}")
