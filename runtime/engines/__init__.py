"""dualpath.runtime.engines: the prefill and decode engine processes and what they hold.

Block store, DRAM buffers and HBM slots, the torch decoder and layerwise prefill. Imports the core and the
transports; never the simulator.
"""
