"""dualpath.models: presets and builders for clusters, LLMs and workloads.

- `nodes`, `cluster_file`: node presets and cluster TOML files;
- `llms`, `llm_file`, `profile`: LLM presets, LLM TOML files, profile tables that calibrate cost;
- `generators`, `sampling`, `stats`: agentic workload generators, resampling / arrivals / batches, and
  the paper's trace-table statistics;
- `mooncake`, `jsonl`, `workloads`: trace importers, our JSONL format, Workload builders;
- `registry`: the names the CLI accepts (`--cluster`, `--model`, `--workload`).
"""
