"""Discrete-event simulation of a phone fleet, to compare scheduling policies against a bound.

Why simulate: a live fleet gives one noisy run per hour; the simulator replays the same
picture stream, the same phones and the same foreground-app interruptions under every policy
(common random numbers), so differences are the policies' and the gap to optimal is a number.

What is modelled (each piece is something the real scheduler has to cope with):
- devices: one per profile (the six real-phone classes by default); each phone differs from
  its class's numbers by a fixed random factor (`profile_error`), which only learning finds;
- a job = one picture: classify (push the BMP, run label_image) then generate (llama-cli on
  the labels); two bids, two awards; each device runs its awarded tasks one at a time, FIFO;
- work size varies per picture (`size_cv`); the same sizes are used for every policy;
- background load, and foreground apps that come and go (exponential on/off periods) and
  take `fg_load` of the CPU: a task started meanwhile runs load_factor(...) slower;
- thermal throttling: heat follows the device's busy fraction with time constant
  `thermal_tau_s`; above `thermal_h0` the device slows linearly up to `thermal_max`
  (Pixel 8 Pro sustained CNN: ~1.4x after 7 min, device-profiles.md);
- stale telemetry: policies see CPU load as it was `telemetry_age_s` ago (probe interval
  plus /proc/stat window), with noise. They know exactly what they awarded (inflight).

Lower bounds on the same sampled instance, each proved in its docstring: `lower_bound`
(pooled fleet, SRPT; valid even for preemptive, split work) and `time_indexed_bound` (a
Lagrangian relaxation of the time-indexed formulation; valid for every non-preemptive
schedule, clairvoyant included, and much tighter under load). `compare` reports the larger.
Neither includes heat (it depends on the schedule), so at sustained high load part of any
policy's gap to them is thermal throttling, not scheduling. From the other side,
`local_search` improves a policy's schedule with hindsight (heat included), so the offline
optimum is bracketed: bound <= optimum <= best schedule found.
"""
from adbflow.sim.bounds import Bound, TimeIndexedBound, lower_bound, time_indexed_bound
from adbflow.sim.engine import SimResult, simulate
from adbflow.sim.instances import (
           SIX_CLASSES,
           Instance,
           SimConfig,
           fleet_profiles,
           make_instance,
)
from adbflow.sim.search import (
           compare,
           evaluate_assignment,
           exhaustive_optimum,
           local_search,
)

__all__ = ["SIX_CLASSES", "Bound", "Instance", "SimConfig", "SimResult", "TimeIndexedBound",
           "compare", "evaluate_assignment", "exhaustive_optimum", "fleet_profiles",
           "local_search", "lower_bound", "make_instance", "simulate", "time_indexed_bound"]
