"""Figures the chapters share, so every chapter draws them the same way.

* :func:`draw_pipeline` — the MIMO pipeline with one stage highlighted (top of every chapter).
* :func:`plot_modality_strip` — a combined sequence as a coloured strip (text / video / audio)
  with the loss mask under it.
* :func:`plot_similarity_matrix` — clip-versus-caption similarities (CLIP-style pretraining).
* :func:`plot_loss_curves` — one or more loss curves, smoothed.

Each function draws into a new figure (or the ``ax`` given) and returns the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import FancyBboxPatch

#: The stages of the pipeline, in the order the chapters build them.
STAGES = ("tokens", "towers", "projectors", "combine", "GPT decoder", "answer")
#: Colours for text, video, audio positions; padding is drawn white.
MODALITY_COLOURS = {"text": "#4c72b0", "video": "#55a868", "audio": "#dd8452", "padding": "#ffffff"}


def draw_pipeline(highlight: str | Sequence[str], dpi: int = 90) -> plt.Figure:
    """Boxes for the MIMO pipeline (text, video, audio → tokens → ... → answer), ``highlight`` coloured in."""
    highlighted = {highlight} if isinstance(highlight, str) else set(highlight)
    unknown = highlighted - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {STAGES}")
    fig, ax = plt.subplots(figsize=(10, 2.0), dpi=dpi)
    step = 1.8  # distance between box centres

    def box(x: float, y: float, text: str, on: bool = False) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x - 0.65, y - 0.22), 1.3, 0.44, boxstyle="round,pad=0.05",
                facecolor="#f4a261" if on else "#eeeeee", edgecolor="#333333",
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=9.5, weight="bold" if on else "normal")

    for y, name in zip([0.6, 0.0, -0.6], ["text", "video", "audio"]):
        box(0, y, name)
        ax.annotate("", xy=(step - 0.72, 0.0), xytext=(0.72, y), arrowprops={"arrowstyle": "->"})
    for i, stage in enumerate(STAGES, start=1):
        box(step * i, 0.0, stage, on=stage in highlighted)
        if i > 1:
            ax.annotate(
                "", xy=(step * i - 0.72, 0.0), xytext=(step * (i - 1) + 0.72, 0.0), arrowprops={"arrowstyle": "->"}
            )
    ax.set_xlim(-0.8, step * len(STAGES) + 0.8)
    ax.set_ylim(-0.95, 0.95)
    ax.axis("off")
    return fig


def plot_modality_strip(
    modality_map: torch.Tensor,
    labels: torch.Tensor | None = None,
    ignore_index: int = -100,
    row_names: Sequence[str] | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Draw combined sequences: one coloured row per sample, and under each its loss mask.

    Args:
        modality_map: (B, S) or (S,) with TEXT=0, VIDEO=1, AUDIO=2, PADDING=-1 (``mimo_lib.combine``).
        labels: same shape; positions whose label is not ``ignore_index`` are drawn black in the mask row.
    """
    modality_map = torch.as_tensor(modality_map)
    if modality_map.dim() == 1:
        modality_map = modality_map[None]
        labels = None if labels is None else torch.as_tensor(labels)[None]
    batch, length = modality_map.shape
    colours = ListedColormap([MODALITY_COLOURS[k] for k in ("padding", "text", "video", "audio")])
    rows_per_sample = 2 if labels is not None else 1
    fig, axes = plt.subplots(
        batch * rows_per_sample, 1, figsize=(10, 0.45 * batch * rows_per_sample + 0.8), squeeze=False, sharex=True
    )
    for b in range(batch):
        ax = axes[b * rows_per_sample, 0]
        ax.imshow((modality_map[b] + 1)[None].numpy(), aspect="auto", cmap=colours, vmin=0, vmax=3,
                  interpolation="nearest")
        ax.set_yticks([0], [row_names[b] if row_names else f"sample {b}"])
        if labels is not None:
            mask_ax = axes[b * rows_per_sample + 1, 0]
            trained = (torch.as_tensor(labels[b]) != ignore_index).int()
            mask_ax.imshow(trained[None].numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
            mask_ax.set_yticks([0], ["loss"])
    axes[-1, 0].set_xlabel(f"position (0..{length - 1})")
    handles = [plt.Rectangle((0, 0), 1, 1, color=MODALITY_COLOURS[k], ec="#999999") for k in ("text", "video", "audio")]
    fig.legend(handles, ["text", "video", "audio"], loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or "combined sequence (white = padding; black = trained positions)", fontsize=10, x=0.4)
    fig.tight_layout()
    return fig


def plot_similarity_matrix(
    similarity: torch.Tensor | np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str = "",
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """A heat map of (rows × columns) similarities, with the best column of each row marked."""
    values = np.asarray(similarity, dtype=np.float32)
    fig = ax.figure if ax is not None else plt.figure(figsize=(0.35 * len(column_labels) + 3, 0.3 * len(row_labels) + 2))
    ax = ax or fig.add_subplot()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    best = values.argmax(axis=1)
    ax.scatter(best, np.arange(len(row_labels)), marker="x", color="white", s=20)
    ax.set_xticks(range(len(column_labels)), column_labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03)
    return fig


def plot_loss_curves(
    curves: Mapping[str, Sequence[float]], smoothing: int = 10, ax: plt.Axes | None = None, title: str = ""
) -> plt.Figure:
    """Raw losses (faint) and a moving average over ``smoothing`` steps (solid), one colour per curve."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(7, 3.2))
    ax = ax or fig.add_subplot()
    for name, losses in curves.items():
        losses = np.asarray(losses, dtype=np.float64)
        line = ax.plot(losses, alpha=0.25)[0]
        if len(losses) >= smoothing > 1:
            smooth = np.convolve(losses, np.ones(smoothing) / smoothing, mode="valid")
            ax.plot(np.arange(smoothing - 1, len(losses)), smooth, color=line.get_color(), label=name)
        else:
            line.set_label(name)
            line.set_alpha(1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_accuracy_curve(
    curve: Sequence[Mapping[str, float]], x: str = "minutes", ax: plt.Axes | None = None, title: str = ""
) -> plt.Figure:
    """Held-out exact match per question type against ``x`` (``"minutes"`` or ``"step"``), one line per type.

    ``curve``: one dict per evaluation, e.g. ``{"step": 250, "minutes": 20.1, "vision": 1.0, "motion": 0.4, ...}``
    (what ``benchmarks/recipe.py`` writes). A dashed line marks 95%, the target of chapter 7.
    """
    if not curve:
        raise ValueError("the curve has no points: evaluate at least once (--eval-interval, --eval-samples)")
    fig = ax.figure if ax is not None else plt.figure(figsize=(7, 3.2))
    ax = ax or fig.add_subplot()
    xs = [point[x] for point in curve]
    types = [k for k in curve[0] if k not in ("step", "minutes")]
    for name in types:
        ax.plot(xs, [point[name] for point in curve], marker="o", markersize=3,
                linewidth=2.5 if name == "all" else 1.2, label=name)
    ax.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("minutes since the recipe started" if x == "minutes" else x)
    ax.set_ylabel("exact match")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    return fig
