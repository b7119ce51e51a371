"""dualpath.runtime.sim: the discrete-event simulator, `simulator.simulate(cluster, llm, workload, policy)`.

Imports the core and runtime's flat `capacity` only; never the engines, transports or real-run scheduling.
"""

from dualpath.compiled import use_compiled

use_compiled(__name__, __path__)
