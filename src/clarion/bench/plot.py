"""``--plot FILE.png``: a latency histogram and p50/p99 per 1-second window, one line per run.

Needs matplotlib (the ``plot`` extra: ``pip install 'clarion[plot]'``); drawn with the Agg backend,
so no display is needed.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from .report import RunData

MISSING = (
    "--plot needs matplotlib, which is not installed: install the plot extra "
    "(pip install 'clarion[plot]', or pip install matplotlib==3.11.2)"
)


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write(path: str | Path, runs: list[RunData], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(fig)
    hist, over_time = fig.subplots(2, 1)
    names = [f"{r.label} #{r.round}" if len(runs) > 1 else r.label for r in runs]
    values = [v for r in runs for v in r.samples if v > 0]
    if values:
        low, high = max(min(values), 1e-3), max(values)
        if high <= low:
            high = low * 2
        steps = 60
        edges = [low * (high / low) ** (i / steps) for i in range(steps + 1)]
        for run, name in zip(runs, names, strict=True):
            if run.samples:
                hist.hist([max(v, low) for v in run.samples], bins=edges, histtype="step", linewidth=1.5, label=name)
        hist.set_xscale("log")
        hist.legend()
    else:
        hist.text(0.5, 0.5, "no deliveries (idle run: --rate 0)", ha="center", va="center", transform=hist.transAxes)
    hist.set_title("end-to-end latency (HTTP API call to subscriber)")
    hist.set_xlabel("latency (ms, log scale)")
    hist.set_ylabel("deliveries (sampled)")

    plotted = False
    for run, name in zip(runs, names, strict=True):
        if not run.timeline:
            continue
        seconds = [w["second"] for w in run.timeline]
        line = over_time.plot(seconds, [w["p50_ms"] for w in run.timeline], marker="o", label=f"{name} p50")[0]
        over_time.plot(
            seconds,
            [w["p99_ms"] for w in run.timeline],
            marker="^",
            linestyle="--",
            color=line.get_color(),
            label=f"{name} p99",
        )
        plotted = True
    if plotted:
        over_time.legend()
        top = max((w["p99_ms"] or 0) for r in runs for w in r.timeline)
        over_time.set_ylim(0, max(1.0, math.ceil(top * 1.1)))
    over_time.set_title("latency percentiles per 1-second window (by send time)")
    over_time.set_xlabel("seconds into the load")
    over_time.set_ylabel("ms")
    fig.suptitle(title)
    fig.savefig(str(path), dpi=100)
