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
The pointer is written whole to a temporary name and moved over ``CURRENT``: a
rename on a file system, a single-object write on an object store, so a reader
sees the old pointer or the new one, never half of one. ``switch`` is a
compare-and-swap: it refuses when the pointer no longer names the version the
caller expected. The CAS is a read-then-write, safe against a concurrent push
that finished first, not against two writers in the same instant; one pipeline
pushes at a time.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import uuid

import fsspec
from pydantic import BaseModel, ConfigDict

from recloop.features import logs

CURRENT = "CURRENT"
CARD = "model_card.json"


class RegistryError(RuntimeError):
    """A registry that cannot be read as expected; the message names the path."""


class SwitchRefused(RegistryError):
    """The pointer moved since the caller read it (compare-and-swap failed)."""


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
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)

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
        if pointer is None:
            return None
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
        self._write(self._path("history", f"{entries:06d}-{version}.json"), data)
        self._write(self._path(CURRENT), data)  # last: the switch itself
        return pointer

    def _write(self, path: str, data: bytes) -> None:
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)


def read_card(version_dir: str) -> dict:
    """A version's ``model_card.json``."""
    return logs.read_json(posixpath.join(version_dir, CARD))
