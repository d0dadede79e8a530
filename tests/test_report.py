"""``recloop report`` on a real ``kfp.local`` run folder, checked in headless Chromium with networking off.

The run: prepare (Dataset + Markdown) -> train (Metrics + HTML + Model + a returned string) -> push (raises) ->
announce (never runs). A pipeline parameter carries a script tag into metadata, Markdown and the run header; the
artifacts reach for a loopback server, which must see no request.
"""

import json  # no `from __future__ import annotations`: kfp reads the components' annotations as types
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import recloop  # noqa: F401  (first: sets the Keras switch before anything imports TensorFlow)

# isort: split
import pytest
import typer
from chromium import dump_dom, painted, screenshot
from kfp import compiler, dsl, local
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output
from typer.testing import CliRunner

from recloop.cli.report import ReportError, load, render, report, write

EVIL = "<script>alert(1)</script>"
SECONDS = {"prepare": 1.25, "train": 2.5, "push": 0.75}


@dsl.component(base_image="python:3.11")
def prepare(rows: int, note: str, leak: str, examples: Output[Dataset], summary: Output[Markdown]):
    import os

    os.makedirs(os.path.join(examples.path, "train"))
    with open(os.path.join(examples.path, "train", "part-0.jsonl"), "w") as f:
        f.write("x" * 2048)
    with open(os.path.join(examples.path, "schema.txt"), "w") as f:
        f.write("abc")
    examples.metadata.update({"rows": rows, "note": note})
    with open(summary.path, "w") as f:
        f.write(f"# Ingest summary\n\n## Sizes\n\n| split | rows |\n|---|---|\n| train | {rows} |\n\n"
                f"{note} <img src=x onerror=\"document.title='pwned'\"> ![chart]({leak}/markdown.png)\n")


@dsl.component(base_image="python:3.11")
def train(examples: Input[Dataset], leak: str, metrics: Output[Metrics], plots: Output[HTML],
          model: Output[Model]) -> str:
    metrics.log_metric("recall_at_100", 0.4123456789)
    metrics.log_metric("examples", 1234)
    with open(plots.path, "w") as f:  # a magenta box, and a cyan one painted by the page's own script
        f.write('<!doctype html><html><body style="margin:0">'
                '<div style="width:300px;height:150px;background:#ff00ff">plot-box</div>'
                f'<div id="js" style="width:300px;height:150px"></div><img src="{leak}/frame.png">'
                "<script>document.getElementById('js').style.background = '#00ffff'</script></body></html>")
    with open(model.path, "w") as f:
        f.write("weights")
    model.metadata["framework"] = "tfrs"
    return "candidate-7"


@dsl.component(base_image="python:3.11")
def push(model: Input[Model]) -> str:
    raise RuntimeError("registry unreachable")


@dsl.component(base_image="python:3.11")
def announce(version: str) -> str:
    return version


@dsl.pipeline(name="weekly-demo")
def weekly(rows: int = 3, note: str = "", leak: str = ""):
    prepared = prepare(rows=rows, note=note, leak=leak)
    trained = train(examples=prepared.outputs["examples"], leak=leak)
    pushed = push(model=trained.outputs["model"])
    announce(version=pushed.output)


@pytest.fixture(scope="module")
def leak():
    """A loopback server that records every request: an offline page must make none."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, leak) -> Path:
    """A real kfp.local run folder plus what ``recloop run`` adds: pipeline.yaml and run.json."""
    root = tmp_path_factory.mktemp("kfp-root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=False)
    weekly(rows=3, note=EVIL, leak=leak[0])
    (folder,) = root.glob("weekly-demo-*")
    compiler.Compiler().compile(weekly, str(folder / "pipeline.yaml"))
    tasks = {name: {"state": "SUCCEEDED", "seconds": s} for name, s in SECONDS.items()}
    tasks["push"]["state"], tasks["announce"] = "FAILED", {"state": "NOT_RUN", "seconds": None}
    (folder / "run.json").write_text(json.dumps({
        "pipeline": "weekly-demo", "parameters": {"rows": 3, "note": EVIL, "leak": leak[0]}, "state": "FAILED",
        "error": "Task 'push' failed: RuntimeError: registry unreachable", "tasks": tasks}))
    return folder


class Dom(HTMLParser):
    """The elements (tag, attributes) and the text of a page, as a browser parsed them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def page(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = Path(write(str(run_dir), str(tmp_path_factory.mktemp("report") / "report.html")))
    return path, dump_dom(path, tmp_path_factory.mktemp("profile"))


def test_the_page_shows_tasks_in_dag_order_with_states_outputs_and_errors(run_dir, page):
    _, dom = page
    assert re.findall(r'<a href="#t(\d)">(\w+)</a>', dom) == [
        ("1", "prepare"), ("2", "train"), ("3", "push"), ("4", "announce")]  # not alphabetical: dependencies first
    assert re.findall(r'<h2 id="t\d">\d\. (\w+) <span class="state (\w+)">', dom) == [
        ("prepare", "SUCCEEDED"), ("train", "SUCCEEDED"), ("push", "FAILED"), ("announce", "NOT_RUN")]
    started = re.search(r"-(\d{4}-\d\d-\d\d)-(\d\d)-(\d\d)-(\d\d)-\d{6}$", run_dir.name).groups()
    assert f"<td>started</td><td>{started[0]} {':'.join(started[1:])}</td>" in dom
    assert "<td>seconds in tasks</td><td>4.5</td>" in dom and "<td>2.5</td>" in dom  # 1.25 + 2.5 + 0.75
    push_section = dom[dom.index('<h2 id="t3">'):dom.index('<h2 id="t4">')]
    assert "Task 'push' failed: RuntimeError: registry unreachable" in push_section
    assert "no outputs" in dom[dom.index('<h2 id="t4">'):]
    train_section = dom[dom.index('<h2 id="t2">'):dom.index('<h2 id="t3">')]
    assert '<td>recall_at_100</td><td><span title="0.4123456789">0.412346</span></td>' in train_section
    assert "<td>examples</td><td>1234</td>" in train_section
    assert "<td>Output</td><td>candidate-7</td>" in train_section
    assert f'{run_dir / "train" / "model"}</p>' in train_section and "<td>framework</td><td>tfrs</td>" in train_section
    assert "<td>model</td><td>7 B</td>" in train_section
    prepare_section = dom[:dom.index('<h2 id="t2">')]
    assert '<div class="md"><h1>Ingest summary</h1>' in prepare_section and "<h2>Sizes</h2>" in prepare_section
    assert "<td>train/</td><td>2.0 KiB</td>" in prepare_section and "<td>schema.txt</td><td>3 B</td>" in prepare_section
    assert "<td>rows</td><td>3</td>" in prepare_section and "[image: chart]" in prepare_section
    (frame,) = [attrs for tag, attrs in Dom(dom).elements if tag == "iframe"]
    assert frame["srcdoc"] == (run_dir / "train" / "plots").read_text() and frame["sandbox"] == "allow-scripts"


def test_untrusted_values_are_text_and_nothing_points_outside(page):
    path, dom = page
    parsed = Dom(dom)
    text = "".join(parsed.text)
    assert text.count(EVIL) == 3  # the parameter, the dataset metadata, the Markdown paragraph
    assert "<img src=x onerror=\"document.title='pwned'\">" in text
    tags = [tag for tag, _ in parsed.elements]
    assert "script" not in tags and "img" not in tags and "<title>weekly-demo: run report</title>" in dom
    links = [v for _, attrs in parsed.elements for k, v in attrs.items() if k in ("src", "href") and v]
    assert links and all(v.startswith("#") for v in links), links
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", path.read_text(), re.IGNORECASE)


def test_the_page_paints_offline_and_the_html_artifact_runs_in_its_frame(page, leak, tmp_path):
    path, _ = page
    pixels = screenshot(path, tmp_path / "page.png", tmp_path / "profile", size=(1200, 2600))
    assert painted(pixels, (255, 255, 255)) < pixels.shape[0] * pixels.shape[1] * 0.97  # not blank
    assert painted(pixels, (0x13, 0x73, 0x33)) > 200  # SUCCEEDED badges' green text
    assert painted(pixels, (255, 0, 255)) > 0.9 * 300 * 150  # the artifact's box, inside the iframe
    assert painted(pixels, (0, 255, 255)) > 0.9 * 300 * 150  # its own script ran, in the sandbox
    assert leak[1] == []  # the Content-Security-Policy held: neither the frame nor the Markdown image fetched


def test_without_run_json_states_come_from_the_folders(run_dir, tmp_path):
    copy = tmp_path / run_dir.name  # elsewhere: the artifact uris point at the original, the copy is shown
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("run.json", "report.html"))
    run = load(str(copy))
    assert [(t.name, t.state, t.seconds) for t in run.tasks] == [
        ("prepare", "SUCCEEDED", None), ("train", "SUCCEEDED", None), ("push", "NOT_RUN", None),
        ("announce", "NOT_RUN", None)]
    assert run.state == "INCOMPLETE" and run.parameters == {"rows": 3, "note": "", "leak": ""}
    assert run.error is None and run.seconds is None and "no run.json" in run.notes[0]
    html = render(str(copy))
    assert f'{copy / "train" / "model"}</p>' in html and str(run_dir) not in html
    (copy / "pipeline.yaml").unlink()
    run = load(str(copy))
    assert [(t.name, t.state) for t in run.tasks] == [("prepare", "SUCCEEDED"), ("train", "SUCCEEDED")]  # finish order
    assert run.state == "UNKNOWN" and run.name == "weekly-demo"
    html = render(str(copy))
    assert '<h3>metrics <span class="note">Metrics</span></h3>' in html and "0.412346" in html  # guessed
    assert '<h3>plots <span class="note">HTML</span></h3><div class="frame"><iframe' in html


def test_a_report_needs_neither_tensorflow_nor_kfp(run_dir):
    code = ("import sys; from recloop.cli.report import render; render(sys.argv[1]); "
            "print(sorted({'tensorflow', 'kfp', 'tfx_bsl'} & {m.split('.')[0] for m in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(report)
    return app


def test_the_command_writes_the_page_and_exits_2_with_the_reason(run_dir, tmp_path):
    result = CliRunner().invoke(_cli(), [str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").read_text().startswith("<!doctype html>")
    out = tmp_path / "pages" / "weekly.html"
    result = CliRunner().invoke(_cli(), [str(run_dir), "--out", str(out)])
    assert result.exit_code == 0 and out.is_file() and str(out) in " ".join(result.output.split())
    for folder, reason in [(tmp_path / "missing", "no such folder; expected a pipeline run folder"),
                           (tmp_path / "pages", ("not a pipeline run folder: expected pipeline.yaml, run.json or "
                                                 "task folders holding executor_output.json")),
                           (run_dir.parent, f"this looks like a pipeline root, pass a run: {run_dir}")]:
        result = CliRunner().invoke(_cli(), [str(folder)])
        text = " ".join(result.output.split())
        assert result.exit_code == 2 and f"cannot report: {folder}: " in text and reason in text, text


@pytest.mark.parametrize("name, content, expected", [
    ("run.json", "{", "run.json: expected recloop run's run.json (JSON)"),
    ("run.json", '{"tasks": []}', "run.json: expected an object with pipeline, parameters, state, error and tasks"),
    ("run.json", '{"tasks": {"train": "SUCCEEDED"}}', "run.json: tasks.train: expected an object with state"),
    ("pipeline.yaml", "a: [1", "pipeline.yaml: expected a compiled KFP pipeline"),
    ("pipeline.yaml", "a: 1", "pipeline.yaml: expected a compiled KFP pipeline (a YAML document with root.dag.tasks)"),
    ("train/executor_output.json", "[]", "executor_output.json: expected an object with parameterValues"),
])
def test_a_bad_file_is_named_with_what_was_expected(run_dir, tmp_path, name, content, expected):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / name).write_text(content)
    with pytest.raises(ReportError, match=re.escape(expected)):
        render(str(copy))
