"""Correctness checks that fail a training run loudly instead of shipping a wrong model.

Each raises ``TrainingCheckError`` naming what is wrong and where: a model input
that is a label or a logging fact, a feature that copies a label, a repeated
(request, item) pair, evaluation data not strictly later than training data,
and scores outside [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from recloop.features.examples import LABEL_COLUMNS, METADATA
from recloop.features.spec import FEATURES
from recloop.trainer.data import Examples


class TrainingCheckError(ValueError):
    """A training run that must not produce a model; the message says which check and why."""


def check_inputs(names: Iterable[str]) -> None:
    """Model inputs must be spec features: never a label, a logging fact or something unknown."""
    known = {f.name for f in FEATURES}
    for name in names:
        if name in LABEL_COLUMNS or name in METADATA:
            raise TrainingCheckError(f"model input {name!r} is a label or logging column (known only after the "
                                     "request was served): it would leak the answer")
        if name not in known:
            raise TrainingCheckError(f"model input {name!r} is not in the feature spec; known: {sorted(known)}")


def check_no_label_copies(rows: Examples, inputs: Iterable[str], min_rows: int = 100) -> None:
    """No input may reproduce a label: a numeric input equal to a label on every row is a leak."""
    if len(rows) < min_rows:
        return
    for name in inputs:
        values = rows.columns.get(name)  # streamed rows hold every numeric input; strings cannot copy a label
        if values is None or values.dtype.kind not in "iuf":
            continue
        for label in LABEL_COLUMNS:
            y = rows[label]
            if 0 < y.sum() < len(y) and np.array_equal(values.astype(np.float64), y.astype(np.float64)):
                raise TrainingCheckError(f"input {name!r} equals {label!r} on all {len(y)} rows: a label-derived "
                                         "feature; remove it from the inputs")


def check_unique_pairs(rows: Examples, split: str) -> None:
    """Each (request_id, item_id) pair at most once: duplicates double-count impressions."""
    requests, request = np.unique(rows["request_id"], return_inverse=True)
    items, item = np.unique(rows["item_id"], return_inverse=True)
    uniq, counts = np.unique(request.reshape(-1) * len(items) + item.reshape(-1), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        example = f"{requests[dup[0] // len(items)]}, {items[dup[0] % len(items)]}"
        raise TrainingCheckError(f"{split} split: {len(dup)} (request_id, item_id) pairs appear more than once, "
                                 f"e.g. ({example}); ingest drops duplicate impressions, so this data is not "
                                 "an ingest output or was concatenated twice")


def check_time_order(train: Examples, evaluation: Examples) -> None:
    """Every eval example strictly after every training example (no leakage from the future)."""
    last, first = int(train["ts"].max()), int(evaluation["ts"].min())
    if first <= last:
        raise TrainingCheckError(f"eval starts at ts {first}, not after the last training example at ts {last}: "
                                 "the split must be by time (are --data folders overlapping or out of order?)")


def check_scores(name: str, scores: Mapping[str, np.ndarray]) -> None:
    """Probabilities and combined scores must be finite and in [0, 1]."""
    for head, values in scores.items():
        bad = ~np.isfinite(values) | (values < 0) | (values > 1)
        if bad.any():
            raise TrainingCheckError(f"{name} {head}: {int(bad.sum())} scores outside [0, 1], e.g. "
                                     f"{values[bad][:3].tolist()}")
