"""dualpath.runtime: the two executors of plans and policies, which share nothing but the core.

- `sim/`: the discrete-event simulator (paper scale, calibrated once);
- `engines/`, `transports/`, `scheduling/`: the real runtime (engine processes, the byte movers and the
  control channel, and the global scheduler of a real run);
- flat: `engine` (the engine process's entry point), and what both executors' traces feed:
  `capacity` (SLO checks and the capacity search) and `plots`.
"""
