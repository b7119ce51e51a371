"""dualpath: plan, execute and verify DualPath-style KV-cache loading for agentic LLM inference.

Importing this package loads only the standard library; solvers, torch and z3 are imported by the
leaf modules that need them.
"""

__version__ = "0.1.0"
