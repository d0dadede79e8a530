"""Epsilon-greedy slot filling that knows the probability of what it showed.

Each slot shows the best not-yet-shown item of its row's ranking with
probability ``1 - epsilon``, and with probability ``epsilon`` an item drawn
uniformly from the not-yet-shown pool. The logged propensity of an item in a slot
is therefore exact given the slots before it:

    p = (1 - epsilon) * [item is the greedy choice] + epsilon / |pool left|

which is what per-position off-policy estimators (IPS, SNIPS) divide by.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """One filled slot: the pool index of the item shown, the probability it had, and
    whether the slot explored."""

    item: int
    propensity: float
    explored: bool


def epsilon_greedy(
    rankings: Sequence[Sequence[int]],
    pool_size: int,
    epsilon: float,
    u_explore: Sequence[float],
    u_pick: Sequence[float],
) -> list[Slot]:
    """Fills one slot per entry of ``rankings``, in order, with no item twice.

    Args:
      rankings: per slot, candidate pool indices best first (the row's ranking);
        slots of one row share a ranking. Items already shown are skipped.
      pool_size: items in the pool, indices ``0..pool_size-1`` (the exploration set).
      epsilon: share of slots explored, in ``[0, 1]``.
      u_explore, u_pick: one uniform [0, 1) number per slot, drawn by the caller
        so that a fixed random stream gives a fixed slate.

    Returns:
      One ``Slot`` per slot.

    Raises:
      ValueError: when the pool has fewer items than slots, or epsilon is out of range.
    """
    n = len(rankings)
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if pool_size < n:
        raise ValueError(f"pool of {pool_size} items cannot fill {n} slots without repeats")
    shown: list[int] = []  # kept sorted, for uniform picks among the rest
    taken: set[int] = set()
    slots = []
    for k in range(n):
        greedy = next((i for i in rankings[k] if i not in taken), None)
        left = pool_size - len(shown)
        explore = greedy is None or u_explore[k] < epsilon
        if explore:
            # the j-th item of the pool that is not yet shown
            item = min(int(u_pick[k] * left), left - 1)
            for s in shown:
                if s <= item:
                    item += 1
                else:
                    break
        else:
            item = greedy
        p = slot_probability(rankings[k], taken, item, pool_size, epsilon)  # the formula logged and tested
        slots.append(Slot(item=item, propensity=p, explored=explore))
        taken.add(item)
        bisect.insort(shown, item)
    return slots


def slot_probability(ranking: Sequence[int], taken: Collection[int], item: int | None, pool_size: int,
                     epsilon: float) -> float:
    """The probability that ``epsilon_greedy`` puts ``item`` in a slot, given the items ``taken`` above it.

    The same rule as ``epsilon_greedy``: ``(1 - epsilon) * [item is the greedy choice] + epsilon / |pool left|``
    (a slot whose ranking is used up explores with probability one). An item outside the pool (``None``) or
    already taken has probability zero. This is what an off-policy estimate needs from a target policy
    for each logged slot.
    """
    if item is None or item in taken:
        return 0.0
    greedy = next((i for i in ranking if i not in taken), None)
    eps = 1.0 if greedy is None else epsilon
    return eps / (pool_size - len(taken)) + (1.0 - eps) * (item == greedy)
