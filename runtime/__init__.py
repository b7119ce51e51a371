"""dualpath.runtime: executors of plans, the discrete-event simulator and the real engines."""
