"""PNG plots for reports: metrics per method, training-loss curves, metric against alpha.

Matplotlib with the non-interactive Agg backend (no display needed); every figure is
written atomically (rendered to bytes, then renamed into place).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tca4rec.evaluate.metrics import KS  # noqa: E402
from tca4rec.evaluate.report import RunResult  # noqa: E402
from tca4rec.io import atomic_write_bytes  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_metrics(results: Sequence[RunResult], path: str | Path) -> Path:
    """Grouped bars of HR@K and NDCG@K per method, with 95% bootstrap CIs as error bars."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    width = 0.8 / max(len(results), 1)
    x = np.arange(len(KS))
    for ax, family in zip(axes, ("HR", "NDCG")):
        for i, r in enumerate(results):
            names = [f"{family}@{k}" for k in KS]
            mean = np.array([r.metrics[n] for n in names])
            lo = np.array([r.ci95[n][0] for n in names])
            hi = np.array([r.ci95[n][1] for n in names])
            ax.bar(x + (i - (len(results) - 1) / 2) * width, mean, width, label=r.label,
                   yerr=np.stack([mean - lo, hi - mean]), capsize=3)
        ax.set_xticks(x, [f"@{k}" for k in KS])
        ax.set_title(family)
        ax.grid(axis="y", alpha=0.3)
    # Below the panels: with many methods a legend inside would cover the bars.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(results), 3), fontsize=8, frameon=False)
    fig.suptitle("Test metrics (95% bootstrap CI)")
    return _save(fig, path)


def plot_loss_curves(results: Sequence[RunResult], path: str | Path) -> Path:
    """Training loss against step for every run that logged one."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        if r.loss_curve:
            steps, losses = zip(*r.loss_curve)
            ax.plot(steps, losses, label=r.label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Training loss")
    return _save(fig, path)


def plot_against_alpha(series: dict[str, list[tuple[float, float, float]]], ylabel: str, path: str | Path,
                       title: str = "") -> Path:
    """One line per series of (alpha, mean, spread) points; spread drawn as error bars."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        points = sorted(points)
        a, m, s = (np.array(v) for v in zip(*points))
        ax.errorbar(a, m, yerr=s, marker="o", capsize=3, label=label)
    ax.set_xlabel("alpha")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{ylabel} against alpha")
    return _save(fig, path)


def plot_alpha_panels(rows: Sequence[dict], path: str | Path) -> Path:
    """Alpha as a knob, three panels: accuracy (NDCG@10, all and novel rows), agreement with the
    teacher (consistency@10) and the language side (NLL per token); ``rows`` as the breadth
    report's ``alpha_rows`` (keys alpha, NDCG@10, NDCG@10 novel, consistency@10, target_nll,
    text_nll; ``KEY_ci95``, where present, draws the 95% CI as error bars), a missing value left out
    of its line."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = ((axes[0], (("NDCG@10", "all rows"), ("NDCG@10 novel", "novel rows")), "NDCG@10"),
              (axes[1], (("consistency@10", "with the teacher's top-10"),), "consistency@10"),
              (axes[2], (("target_nll", "target title after the prompt (valid)"),
                         ("text_nll", "held-out titles as plain text")), "NLL per token (nats)"))
    for ax, series, ylabel in panels:
        for key, label in series:
            points = sorted((r["alpha"], r[key], r.get(f"{key}_ci95")) for r in rows if r.get(key) is not None)
            if not points:
                continue
            x, y = [p[0] for p in points], [p[1] for p in points]
            if all(p[2] is not None for p in points):  # asymmetric bars: [value - low, high - value]
                bars = [[v - ci[0] for _, v, ci in points], [ci[1] - v for _, v, ci in points]]
                ax.errorbar(x, y, yerr=bars, marker="o", capsize=3, label=label)
            else:
                ax.plot(x, y, marker="o", label=label)
        ax.set_xlabel("alpha")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle("Soft Label Alignment: alpha against accuracy, teacher agreement and fluency")
    fig.tight_layout()
    return _save(fig, path)
