"""The oracle: the simulator's hidden relevance, read back from a simulation's ``truth/``.

Benchmarks and offline evaluation use it to show the best achievable ranking
(rank every item by the relevance the simulated members act on). It is never a
training input: nothing outside ``truth/`` may depend on it.

``Oracle.load(sim_dir)`` rebuilds the ``World`` from ``truth/world.npz`` (every
hidden parameter, written by ``simulate`` after the last week) and
``simulation.json`` (seed, scale, start, drifts), then scores with
``behaviour.relevance``, the same function the simulation sampled clicks from,
so its scores equal ``truth/impressions`` exactly. Drifts are honoured: the
taste shift is on for requests whose day falls in a week where a
``taste-shift`` drift is active (it applies to every member at once); the
renamed platform (``Android``) means ``android``, as it did for the members;
the other serving bugs change only the logs and a new category is already in
the catalog arrays.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow_hotfix  # noqa: F401  CVE-2023-47248: pyarrow 10 is pinned (tfx-bsl); refuse its unsafe type

from recloop import storage
from recloop.features import logs
from recloop.features.spec import PLATFORMS
from recloop.simulator import behaviour
from recloop.simulator.drift import RENAMED_PLATFORM, Drift, parse_drift
from recloop.simulator.world import SCALES, Creators, Items, Members, Scale, World, item_id

_PLATFORM_INDEX = {name: i for i, name in enumerate(PLATFORMS)} | {RENAMED_PLATFORM[1]: PLATFORMS.index(
    RENAMED_PLATFORM[0])}
_EPOCH = dt.date(1970, 1, 1).toordinal()


def member_id(index: int) -> str:
    """The public id of the member at a world index (as ``World.member_ids``)."""
    return f"m{index:07d}"


def parse_member_id(text: str) -> int:
    """The world index of a member id (``m0000123`` -> 123); ValueError when it is not one."""
    return _parse(text, "m", member_id)


def parse_item_id(text: str) -> int:
    """The world index of an item id (``i000123`` -> 123); ValueError when it is not one."""
    return _parse(text, "i", item_id)


def _parse(text: Any, prefix: str, fmt) -> int:
    if isinstance(text, str) and text[:1] == prefix and text[1:].isdigit():
        index = int(text[1:])
        if fmt(index) == text:  # exactly the world's format: no "i12", no "i+00012"
            return index
    raise ValueError(f"{text!r} is not a {'member' if prefix == 'm' else 'item'} id ({fmt(123)!r})")


class Oracle:
    """The simulator's hidden relevance, read from a simulation's truth/ folder."""

    def __init__(self, world: World, drifts: Sequence[Drift] = (), sim_dir: str | None = None):
        self.world = world
        self.drifts = list(drifts)
        self.sim_dir = sim_dir
        self._impressions: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None

    @classmethod
    def load(cls, sim_dir: str) -> Oracle:
        """Reads ``<sim_dir>/truth/world.npz`` and ``<sim_dir>/simulation.json`` (any fsspec path).

        Raises:
          FileNotFoundError: naming the missing file (a simulation still running, or
            one from before ``write_world``, has no ``world.npz``).
        """
        sim_dir = sim_dir.rstrip("/")
        manifest_path, npz_path = f"{sim_dir}/simulation.json", f"{sim_dir}/truth/world.npz"
        fs, _ = storage.filesystem(sim_dir)
        for path, what in ((manifest_path, "the simulation's parameters"),
                           (npz_path, "the hidden world, written by simulate after its last week")):
            if not fs.exists(storage.filesystem(path)[1]):
                raise FileNotFoundError(f"oracle: {path} not found ({what}); is {sim_dir} a finished simulation?")
        manifest = logs.read_json(manifest_path)
        params = manifest["params"]
        with fsspec.open(npz_path, "rb") as f, np.load(f) as npz:
            arrays = {name: npz[name] for name in npz.files}
        groups = {}
        for group, kind in (("items", Items), ("members", Members), ("creators", Creators)):
            groups[group] = kind(**{name.split(".", 1)[1]: value for name, value in arrays.items()
                                    if name.startswith(group + ".")})
        sizes = params.get("scale_sizes")
        scale = Scale(**sizes) if sizes else SCALES[params["scale"]]
        drifts = [parse_drift(d) for d in params.get("drifts", [])]
        weeks = len(manifest.get("weeks", []))
        world = World(seed=int(params["seed"]), scale=scale, start=dt.date.fromisoformat(params["start"]),
                      weeks_built=weeks, **groups,
                      new_category_weeks={w for w in range(weeks) for d in drifts
                                          if d.kind == "new-category" and d.active(w)})
        return cls(world, drifts, sim_dir)

    @property
    def n_members(self) -> int:
        return len(self.world.members.joined)

    @property
    def n_items(self) -> int:
        return len(self.world.items.release)

    # ------------------------------------------------------------ scoring

    def member_index(self, member_ids: Sequence[str]) -> np.ndarray:
        """World indices of member ids; KeyError naming the first one not in the world."""
        return self._indices(member_ids, parse_member_id, self.n_members, "member")

    def item_index(self, item_ids: Sequence[str]) -> np.ndarray:
        """World indices of item ids; KeyError naming the first one not in the world."""
        return self._indices(item_ids, parse_item_id, self.n_items, "item")

    @staticmethod
    def _indices(ids: Sequence[str], parse, n: int, what: str) -> np.ndarray:
        out = np.empty(len(ids), dtype=np.int64)
        for k, text in enumerate(ids):
            try:
                out[k] = parse(text)
            except ValueError:
                out[k] = -1
            if not 0 <= out[k] < n:
                raise KeyError(f"{what} {text!r} is not in the simulated world ({n} {what}s)")
        return out

    def taste_shift(self, day: np.ndarray) -> np.ndarray:
        """Whether the taste-shift drift is on for requests on these day ordinals."""
        week = (np.asarray(day, dtype=np.int64) - self.world.start.toordinal()) // 7
        on = np.zeros(week.shape, dtype=bool)
        for d in self.drifts:
            if d.kind == "taste-shift":
                on |= (week >= d.week) & ((week < d.week + d.weeks) if d.weeks is not None else True)
        return on

    def _context(self, hour_of_day, day_of_week, platform, day, n: int) -> tuple[np.ndarray, ...]:
        hour, dow = np.asarray(hour_of_day, dtype=np.int64), np.asarray(day_of_week, dtype=np.int64)
        plat = np.empty(len(platform), dtype=np.int64)
        for k, name in enumerate(platform):
            if name not in _PLATFORM_INDEX:
                raise ValueError(f"unknown platform {name!r}: the simulator has {', '.join(_PLATFORM_INDEX)}")
            plat[k] = _PLATFORM_INDEX[name]
        days = _ordinals(day)
        for name, a in (("hour_of_day", hour), ("day_of_week", dow), ("platform", plat), ("day", days)):
            if a.shape != (n,):
                raise ValueError(f"{name} has shape {a.shape}, expected ({n},) like the ids")
        if n and not (0 <= hour.min() and hour.max() <= 23):
            raise ValueError(f"hour_of_day must be 0-23, got {hour.min()}..{hour.max()}")
        if n and not (0 <= dow.min() and dow.max() <= 6):
            raise ValueError(f"day_of_week must be 0-6 (0 = Monday), got {dow.min()}..{dow.max()}")
        return hour, dow, plat, days

    def _score(self, member: np.ndarray, item: np.ndarray, hour: np.ndarray, dow: np.ndarray, plat: np.ndarray,
               day: np.ndarray) -> np.ndarray:
        shift = self.taste_shift(day)
        return behaviour.relevance(self.world, member, item, hour, dow, plat, day, taste_shift=shift).relevance

    def relevance(self, member_ids: Sequence[str], item_ids: Sequence[str], hour_of_day, day_of_week,
                  platform: Sequence[str], day) -> np.ndarray:
        """The relevance logit of each (member, item, context) pair (all arguments aligned, 1-D).

        ``P(click) = examine(position) * sigmoid(relevance)``; the oracle's ranking sorts by it.

        Args:
          hour_of_day, day_of_week: as logged (0 = Monday).
          platform: logged platform names (``Android`` under the rename drift counts as ``android``).
          day: the request's UTC date: ``datetime.date`` objects, ``datetime64`` or date ordinals.
            Item age (novelty) is ``day - release``; an item released later scores as if new.

        Raises:
          KeyError: a member or item id that is not in the world (named).
          ValueError: an unknown platform, an out-of-range hour or weekday, misaligned arrays.
        """
        member, item = self.member_index(member_ids), self.item_index(item_ids)
        if len(member) != len(item):
            raise ValueError(f"{len(member)} member ids but {len(item)} item ids")
        hour, dow, plat, days = self._context(hour_of_day, day_of_week, platform, day, len(member))
        return self._score(member, item, hour, dow, plat, days)

    def catalog_scores(self, member_ids: Sequence[str], hour_of_day, day_of_week, platform: Sequence[str], day,
                       item_ids: Sequence[str], chunk: int = 256) -> np.ndarray:
        """Relevance of every item in ``item_ids`` for every query: shape ``(n_queries, n_items)``.

        The queries (member and context, aligned as in ``relevance``) are scored
        ``chunk`` at a time: memory grows with ``chunk * len(item_ids)`` (about
        300 bytes a pair). Items are scored whatever their release date: drop
        the ones not yet released on a query's day before ranking
        (``oracle.world.items.release``). ``oracle.world.item_ids()`` is every item.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        member, item = self.member_index(member_ids), self.item_index(item_ids)
        hour, dow, plat, days = self._context(hour_of_day, day_of_week, platform, day, len(member))
        out = np.empty((len(member), len(item)))
        k = len(item)
        for lo in range(0, len(member), chunk):
            q = slice(lo, lo + chunk)
            rep = lambda a, q=q: np.repeat(a[q], k)
            n = len(member[q])
            out[q] = self._score(rep(member), np.tile(item, n), rep(hour), rep(dow), rep(plat), rep(days)
                                 ).reshape(n, k)
        return out

    # ------------------------------------------------------------ logged impressions

    def impression_relevance(self, request_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """The relevance the simulation used for logged impressions, NaN where a pair was never shown.

        Looked up in ``truth/impressions/week-*.parquet`` (all weeks), indexed once
        on first use.
        """
        if len(request_ids) != len(item_ids):
            raise ValueError(f"{len(request_ids)} request ids but {len(item_ids)} item ids")
        rids, keys, rel, stride = self._impression_index()
        out = np.full(len(item_ids), np.nan)
        if not len(out) or not len(rids):
            return out
        q = np.asarray(request_ids, dtype=str)
        pos = np.searchsorted(rids, q).clip(0, len(rids) - 1)
        item = np.array([_try_item(s) for s in item_ids], dtype=np.int64)
        ok = (rids[pos] == q) & (item >= 0) & (item < stride)
        key = pos.astype(np.int64) * stride + item
        at = np.searchsorted(keys, key).clip(0, len(keys) - 1)
        ok &= keys[at] == key
        out[ok] = rel[at[ok]]
        return out

    def _impression_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        if self._impressions is None:
            if self.sim_dir is None:
                raise ValueError("this oracle was not loaded from a simulation folder: no logged impressions")
            folder = f"{self.sim_dir}/truth/impressions"
            fs, local = storage.filesystem(folder)
            files = sorted(fs.glob(posixpath.join(local, "week-*.parquet")))
            if not files:
                raise FileNotFoundError(f"oracle: no week-*.parquet under {folder}")
            tables = []
            for path in files:
                with fs.open(path, "rb") as f:
                    tables.append(pq.read_table(f, columns=["request_id", "item_id", "relevance"]))
            table = pa.concat_tables(tables).combine_chunks()
            encoded = table["request_id"].combine_chunks().dictionary_encode()
            names = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=str)
            order = np.argsort(names, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            code = rank[encoded.indices.to_numpy()].astype(np.int64)
            items = table["item_id"].combine_chunks().dictionary_encode()  # few distinct: parse each once
            item = np.array([parse_item_id(s) for s in items.dictionary.to_pylist()], dtype=np.int64
                            )[items.indices.to_numpy()]
            stride = int(max(self.n_items, item.max() + 1 if len(item) else 0))
            keys = code * stride + item
            sort = np.argsort(keys, kind="stable")
            self._impressions = (names[order], keys[sort], table["relevance"].to_numpy()[sort], stride)
        return self._impressions


def _try_item(text: Any) -> int:
    try:
        return parse_item_id(text)
    except ValueError:
        return -1


def _ordinals(day) -> np.ndarray:
    a = np.asarray(day)
    if a.size == 0:
        return np.zeros(a.shape, dtype=np.int64)
    if np.issubdtype(a.dtype, np.datetime64):
        return a.astype("datetime64[D]").astype(np.int64) + _EPOCH
    if a.dtype == object:
        return np.array([d.toordinal() for d in a.ravel()], dtype=np.int64).reshape(a.shape)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"day must be dates, datetime64 or integer date ordinals, got dtype {a.dtype}")
    return a.astype(np.int64)
