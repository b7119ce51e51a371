"""dualpath.models: presets and builders for clusters, LLMs and workloads."""
