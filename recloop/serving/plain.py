"""The exported towers and ranker evaluated in numpy (from ``plain.npz``, ``trainer.plain``), checked against
their SavedModels.

A request runs the query tower on one row and the ranker on a few hundred: in
TensorFlow most of that time is the call itself (binding a structured signature,
converting a dozen inputs), not the arithmetic. The same computation in numpy
(vectorised lookups over sorted vocabularies, embedding gathers, a few small
matrix products) answers in a fraction of it. The SavedModel stays the
reference: ``check`` runs both on a fixed probe set built from the model's own
vocabularies and boundaries (every known value, an unknown one, missing values,
lists of every length) and serving uses the arrays only when every output agrees
within ``TOLERANCE``; otherwise it serves with TensorFlow.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from recloop import storage

FILE = "plain.npz"
TOLERANCE = 1e-4  # absolute, on embeddings and probabilities (float32 sums in another order differ by ~1e-6)
Arrays = Mapping[str, np.ndarray]
Model = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class _Encoder:
    """One input's lookup (sorted tokens -> index) or buckets, and its embedding table."""

    embedding: np.ndarray
    listed: bool
    tokens: np.ndarray | None = None  # sorted, UTF-8 bytes
    index: np.ndarray | None = None  # the lookup index of each sorted token
    oov: int = 1
    oov_start: int = 0
    boundaries: np.ndarray | None = None

    @classmethod
    def of(cls, arrays: Arrays, name: str) -> _Encoder:
        p = f"enc/{name}/"
        embedding, listed = arrays[p + "embedding"], bool(arrays[p + "list"])
        if p + "boundaries" in arrays:
            return cls(embedding, listed, boundaries=arrays[p + "boundaries"].astype(np.float32))
        vocabulary, oov, mask = arrays[p + "vocabulary"].tolist(), int(arrays[p + "oov"]), bool(arrays[p + "mask"])
        start = int(mask)  # StringLookup: the mask (if any), then the OOV slots, then the vocabulary
        words = [w.encode("utf-8") for w in vocabulary[start + oov:]]
        index = list(range(start + oov, len(vocabulary)))
        if mask:  # the mask token "" (a list's padding) is index 0
            words, index = [b"", *words], [0, *index]
        order = np.argsort(np.array(words, dtype=bytes), kind="stable")
        return cls(embedding, listed, np.array(words, dtype=bytes)[order], np.array(index, np.int64)[order],
                   oov, start)

    def ids(self, values: np.ndarray) -> np.ndarray:
        if self.boundaries is not None:  # Bucketize: float32 boundaries, value < boundary
            return np.searchsorted(self.boundaries, values.astype(np.float32), side="right")
        assert self.tokens is not None and self.index is not None
        values = np.char.encode(values, "utf-8") if values.dtype.kind == "U" else values
        at = np.minimum(np.searchsorted(self.tokens, values), len(self.tokens) - 1)
        found = self.tokens[at] == values
        out = np.where(found, self.index[at], self.oov_start)
        if self.oov > 1 and not found.all():  # StringLookup hashes OOV values over its OOV slots
            import tensorflow as tf

            unknown = values[~found]
            out[~found] = self.oov_start + tf.strings.to_hash_bucket_fast(unknown, self.oov).numpy()
        return out

    def __call__(self, values: np.ndarray) -> np.ndarray:
        ids = self.ids(values)
        if not self.listed:
            return self.embedding[ids]
        present = (ids > 0).astype(np.float32)[..., None]  # index 0 is the padding (MeanOfPresent)
        total = (self.embedding[ids] * present).sum(axis=1)
        return total / np.maximum(present.sum(axis=1), 1.0)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


class _Plain:
    def __init__(self, arrays: Arrays):
        self.a = {k: np.asarray(v) for k, v in arrays.items()}
        self.inputs = self.a["inputs"].tolist()
        self.encoders = {n: _Encoder.of(self.a, n) for n in self.inputs}

    def _dense(self, prefix: str, x: np.ndarray, kernel: str = "kernel") -> np.ndarray:
        y = x @ self.a[f"{prefix}/{kernel}"]
        bias = self.a.get(f"{prefix}/bias")
        return y + bias if bias is not None and bias.size else y

    def _x0(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([self.encoders[n](features[n]) for n in self.inputs], axis=-1)


class Tower(_Plain):
    """``towers.Tower``: raw features -> {"embedding"}."""

    def __call__(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        y = self._dense("out", _relu(self._dense("hidden", self._x0(features))))
        if bool(self.a["normalize"]):
            y = y / np.sqrt(np.maximum((y * y).sum(axis=-1, keepdims=True), 1e-12))
        return {"embedding": y.astype(np.float32)}


class Ranker(_Plain):
    """``ranking.RankingModel`` at its serving position: raw features -> head probabilities and "score"."""

    def __init__(self, arrays: Arrays):
        super().__init__(arrays)
        self.crosses = sum(1 for k in self.a if k.startswith("cross/") and k.endswith("/diag"))
        self.deep = sum(1 for k in self.a if k.startswith("deep/") and k.endswith("/kernel"))
        table = self.a["position_bias"]
        self.position_bias = table[min(max(int(self.a["position"]), 0), len(table) - 1)]
        w = self.a["score_weights"]
        self.weights = w / w.sum()
        self.labels = self.a["labels"].tolist()

    def __call__(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x0 = self._x0(features)
        x = x0
        for i in range(self.crosses):
            p = f"cross/{i}"
            product = self._dense(p, x) if f"{p}/kernel" in self.a else \
                self._dense(p, x @ self.a[f"{p}/u"], kernel="v")  # low rank: U, then V and the bias
            diag = float(self.a[f"{p}/diag"])
            x = x0 * (product + diag * x if diag else product) + x
        for i in range(self.deep):
            x = _relu(self._dense(f"deep/{i}", x))
        logits = self._dense("heads", x) + self.position_bias
        probabilities = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        out = {label: probabilities[:, i] for i, label in enumerate(self.labels)}
        out["score"] = (probabilities @ self.weights).astype(np.float32)
        return out


def load(model_dir: str) -> Tower | Ranker | None:
    """The plain form of an exported model; None when its export has none (a version exported before it)."""
    path = posixpath.join(model_dir, FILE)
    if not storage.exists(path):
        return None
    import io

    with np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return Tower(arrays) if str(arrays["model"]) == "tower" else Ranker(arrays)


def tensorflow(signature: Any) -> Model:
    """A SavedModel signature behind the same interface: numpy columns in, numpy columns out."""
    import tensorflow as tf

    def call(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in signature(**{n: tf.constant(x) for n, x in features.items()}).items()}

    return call


def by_size(small: Model, large: Model, max_rows: int) -> Model:
    """``small`` for calls of up to ``max_rows`` rows, ``large`` above: numpy wins on a request's few hundred
    rows, TensorFlow (multi-threaded kernels) on the thousands a batch of concurrent requests brings (2 cores:
    400 rows 1.0 vs 1.5 ms, 1,600 rows 5.5 vs 3.3 ms)."""

    def call(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(features.values())))
        return small(features) if rows <= max_rows else large(features)

    return call


def probe(signature: Any, plain: Tower | Ranker, rows: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed set of inputs exercising every encoder: known tokens, an unknown one, missing values ("" and
    -1), lists from empty to full, values on and around every bucket boundary."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, spec in signature.structured_input_signature[1].items():
        enc = plain.encoders[name]
        shape = (rows, *spec.shape[1:])
        if enc.boundaries is not None:
            b = enc.boundaries.astype(np.float64)
            pool = np.concatenate([b, b - 0.5, b + 0.5, [-1.0, 0.0, 1e6]])
            values = rng.choice(pool, size=shape)
            out[name] = values.astype(spec.dtype.as_numpy_dtype)
        else:
            assert enc.tokens is not None
            pool = np.concatenate([enc.tokens, [b"", b"never-seen-in-training"]])
            values = rng.choice(pool, size=shape)
            if len(shape) == 2:  # a list: padded with "" after its present values
                lengths = rng.integers(0, shape[1] + 1, size=rows)
                values[np.arange(shape[1])[None, :] >= lengths[:, None]] = b""
            out[name] = values
    return out


def check(signature: Any, plain: Tower | Ranker) -> float:
    """The largest absolute difference between the SavedModel and its plain form over ``probe``'s inputs.

    Raises:
      ValueError: when they differ by more than ``TOLERANCE`` or do not give the same outputs.
    """
    inputs = probe(signature, plain)
    want, got = tensorflow(signature)(inputs), plain(inputs)
    if set(want) != set(got):
        raise ValueError(f"the plain model gives {sorted(got)}, the SavedModel {sorted(want)}")
    worst = max(float(np.max(np.abs(want[k].astype(np.float64) - got[k]))) for k in want)
    if not worst <= TOLERANCE:
        raise ValueError(f"the plain model differs from the SavedModel by {worst:.2e} (tolerance {TOLERANCE:g})")
    return worst
