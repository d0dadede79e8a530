"""The heuristics, written once: popular in context and the member's usual.

They are the simulator's bootstrap logging policy, the trainer's baseline and
the server's fallback (docs/architecture.md, "Layers"), so all three mean the same thing by
"popular" and "usual".
"""

from recloop.baselines.explore import Slot, epsilon_greedy
from recloop.baselines.popularity import NO_HOUR, PopularInContext, context_key, daypart
from recloop.baselines.usual import MemberProfile, MemberUsual, decay_weights

__all__ = [
    "NO_HOUR",
    "MemberProfile",
    "MemberUsual",
    "PopularInContext",
    "Slot",
    "context_key",
    "daypart",
    "decay_weights",
    "epsilon_greedy",
]
