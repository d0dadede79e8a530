"""The model registry: one immutable directory per version and a pointer to the one in production.

Layout, on any fsspec URI (a local path here; gs:// or s3:// on a cluster, as
KServe's storage initializer reads them):

    REGISTRY/versions/<version>/   a trainer export (model_card.json, query_tower/, candidate_tower/,
                                   index/, ranking/, tables/, validation/) plus blessing.json and
                                   infra_blessing.json; never changed once written
    REGISTRY/CURRENT               the pointer: one small JSON object naming the production version
    REGISTRY/history/<n>.json      one object per pointer switch, never rewritten (append-only
                                   without appends, so it works on object stores)

A version is complete once its ``model_card.json`` exists (push copies it last).
The pointer is written whole (``storage.write_bytes``: a temporary name renamed
over ``CURRENT`` on a disk, a single PUT on an object store), so a reader sees
the old pointer or the new one, never half of one. ``switch`` is a
compare-and-swap: it refuses when the pointer no longer names the version the
caller expected. The CAS is a read-then-write, safe against a concurrent push
that finished first, not against two writers in the same instant; one pipeline
pushes at a time.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Callable

import fsspec
from pydantic import BaseModel, ConfigDict

from recloop import storage
from recloop.features import logs

CURRENT = "CURRENT"
CARD = "model_card.json"


class RegistryError(RuntimeError):
    """A registry that cannot be read as expected; the message names the path."""


class SwitchRefused(RegistryError):
    """The pointer moved since the caller read it (compare-and-swap failed)."""


class PushRefused(RegistryError):
    """A candidate without a passing blessing and infra blessing (push needs ``force`` then)."""


class Pointer(BaseModel):
    """What ``CURRENT`` holds, and each history entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    previous: str | None = None
    switched_at: dt.datetime
    reason: str  # push, rollback, force-push, ...
    note: str = ""


class Registry:
    """Reads (and switches the pointer of) a registry at ``uri``."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        # no listings cache (storage.filesystem): servers poll this registry while pipelines push to it
        self.fs, self.root = storage.filesystem(self.uri)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def version_dir(self, version: str) -> str:
        """The URI of a version's directory (whether or not it exists)."""
        return posixpath.join(self.uri, "versions", version)

    def versions(self) -> list[str]:
        """Complete versions (with a model card), oldest name first."""
        if not self.fs.exists(self._path("versions")):
            return []
        names = sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self._path("versions"), detail=False))
        return [v for v in names if self.fs.exists(self._path("versions", v, CARD))]

    def pointer(self) -> Pointer | None:
        """The production pointer, or None for a registry nothing was pushed to yet.

        Raises:
          RegistryError: when ``CURRENT`` exists but is not a valid pointer.
        """
        path = self._path(CURRENT)
        if not self.fs.exists(path):
            return None
        text = self.fs.cat_file(path).decode("utf-8")
        try:
            return Pointer.model_validate_json(text)
        except ValueError as e:
            raise RegistryError(f"{self.uri}/{CURRENT} is not a valid pointer: {e}") from None

    def current(self) -> str | None:
        """The URI of the production version, or None before the first push.

        Raises:
          RegistryError: when the pointer names a version that is missing or incomplete.
        """
        pointer = self.pointer()
        return None if pointer is None else self.pointed_dir(pointer)

    def pointed_dir(self, pointer: Pointer) -> str:
        """The URI of the version a pointer names (read the pointer once, then this: both name one version).

        Raises:
          RegistryError: when that version is missing or incomplete.
        """
        if not self.fs.exists(self._path("versions", pointer.version, CARD)):
            raise RegistryError(f"{self.uri}/{CURRENT} names version {pointer.version!r}, which has no "
                                f"{CARD} under versions/: incomplete or deleted")
        return self.version_dir(pointer.version)

    def history(self) -> list[Pointer]:
        """Every pointer switch, oldest first."""
        if not self.fs.exists(self._path("history")):
            return []
        paths = sorted(self.fs.ls(self._path("history"), detail=False))
        return [Pointer.model_validate_json(self.fs.cat_file(p)) for p in paths if p.endswith(".json")]

    def switch(self, version: str, expected: str | None, reason: str, at: dt.datetime, note: str = "") -> Pointer:
        """Points production at ``version`` if it still points at ``expected`` (None: nothing yet).

        Raises:
          RegistryError: when ``version`` is not a complete version of this registry.
          SwitchRefused: when the pointer no longer names ``expected``.
        """
        if not self.fs.exists(self._path("versions", version, CARD)):
            raise RegistryError(f"cannot point at {version!r}: {self.version_dir(version)}/{CARD} does not exist")
        now = self.pointer()
        found = now.version if now else None
        if found != expected:
            raise SwitchRefused(f"{self.uri}/{CURRENT} names {found!r}, not {expected!r} as expected: another "
                                "push or rollback happened since; re-run the gate against the new production model")
        pointer = Pointer(version=version, previous=found, switched_at=at, reason=reason, note=note)
        data = pointer.model_dump_json().encode("utf-8")
        entries = len(self.history())
        storage.write_bytes(storage.join(self.uri, "history", f"{entries:06d}-{version}.json"), data)
        storage.write_bytes(storage.join(self.uri, CURRENT), data)  # last: the switch itself (whole, atomic)
        return pointer

    def push(self, model_dir: str, at: dt.datetime, blessing: str | None = None, infra_blessing: str | None = None,
             force: bool = False, note: str = "", progress: Callable[[str], None] = lambda step: None) -> Pointer:
        """Copies a trainer export into ``versions/<version>/`` and points production at it.

        The gate's ``blessing.json`` must say ``blessed`` and name the production version it was measured
        against (``baseline_version``, None on a first push): the pointer is switched only if it still names
        that version (compare-and-swap). ``infra_blessing.json`` must say ``passed``. Both are copied into
        the version. Files are copied with ``model_card.json`` last, so a push killed at any step leaves a
        version that is not complete (ignored, and cleaned by the next push of it) and the old pointer.

        Args:
          blessing, infra_blessing: the files (default: ``blessing.json``, ``infra_blessing.json`` in ``model_dir``).
          force: push without passing blessings and whatever production is now; recorded in history.
          progress: told each step (``copy <file>``, ``card``, ``switch``).

        Raises:
          PushRefused: a blessing missing or not passing, without ``force``.
          SwitchRefused: production moved since the blessing was measured.
          RegistryError: the version exists, complete, with different contents (versions are immutable).
        """
        card = read_card(model_dir)
        version = card["version"]
        files = {"blessing.json": blessing or posixpath.join(model_dir, "blessing.json"),
                 "infra_blessing.json": infra_blessing or posixpath.join(model_dir, "infra_blessing.json")}
        found = {name: _read_optional(path) for name, path in files.items()}
        problems = []
        if not (found["blessing.json"] or {}).get("blessed"):
            problems.append(f"{files['blessing.json']}: " + ("missing" if found["blessing.json"] is None
                                                              else "not blessed"))
        if not (found["infra_blessing.json"] or {}).get("passed"):
            problems.append(f"{files['infra_blessing.json']}: " + ("missing" if found["infra_blessing.json"] is None
                                                                    else "infra validation did not pass"))
        if problems and not force:
            raise PushRefused(f"will not push {version}: " + "; ".join(problems) + " (--force pushes anyway, "
                              "recorded in the history)")
        now = self.pointer()
        expected = now.version if now else None
        if not force:
            expected = (found["blessing.json"] or {}).get("baseline_version")
            if expected != (now.version if now else None):
                raise SwitchRefused(f"{version} was evaluated against {expected!r}, but production is now "
                                    f"{now.version if now else None!r}: re-run the gate against it")
        if self.fs.exists(self._path("versions", version, CARD)):  # complete already: pushed before
            if read_card(self.version_dir(version)) != card:
                raise RegistryError(f"{self.version_dir(version)} exists with another model card: versions are "
                                    "immutable; train again for a new version")
        else:
            self._copy_version(model_dir, version, {n: p for n, p in files.items() if found[n] is not None}, progress)
        progress("switch")
        reason = "force-push" if force and problems else "push"
        note = "; ".join(filter(None, [note, *(f"forced past: {p}" for p in problems if force)]))
        return self.switch(version, expected, reason, at, note)

    def _copy_version(self, model_dir: str, version: str, extra: dict[str, str],
                      progress: Callable[[str], None]) -> None:
        """Copies the export and the ``extra`` files (name -> path), the model card last."""
        src_fs, src_root = storage.filesystem(model_dir)
        target = self._path("versions", version)
        if self.fs.exists(target):  # an earlier push died before its model card: start over
            self.fs.rm(target, recursive=True)
        files = [(src_fs, p, posixpath.relpath(p, src_root)) for p in sorted(src_fs.find(src_root))
                 if posixpath.relpath(p, src_root) not in (CARD, *extra)]
        files += [(*storage.filesystem(path), name) for name, path in extra.items()]
        for fs, path, rel in files:
            progress(f"copy {rel}")
            self._put(fs, path, posixpath.join(target, rel))
        progress("card")
        self._put(src_fs, posixpath.join(src_root, CARD), posixpath.join(target, CARD))  # last: now complete

    def _put(self, src_fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
        self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
        with src_fs.open(src, "rb") as fin, self.fs.open(dst, "wb") as fout:
            while chunk := fin.read(1 << 22):
                fout.write(chunk)

    def rollback(self, at: dt.datetime, to: str | None = None, note: str = "") -> Pointer:
        """Points production back at ``to`` (default: the version before the current one).

        Raises:
          RegistryError: nothing to roll back to, or ``to`` is not a complete version.
        """
        now = self.pointer()
        if now is None:
            raise RegistryError(f"{self.uri}: nothing was pushed; there is nothing to roll back")
        target = to or now.previous
        if target is None:
            raise RegistryError(f"{self.uri}: {now.version} is the first version pushed; nothing before it")
        return self.switch(target, now.version, "rollback", at, note)



def _read_optional(path: str) -> dict | None:
    fs, local = storage.filesystem(path)
    return logs.read_json(path) if fs.exists(local) else None


def read_card(version_dir: str) -> dict:
    """A version's ``model_card.json``."""
    return logs.read_json(posixpath.join(version_dir, CARD))
