"""The scheduling simulator: instances, the engine that replays a policy, lower bounds and
an offline search. It calls the same cost model the live dispatcher uses."""
