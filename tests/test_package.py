"""The package's own rules: Keras 2 for TFRS, and the import directions of docs/architecture.md."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import recloop

ROOT = Path(recloop.__file__).parent
# what each package may import of ours (docs/architecture.md, "Layers"): arrows point down the table only
_LIBRARY = {"storage", "features", "baselines", "simulator", "ingest", "validation", "trainer", "serving"}
ALLOWED = {
    "storage": set(),  # the one storage layer: every package may use it
    "features": {"storage"},
    "baselines": {"storage", "features"},
    "simulator": {"storage", "features", "baselines"},
    "ingest": {"storage", "features"},
    "validation": {"storage", "features"},
    "trainer": {"storage", "features", "baselines"},
    "serving": {"storage", "features", "baselines"},
    "components": _LIBRARY,
    "pipelines": _LIBRARY | {"components"},
    "cli": _LIBRARY | {"components", "pipelines"},  # the front door: on top, nothing imports it
}


def _our_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "recloop" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_package_has_a_place_in_the_layout():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_nothing_imports_the_front_door():
    assert not [p for p, allowed in ALLOWED.items() if "cli" in allowed]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down_the_layout(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = _our_imports(path) - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(ROOT.parent)} imports recloop.{', recloop.'.join(sorted(bad))}"


def test_the_rule_catches_a_bad_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from recloop.cli import app\nimport recloop.simulator.world\nfrom . import sibling\n")
    assert _our_imports(bad) == {"cli", "simulator"}


def test_tensorflow_gets_keras_2_through_the_package():
    # a fresh interpreter: importing recloop first must be enough
    code = ("import recloop, os, tensorflow as tf; "
            "print(os.environ['TF_USE_LEGACY_KERAS'], type(tf.keras.layers.Dense(1)).__module__.split('.')[0])")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0"}  # even a user setting to the contrary
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    flag, keras = out.stdout.split()[-2:]
    assert flag == "1"
    assert keras == "tf_keras", f"TFRS 0.7.7 needs tf-keras (Keras 2), tf.keras is {keras}"
