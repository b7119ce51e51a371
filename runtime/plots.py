"""PNG plots of simulation traces (matplotlib, imported only when plotting) and Chrome trace files.

`write_plots(traces, out_dir)` writes: `jct.png` (JCT per policy), `nic_<policy>.png` (storage and
compute NIC utilisation over time, one line per node), `ttft_cdf.png` (TTFT empirical CDF per policy) and,
for traces that kept spans, `chrome_<policy>.json` for chrome://tracing or Perfetto.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dualpath.errors import require
from dualpath.jsonio import write_text_atomic
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
            write_text_atomic(path, json.dumps(trace.to_chrome(start, end)))
            paths.append(path)
    return paths


def _jct(plt: Any, traces: list[Trace], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [t.policy for t in traces]
    values = [t.metrics().jct_s for t in traces]
    bars = ax.bar(names, values, color="#4C72B0")
    for bar, value in zip(bars, values):
        ax.annotate(_seconds_label(value), (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                    fontsize=8)
    ax.set_ylabel("JCT (s)")
    ax.set_title("Job completion time per policy")
    fig.tight_layout()
    path = out / "jct.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _seconds_label(value: float) -> str:
    # three significant digits: whole seconds alone would print 0.33 s and 0.31 s both as "0"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def _ttft_cdf(plt: Any, traces: list[Trace], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    everything: list[float] = []
    for trace in traces:
        values = sorted(r.first_token_s - r.arrival_s for r in trace.records if r.status != "failed")
        if values:
            n = len(values)
            # the empirical CDF is a step function: F jumps to (i + 1) / n at the i-th smallest TTFT
            ax.step([values[0], *values], [0.0, *((i + 1) / n for i in range(n))], where="post", label=trace.policy)
            everything += values
    positive = [v for v in everything if v > 0]
    # TTFTs span decades (milliseconds when a hit is cheap, seconds when queued): log when they do
    log = bool(positive) and len(positive) == len(everything) and max(positive) / min(positive) > 100
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("TTFT (s, log scale)" if log else "TTFT (s)")
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
        # measured utilisation can exceed 1 (bursts over the nominal line rate): show it, do not clip
        peak = max((u for line in ax.lines for u in line.get_ydata()), default=1.0)
        ax.set_ylim(0, max(1.05, peak * 1.05))
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
