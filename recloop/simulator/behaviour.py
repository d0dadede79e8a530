"""The hidden behaviour model: how simulated members respond to what they are shown.

This is the ground truth the loop is measured against, frozen by the foundation
issue: changing it changes every recorded result. A member clicks an item with

    P(click) = examine(position) * sigmoid(relevance(member, item, context))

where relevance adds: latent taste match, category taste, item quality, a
language match, a duration preference that depends on context (short items in
the morning and on phones, long ones in the evening and on TV), category by day
of week and hour, and novelty. After a click come start, complete and like,
each timestamped after the one before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recloop.features.spec import LANGUAGES, PLATFORMS
from recloop.simulator.world import ALL_CATEGORIES, COUNTRY_LANGUAGE, World

BIAS = -2.2
_PHONES = np.isin(np.array(PLATFORMS), ["ios", "android"])
_TV = np.array(PLATFORMS) == "tv"
_EN = LANGUAGES.index("en")


def _category_by_time() -> tuple[np.ndarray, np.ndarray]:
    c = {name: i for i, name in enumerate(ALL_CATEGORIES)}
    dow = np.zeros((7, len(ALL_CATEGORIES)))
    dow[[0, 1], c["hiit"]] = dow[[0, 1], c["strength"]] = 0.4  # strong start of the week
    dow[2, c["running"]] = 0.3
    dow[4, c["dance"]] = 0.3
    dow[[5, 6], c["yoga"]] = dow[[5, 6], c["stretching"]] = dow[[5, 6], c["dance"]] = 0.4
    dow[5, c["cycling"]] = 0.3
    dow[6, c["meditation"]] = 0.5
    hour = np.zeros((24, len(ALL_CATEGORIES)))
    night = [22, 23, 0, 1, 2, 3, 4]
    hour[night, c["meditation"]] = 0.6
    hour[night, c["hiit"]] = -0.5
    hour[5:10, c["yoga"]] = 0.3
    return dow, hour


DOW_CATEGORY, HOUR_CATEGORY = _category_by_time()


def examine(position: np.ndarray) -> np.ndarray:
    """Probability that a member looks at a slot (position bias): 1 at the top, 0.25 at slot 9."""
    return np.power(1.0 + position, -0.6)


def is_morning(hour: np.ndarray) -> np.ndarray:
    return (hour >= 5) & (hour <= 10)


@dataclass(frozen=True)
class Parts:
    """Relevance and the pieces that the later funnel steps reuse."""

    relevance: np.ndarray  # logit of intent to click, before position bias
    taste: np.ndarray  # taste match + category taste + quality: drives likes
    duration_x: np.ndarray  # log(duration / 20 min)
    rushed: np.ndarray  # morning or phone: long items are abandoned more


def relevance(world: World, member: np.ndarray, item: np.ndarray, hour: np.ndarray, dow: np.ndarray,
              platform: np.ndarray, day: np.ndarray, taste_shift: np.ndarray | bool = False) -> Parts:
    """The hidden relevance of items to members in context (all arrays aligned).

    Args:
      member, item: world indices.
      hour, dow, platform: the true context (platform index into PLATFORMS).
      day: date ordinal of the request (for item age).
      taste_shift: per element (or for all), whether the taste-shift drift is active.
    """
    m, it = world.members, world.items
    shift = np.broadcast_to(np.asarray(taste_shift, dtype=bool), member.shape)
    taste = np.where(shift[:, None], 0.5 * m.taste[member] + 0.866 * m.taste_after_shift[member], m.taste[member])
    match = np.einsum("ij,ij->i", taste, it.latent[item])
    category = it.category[item]
    # under the shift, a member's taste for category k becomes their old taste for k + 3
    shifted = np.where(category < 8, (category + 3) % 8, category)
    aff = m.affinity[member, np.where(shift, shifted, category)]
    member_lang = COUNTRY_LANGUAGE[m.country[member]]
    lang = np.where(it.language[item] == member_lang, 0.0, np.where(it.language[item] == _EN, -0.8, -2.0))
    x = np.log(it.duration[item] / 20.0)
    morning, phone = is_morning(hour), _PHONES[platform]
    evening, tv = (hour >= 18) & (hour <= 22), _TV[platform]
    dur = x * (-0.6 * morning - 0.6 * phone + 0.4 * evening + 0.4 * tv + m.duration_taste[member])
    age = np.maximum(day - it.release[item], 0)
    novelty = 0.4 * np.exp(-age / 10.0)
    q = it.quality[item]
    rel = BIAS + match + aff + q + lang + dur + DOW_CATEGORY[dow, category] + HOUR_CATEGORY[hour, category] + novelty
    return Parts(relevance=rel, taste=match + aff + q, duration_x=x, rushed=morning | phone)


@dataclass(frozen=True)
class Outcome:
    """What each impression led to, with delays in seconds after the request (-1 = no event)."""

    p_click: np.ndarray
    click: np.ndarray
    start: np.ndarray
    complete: np.ndarray
    like: np.ndarray
    t_click: np.ndarray
    t_start: np.ndarray
    t_complete: np.ndarray
    t_like: np.ndarray


N_UNIFORMS = 10  # random numbers drawn per impression, whatever happens


def respond(parts: Parts, position: np.ndarray, duration_min: np.ndarray, u: np.ndarray) -> Outcome:
    """Samples clicks and follow-ups from fixed per-impression uniforms ``u`` (n, N_UNIFORMS).

    Drawing the same count for every impression keeps a run reproducible when
    one impression's outcome changes (a drift, another policy).
    """
    p_click = examine(position) * _sigmoid(parts.relevance)
    click = u[:, 0] < p_click
    start = click & (u[:, 1] < 0.85)
    long_penalty = np.maximum(parts.duration_x, 0.0) * np.where(parts.rushed, 1.5, 1.0)
    complete = start & (u[:, 2] < _sigmoid(0.3 + 0.8 * (parts.relevance - BIAS) - 0.7 * long_penalty))
    like = start & (u[:, 3] < _sigmoid(-2.0 + 0.8 * parts.taste + 1.0 * complete))
    # mostly seconds after the request; 0.5% of clicks happen days later (a tab left open)
    late = np.where(u[:, 4] < 0.005, 86_400 * (1.0 + 2.0 * u[:, 5]), 0.0)
    t_click = np.floor(-12.0 * np.log1p(-u[:, 6]) + late)
    t_start = t_click + 1 + np.floor(-4.0 * np.log1p(-u[:, 7]))
    watched = duration_min * 60.0 * np.where(complete, 0.95 + 0.2 * u[:, 8], 0.2 + 0.6 * u[:, 8])
    t_complete = np.floor(t_start + watched)
    t_like = t_complete + 1 + np.floor(-20.0 * np.log1p(-u[:, 9]))
    none = np.int64(-1)
    return Outcome(p_click=p_click, click=click, start=start, complete=complete, like=like,
                   t_click=np.where(click, t_click, none).astype(np.int64),
                   t_start=np.where(start, t_start, none).astype(np.int64),
                   t_complete=np.where(complete, t_complete, none).astype(np.int64),
                   t_like=np.where(like, t_like, none).astype(np.int64))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
