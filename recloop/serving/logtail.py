"""Tail repair of the request log's line files: a kill inside ``write()`` can leave half a line.

A file is cut back to its last newline before the writer appends to it (``requestlog``), before a killed run's
spool is recovered (``logspool``) and before an upload (``logupload``), so a crash loses whole records, never
glues a new line onto a broken one. Each caller counts what it cut.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("recloop.serving.requestlog")  # the request log's one logger: operators filter on it


def repair_tail(path: str) -> int:
    """Cuts a file back to just after its last newline (to empty when it has none), logging a warning.

    Returns:
      The number of bytes cut: 0 when the file is missing, empty or ends with a newline.
    """
    if not os.path.exists(path):
        return 0
    fd = os.open(path, os.O_RDWR)
    try:
        size = end = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return 0
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            cut = os.pread(fd, end - start, start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        os.ftruncate(fd, keep)
        log.warning("request log: cut %d bytes of a partial last line from %s", size - keep, path)
        return size - keep
    finally:
        os.close(fd)
