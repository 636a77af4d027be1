"""Small matplotlib charts for reports (PNG bytes, written atomically where a path is given)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt  # noqa: E402

from recsys_pipeline.data.lake import write_atomic  # noqa: E402


def bar_chart(
    labels: Sequence[object],
    values: Sequence[float],
    title: str,
    xlabel: str,
    ylabel: str,
    path: str | Path | None = None,
    log_y: bool = False,
) -> bytes:
    """A bar chart as PNG bytes; also saved to ``path`` when given.

    Args:
        labels: one label per bar (x axis).
        values: bar heights.
        title, xlabel, ylabel: chart text.
        path: optional PNG file to write (atomically).
        log_y: logarithmic y axis (for long-tailed counts).

    Returns:
        The PNG file's bytes.
    """
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=90)
    try:
        ax.bar([str(x) for x in labels], values, color="#4c72b0")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("log")
        if len(labels) > 12:
            ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    png = buf.getvalue()
    if path is not None:
        write_atomic(path, lambda tmp: tmp.write_bytes(png))
    return png
