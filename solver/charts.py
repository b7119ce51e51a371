"""Per-resource load chart (PNG, matplotlib imported lazily) and the Markdown explanation file."""

from __future__ import annotations

from pathlib import Path

from dualpath.errors import require
from dualpath.plan import Plan
from dualpath.solver.explain import Explanation, to_markdown
from dualpath.solver.problem import FAMILIES, FAMILY_TITLES, Loads, Problem, Solution


def family_times(problem: Problem, solution: Solution) -> dict[str, list[tuple[str, float]]]:
    """Per family, (resource name, busy seconds including backlog), in resource order."""
    ld = Loads(problem, solution)
    return {f: [(problem.resource_name(f, i), ld.time_s(f, i)) for i in range(problem.resource_count(f))]
            for f in FAMILIES}


def load_chart(problem: Problem, solution: Solution, plan: Plan, path: str | Path) -> Path:
    """One panel per constraint family: each resource's busy time against fluid bottleneck time and lower bound."""
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "plots")
    times = family_times(problem, solution)
    fig, axes = plt.subplots(len(FAMILIES), 1, figsize=(10, 2.2 * len(FAMILIES)), sharey=True)
    for ax, family in zip(axes, FAMILIES):
        rows = times[family]
        values = [t for _, t in rows]
        ax.bar(range(len(values)), values, width=0.85, color="#4878a8")
        ax.axhline(plan.fluid_bottleneck_s, color="#c44e52", linewidth=1.2, label="fluid bottleneck")
        ax.axhline(plan.lower_bound_s, color="#55a868", linewidth=1.0, linestyle="--", label="lower bound")
        ax.set_ylabel("s")
        ax.set_title(f"{FAMILY_TITLES[family]} ({len(rows)} resources)", fontsize=9, loc="left")
        if len(rows) <= 48:
            ax.set_xticks(range(len(rows)), [name.split(".")[0] for name, _ in rows], fontsize=6, rotation=90)
        else:
            ax.set_xticks([])
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{plan.solver} plan: fluid bottleneck {plan.fluid_bottleneck_s:.3f} s, gap to the fluid bound "
                 f"{plan.gap:.3%}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(out_dir: str | Path, problem: Problem, solution: Solution, plan: Plan,
                  explanation: Explanation) -> list[Path]:
    """`loads.png` and `explanation.md` under `out_dir`; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "explanation.md"
    md.write_text(to_markdown(explanation, f"{plan.solver} plan ({plan.status})"))
    return [load_chart(problem, solution, plan, out / "loads.png"), md]
