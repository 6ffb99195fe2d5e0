"""
Draw the benchmark runner's medians as a chart: for each scenario, a bar
per server (messages per second, or MB/s for bulk, or p50 latency for the
latency scenario), echoplus first.  matplotlib is optional (the C{bench}
extra): without it the runner prints the table only.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

Results = dict[str, dict[str, dict[str, float]]]

_METRIC = {"bulk": ("MBps", "MB/s"), "latency": ("p50_us", "p50 latency, us")}


def machine() -> str:
    """A one-line description of the machine the figures come from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    python = platform.python_version()
    return f"{model or platform.processor()}, {cores} cores, Python {python}"


def draw(results: Results, path: str) -> None:
    """Write the chart of C{results} to C{path} (format from its suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    names = list(results)
    figure, axes = plt.subplots(
        len(names),
        1,
        figsize=(
            9,
            1.0 + 0.42 * sum(len(r) for r in results.values()) + 0.6 * len(names),
        ),
    )
    if len(names) == 1:
        axes = [axes]
    for axis, name in zip(axes, names, strict=True):
        key, unit = _METRIC.get(name, ("msgs_per_s", "messages/s"))
        rows = results[name]
        labels = list(rows)[::-1]
        values = [rows[label][key] for label in labels]
        colours = [
            "#d95f02" if label.startswith("echoplus") else "#7570b3" for label in labels
        ]
        axis.barh(labels, values, color=colours)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
        axis.set_title(f"{name} ({unit})", fontsize=10, loc="left")
        axis.tick_params(labelsize=8)
        axis.set_xlim(0, max(values) * 1.25 if values else 1)
        # Plain numbers with separators, never an offset such as "1e6".
        axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    figure.suptitle(f"echoplus vs peers: {machine()}", fontsize=9)
    # Leave the top strip to the title.
    figure.tight_layout(rect=(0, 0, 1, 0.985))
    figure.savefig(path)
