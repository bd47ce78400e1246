"""Interactive latent-space widgets, each with a static figure that reads well without a kernel.

Sliders need a live Jupyter kernel; on GitHub, in a rendered page or in CI they show nothing. So
every helper here returns the widget *and* draws the same information as a static figure.

Introduced in notebooks/01_vae.ipynb.
"""
from __future__ import annotations

import io
from typing import Callable

import matplotlib.pyplot as plt
import torch

from . import plots


def lerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the straight line from z0 to z1 (both ends included): (steps, *z0.shape)."""
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to include both ends, got {steps}")
    t = torch.linspace(0, 1, steps, device=z0.device).view(-1, *([1] * z0.dim()))
    return (1 - t) * z0 + t * z1


def _png(images: torch.Tensor, size: float = 2.2) -> bytes:
    """A row of (N, C, H, W) images in [0, 1] as PNG bytes, for an ipywidgets.Image."""
    fig, ax = plt.subplots(figsize=(size * len(images), size))
    plots.image_grid(images, nrow=len(images), ax=ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def interpolation(decode: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor,
                  z1: torch.Tensor, steps: int = 11, labels: Callable[[torch.Tensor], list[str]] | None = None,
                  title: str = "interpolation z0 -> z1"):
    """A slider that walks from z0 to z1 through ``decode``, and the same path as a static strip.

    ``decode`` maps a batch of latents (B, ...) to images (B, C, H, W) in [0, 1]. ``labels``, if
    given, names each decoded image (e.g. a classifier's guess) so the strip shows where the path
    crosses into another class. Returns ``(widget, figure, images)``.
    """
    import ipywidgets as W

    with torch.no_grad():
        images = decode(lerp(z0, z1, steps)).cpu()
    names = labels(images) if labels is not None else None

    tile = plots.tile_inches(images, 0.8)
    fig, axes = plt.subplots(1, steps, figsize=(tile * steps, tile + (0.5 if names else 0.2)),
                             gridspec_kw={"left": 0.01, "right": 0.99, "wspace": 0.08})
    for i, ax in enumerate(axes):
        plots.image_grid(images[i:i + 1], nrow=1, ax=ax)
        ax.set_title(f"t={i / (steps - 1):.1f}" + (f"\n{names[i]}" if names else ""), fontsize=7)
    fig.suptitle(title, fontsize=10, y=1.15 if names else 1.05)

    cache = [_png(img[None]) for img in images]
    slider = W.IntSlider(min=0, max=steps - 1, value=0, description="t step",
                         continuous_update=True)
    view = W.Image(value=cache[0], format="png", width=160)
    caption = W.Label()

    def show(change=None):
        i = slider.value
        view.value = cache[i]
        caption.value = f"t = {i / (steps - 1):.2f}" + (f"  ({names[i]})" if names else "")

    slider.observe(show, names="value")
    show()
    return W.VBox([slider, view, caption]), fig, images


def class_picker(sample: Callable[[int, int], torch.Tensor], classes: list[str] | tuple[str, ...],
                 n_seeds: int = 20):
    """Pick a class and a noise seed; see the conditional generator's samples for them.

    ``sample(label, seed)`` returns a few images (k, C, H, W) in [0, 1]. Returns the widget; the
    static fallback of a conditional model is its per-class grid (``plots.image_grid`` of a batch
    with one row per class), drawn by the notebook.
    """
    import ipywidgets as W

    dropdown = W.Dropdown(options=[(name, i) for i, name in enumerate(classes)], value=0, description="class")
    seed = W.IntSlider(min=0, max=n_seeds - 1, value=0, description="noise seed")
    view = W.Image(format="png", width=480)

    def show(change=None):
        with torch.no_grad():
            view.value = _png(sample(dropdown.value, seed.value).cpu(), size=0.8)

    dropdown.observe(show, names="value")
    seed.observe(show, names="value")
    show()
    return W.VBox([W.HBox([dropdown, seed]), view])
