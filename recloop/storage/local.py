"""Local views of a URI, for the libraries that read or write only local paths.

TensorFlow reads and writes SavedModels, and TFDV its statistics and schemas, on local paths (and
gs:// for TensorFlow, but not s3://: TF 2.16 has no S3 filesystem). A step hands them a local
view: the path itself when the URI is local, else a temporary copy that goes away after use
(``local_view``, ``local_views``), or a temporary file that is uploaded whole when the work succeeded
(``local_file``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence

from recloop.storage.objects import download, exists, filesystem, is_local, upload


@contextlib.contextmanager
def local_view(uri: str, missing_ok: bool = False) -> Iterator[str | None]:
    """A local path holding what is at ``uri`` (a file or a folder) for the ``with`` block.

    Args:
      missing_ok: yield None instead of raising when nothing is at ``uri``.

    Raises:
      FileNotFoundError: naming ``uri`` when nothing is there (and not ``missing_ok``).
    """
    if is_local(uri):
        path = filesystem(uri)[1]
        if not os.path.exists(path):
            if missing_ok:
                yield None
                return
            raise FileNotFoundError(f"{uri}: no such file or folder")
        yield path
        return
    if missing_ok and not exists(uri):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="recloop-view-") as tmp:
        yield download(uri, os.path.join(tmp, os.path.basename(uri.rstrip("/")) or "object"))


@contextlib.contextmanager
def local_views(uris: Sequence[str | None]) -> Iterator[list[str | None]]:
    """``local_view`` of each URI for the ``with`` block (None stays None): the inputs of a command that
    reads only local paths, such as TFRecords for TensorFlow."""
    with contextlib.ExitStack() as stack:
        yield [None if uri is None else stack.enter_context(local_view(uri)) for uri in uris]


@contextlib.contextmanager
def local_file(uri: str) -> Iterator[str]:
    """A local path to write the one file ``uri`` through; on a remote ``uri`` the file is uploaded as a whole
    object when the ``with`` block ends without an exception."""
    if is_local(uri):
        path = filesystem(uri)[1]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="recloop-out-") as tmp:
        path = os.path.join(tmp, os.path.basename(uri))
        yield path
        upload(path, uri)
