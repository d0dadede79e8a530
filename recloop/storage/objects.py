"""Whole objects at a URI: read, write, list, copy, on a local disk or an object store alike.

A write is whole or nothing where a reader looks: on a local disk the bytes go to a temporary
name in the same folder and are renamed over the target; on an object store one PUT is already
atomic (S3 and GCS show the old object or the new one, never part of one), so no temporary
object is needed. Paths inside a URI use ``/`` whatever the store.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import fsspec

_LOCAL = (None, "file", "local")


class StorageError(RuntimeError):
    """A location that cannot be used: no backend for its scheme, or not what was expected there."""


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``uri`` and the path inside it.

    Raises:
      StorageError: no fsspec backend is installed for the URI's scheme.
    """
    # no listings cache on object stores: another process (a push, the server's uploads) changes them
    options = {} if is_local(uri) else {"use_listings_cache": False}
    try:
        return fsspec.core.url_to_fs(uri, **options)
    except (ImportError, ValueError) as e:
        raise StorageError(f"{uri}: no storage backend for {fsspec.core.split_protocol(uri)[0]!r}:// ({e})") from None


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a path on this machine (a plain path or ``file://``)."""
    return fsspec.core.split_protocol(uri)[0] in _LOCAL


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended, ``/``-separated, the scheme kept (``s3://b/x`` + ``y`` = ``s3://b/x/y``)."""
    return posixpath.join(uri.rstrip("/") if uri.rstrip("/") else uri, *parts)


def exists(uri: str) -> bool:
    """Whether an object or a folder (a prefix with objects under it) exists at ``uri``."""
    fs, path = filesystem(uri)
    return fs.exists(path)


def listdir(uri: str) -> list[str]:
    """The names directly under ``uri``, sorted; empty when there is nothing there."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)
                  if p.rstrip("/") != path.rstrip("/"))


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``.

    Raises:
      FileNotFoundError: naming ``uri`` when there is none.
    """
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such object") from None


def read_text(uri: str) -> str:
    """The object at ``uri`` as UTF-8 text."""
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    """The JSON document at ``uri``."""
    return json.loads(read_bytes(uri))


def write_bytes(uri: str, data: bytes) -> None:
    """Writes ``data`` as the whole object at ``uri``: a reader sees the old object or the new one."""
    fs, path = filesystem(uri)
    if not is_local(uri):
        fs.pipe_file(path, data)  # one PUT: atomic on S3 and GCS
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def create(uri: str, data: bytes) -> bool:
    """Writes ``data`` at ``uri`` only if nothing is there (S3 ``If-None-Match: *``, GCS generation 0, an
    exclusive open on a disk); returns whether this call created it. Two callers: exactly one wins."""
    fs, path = filesystem(uri)
    if is_local(uri):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with open(path, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:  # s3fs and gcsfs turn the store's 412 Precondition Failed into this
        return False
    return True


def write_text(uri: str, text: str) -> None:
    """Writes ``text`` (UTF-8) as the whole object at ``uri``."""
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, value: Any) -> None:
    """Writes one JSON document, indented for people to read, as the whole object at ``uri``."""
    write_text(uri, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def download(uri: str, local: str) -> str:
    """Copies the object or folder at ``uri`` to the local path ``local``; returns ``local``.

    Raises:
      FileNotFoundError: naming ``uri`` when there is nothing there.
    """
    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri}: no such object or folder")
    if fs.isdir(path):
        os.makedirs(local, exist_ok=True)
        for src in fs.find(path):
            target = os.path.join(local, *posixpath.relpath(src, path).split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get_file(src, target)
    else:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        fs.get_file(path, local)
    return local


def upload(local: str, uri: str) -> None:
    """Copies the local file or folder ``local`` to ``uri``, each file a whole object."""
    fs, path = filesystem(uri)
    if os.path.isdir(local):
        for folder, _, names in sorted(os.walk(local)):
            for name in sorted(names):
                src = os.path.join(folder, name)
                rel = os.path.relpath(src, local).replace(os.sep, "/")
                _put_file(fs, src, posixpath.join(path, rel))
    else:
        _put_file(fs, local, path)


def _put_file(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    fs.makedirs(posixpath.dirname(dst), exist_ok=True)  # a no-op on object stores
    fs.put_file(src, dst)


def remove(uri: str) -> None:
    """Removes the object or folder at ``uri``; nothing there is fine."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)
