"""PNG plots of simulation traces (matplotlib, imported only when plotting) and Chrome trace files.

`write_plots(traces, out_dir)` writes: `jct.png` (JCT per policy), `nic_<policy>.png` (storage and
compute NIC utilisation over time, one line per node), `ttft_cdf.png` (TTFT CDF per policy) and,
for traces that kept spans, `chrome_<policy>.json` for chrome://tracing or Perfetto.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dualpath.errors import require
from dualpath.trace import Trace


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _pyplot() -> Any:  # the matplotlib.pyplot module, imported only when plotting
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(traces: list[Trace], out_dir: str | Path, *, chrome_window: tuple[float, float] | None = None
                ) -> list[Path]:
    """Write the plots (and Chrome traces of traces with spans) into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    paths = [_jct(plt, traces, out), _ttft_cdf(plt, traces, out)]
    for trace in traces:
        if trace.utilisation:
            paths.append(_nics(plt, trace, out))
        if trace.spans:
            path = out / f"chrome_{_slug(trace.policy)}.json"
            start, end = chrome_window or (0.0, float("inf"))
            path.write_text(json.dumps(trace.to_chrome(start, end)))
            paths.append(path)
    return paths


def _jct(plt: Any, traces: list[Trace], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [t.policy for t in traces]
    values = [t.metrics().jct_s for t in traces]
    bars = ax.bar(names, values, color="#4C72B0")
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("JCT (s)")
    ax.set_title("Job completion time per policy")
    fig.tight_layout()
    path = out / "jct.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _ttft_cdf(plt: Any, traces: list[Trace], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for trace in traces:
        values = sorted(r.first_token_s - r.arrival_s for r in trace.records if r.status != "failed")
        if values:
            n = len(values)
            step = max(1, n // 2000)  # a few thousand points draw the same curve
            xs = [*values[::step], values[-1]]
            ys = [i / n for i in range(0, n, step)] + [1.0]
            ax.plot(xs, ys, label=trace.policy)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("TTFT (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Time to first token, CDF")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "ttft_cdf.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _nics(plt: Any, trace: Trace, out: Path) -> Path:
    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    panels = ((".snic", axes[0], "storage NIC reads"), (".cnic_in", axes[1], "compute NICs in (KV lane)"))
    for kind, ax, title in panels:
        for name, series in sorted(trace.utilisation.items()):
            if name.endswith(kind) and series:
                ax.plot([t for t, _ in series], [u for _, u in series], label=name.split(".")[0], linewidth=0.8)
        ax.set_ylabel("utilisation")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=9)
        if ax.lines:
            ax.legend(fontsize=7, ncol=4)
    axes[1].set_xlabel("time (s)")
    fig.suptitle(f"NIC utilisation per node: {trace.policy}", fontsize=10)
    fig.tight_layout()
    path = out / f"nic_{_slug(trace.policy)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
