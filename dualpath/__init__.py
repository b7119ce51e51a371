"""dualpath: plan, execute and verify DualPath-style KV-cache loading for agentic LLM inference.

Importing this package loads only the standard library; solvers, torch and z3 are imported by the
leaf modules that need them.
"""

from dualpath.compiled import use_compiled as _use_compiled

__version__ = "0.1.0"

# The core's step costs (`dualpath.step_costs`), compiled when `make` could build them: see `dualpath.compiled`.
_use_compiled(__name__, __path__)
