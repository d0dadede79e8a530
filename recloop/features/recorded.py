"""The declaration travels with the data and the model: written beside them, checked when read.

Ingest writes the active declaration into its output folder and the trainer into
its export (``features.yaml``); the trainer checks each ingest output it reads and
the server each model it loads against the active one, so a process whose
``RECLOOP_FEATURES`` differs from the one that wrote them fails with a clear error
instead of reading columns that mean something else. A folder without a recorded
declaration was written before there were declarations: it used the default one.
"""

from __future__ import annotations

from recloop import storage
from recloop.features import declaration, spec

FILE = declaration.DEFAULT  # features.yaml


class DeclarationMismatch(ValueError):
    """Data or a model made under another feature declaration than the active one."""


def write(folder: str) -> str:
    """Writes the active declaration to ``folder/features.yaml`` (any URI); returns its URI."""
    uri = storage.join(folder, FILE)
    storage.write_text(uri, spec.ACTIVE.to_yaml())
    return uri


def read(folder: str) -> declaration.Declaration:
    """The declaration recorded in ``folder`` (an ingest output or an export), or the default one when none is."""
    uri = storage.join(folder, FILE)
    return declaration.load(uri) if storage.exists(uri) else spec.DEFAULT


def check(folder: str, what: str, shown: str | None = None) -> None:
    """Raises unless ``folder`` was made under the active declaration (descriptions aside).

    Args:
      what: what the folder is, for the message (``--data folder``, ``model``).
      shown: the folder's name in the message, when ``folder`` is a local copy of it.

    Raises:
      DeclarationMismatch: naming the folder's declaration, the active one and ``RECLOOP_FEATURES``.
    """
    differs = difference(folder)
    if differs is None:
        return
    uri = storage.join(folder, FILE)
    recorded = storage.join(shown or folder, FILE) if storage.exists(uri) else "none recorded: the default one"
    active = spec.SOURCE or f"the default one (recloop/features/{FILE})"
    raise DeclarationMismatch(
        f"{what} {shown or folder} was made under another feature declaration ({recorded}) than the active one "
        f"({spec.ENV}={active}): {differs}; set {spec.ENV} to the declaration it was made with")


def difference(folder: str) -> str | None:
    """How ``folder``'s declaration differs from the active one (the features only in each), or None when equal."""
    theirs = read(folder)
    if theirs.comparable() == spec.ACTIVE.comparable():
        return None
    ours, mine = {f.name for f in spec.ACTIVE.features}, {f.name for f in theirs.features}
    if mine == ours:
        return "same features, other attributes or roles"
    return f"features only there: {sorted(mine - ours)}, only here: {sorted(ours - mine)}"
