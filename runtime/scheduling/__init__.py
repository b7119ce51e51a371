"""dualpath.runtime.scheduling: the global scheduler of a real run and what drives it.

Scheduler and its state, group leaders, plan replay on live engines, the client, agents, the local launcher
and `run_real`. Imports the core, the engines and the transports; never the simulator.
"""
