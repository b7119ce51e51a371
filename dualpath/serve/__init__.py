"""dualpath.serve: `dualpath serve`, the online scheduler as an HTTP service (FastAPI, uvicorn, Prometheus).

A composition root like the CLI: it may import the solver and the models. Importing `dualpath` never
imports it, so fastapi and uvicorn load only when the service starts.
"""
