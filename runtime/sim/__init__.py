"""dualpath.runtime.sim: the discrete-event simulator, `simulator.simulate(cluster, llm, workload, policy)`.

Imports the core and runtime's flat `capacity` only; never the engines, transports or real-run scheduling.
"""
