"""A synthetic streaming-fitness platform that plays the members of the loop.

Deterministic given the seed: a catalog and members that grow every week, a
hidden context-dependent behaviour model with position bias, a logging policy
with exploration and exact propensities, drift/bug injection and corrupt lines.
"""

from recloop.simulator.drift import KINDS as DRIFT_KINDS
from recloop.simulator.drift import Drift, parse_drift
from recloop.simulator.run import Simulation, check_declaration, simulate
from recloop.simulator.world import SCALES, SimulationConfigError

__all__ = ["DRIFT_KINDS", "SCALES", "Drift", "Simulation", "SimulationConfigError", "check_declaration", "parse_drift",
           "simulate"]
