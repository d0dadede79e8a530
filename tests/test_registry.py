"""The registry format and its reader: versions, the pointer (compare-and-swap), history."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from recloop.serving.registry import CURRENT, Registry, RegistryError, SwitchRefused, read_card

AT = dt.datetime(2026, 1, 19, 3, 0, tzinfo=dt.UTC)


def _version(root, name: str, complete: bool = True) -> None:
    folder = root / "versions" / name
    (folder / "ranking").mkdir(parents=True)
    if complete:
        (folder / "model_card.json").write_text(json.dumps({"version": name}))


def test_an_empty_registry_has_no_production_version(tmp_path):
    registry = Registry(str(tmp_path))
    assert registry.pointer() is None and registry.current() is None
    assert registry.versions() == [] and registry.history() == []


def test_switch_is_a_compare_and_swap_with_history(tmp_path):
    _version(tmp_path, "v20260111-aaaa")
    _version(tmp_path, "v20260118-bbbb")
    _version(tmp_path, "v20260125-half", complete=False)
    registry = Registry(f"file://{tmp_path}")
    assert registry.versions() == ["v20260111-aaaa", "v20260118-bbbb"]  # the incomplete one is not a version

    registry.switch("v20260111-aaaa", expected=None, reason="push", at=AT)
    assert registry.current() == f"file://{tmp_path}/versions/v20260111-aaaa"
    assert read_card(registry.current()) == {"version": "v20260111-aaaa"}
    with pytest.raises(SwitchRefused, match="names 'v20260111-aaaa', not None"):
        registry.switch("v20260118-bbbb", expected=None, reason="push", at=AT)
    with pytest.raises(RegistryError, match="v20260125-half.*model_card.json does not exist"):
        registry.switch("v20260125-half", expected="v20260111-aaaa", reason="push", at=AT)
    pointer = registry.switch("v20260118-bbbb", expected="v20260111-aaaa", reason="push", at=AT, note="blessed")
    assert (pointer.version, pointer.previous) == ("v20260118-bbbb", "v20260111-aaaa")
    registry.switch("v20260111-aaaa", expected="v20260118-bbbb", reason="rollback", at=AT + dt.timedelta(hours=1))
    assert [(p.version, p.reason) for p in registry.history()] == [
        ("v20260111-aaaa", "push"), ("v20260118-bbbb", "push"), ("v20260111-aaaa", "rollback")]
    assert registry.pointer().previous == "v20260118-bbbb"
    assert not list(tmp_path.glob("**/*.tmp-*"))  # temporary files were moved into place


def test_a_broken_pointer_or_a_missing_version_is_named(tmp_path):
    registry = Registry(str(tmp_path))
    (tmp_path / CURRENT).write_text("{not json")
    with pytest.raises(RegistryError, match="CURRENT is not a valid pointer"):
        registry.pointer()
    (tmp_path / CURRENT).write_text(json.dumps({"version": "v1", "switched_at": AT.isoformat(), "reason": "push"}))
    with pytest.raises(RegistryError, match="names version 'v1', which has no model_card.json"):
        registry.current()
