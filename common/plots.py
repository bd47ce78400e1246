"""Figures the notebooks share: image grids, labelled image rows, loss curves, snapshot strips.

First used in notebooks/01_vae.ipynb; every notebook draws with them.

Every helper returns its ``Figure``; a notebook calls it and then ``plt.show()`` once. Images are
tensors in [0, 1] shaped (N, C, H, W) on any device.
"""
from __future__ import annotations

import sys
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from torchvision.utils import make_grid

from .machinery.history import History


def use_course_style(dpi: int = 80) -> None:
    """Small PNG figures (they are committed with the notebooks) with a clean look."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
                         "image.cmap": "gray"})
    try:  # PNG only, not PNG + SVG/PDF, in the notebook outputs
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - outside IPython
        return
    _check_native_size_on_display()


UNDERSIZED = "shown below its native size"   # the phrase tools.check_notebooks looks for


def image_scales(fig: Figure) -> list[tuple[plt.Axes, AxesImage, float]]:
    """Every image of ``fig`` with the screen pixels it gets per image pixel at the figure's dpi
    (the smaller of the horizontal and vertical scale), as laid out for drawing."""
    scales = []
    for ax in fig.axes:
        ax.apply_aspect()
        for im in ax.get_images():
            rows, cols = im.get_array().shape[:2]
            x0, x1, y0, y1 = im.get_extent()
            (px0, py0), (px1, py1) = ax.transData.transform([(x0, y0), (x1, y1)])
            scales.append((ax, im, min(abs(px1 - px0) / cols, abs(py1 - py0) / rows)))
    return scales


def undersized_images(fig: Figure, tolerance: float = 0.98) -> list[str]:
    """The images that ``fig`` draws pixel by pixel (``interpolation="nearest"``, as every picture in
    the course is drawn) at fewer than one screen pixel per image pixel, at the figure's dpi: a
    28x28 sample squeezed into 20 screen pixels loses the detail the notebook talks about. Heat maps
    drawn smoothly are not pictures and are not checked. Returns one sentence per such image."""
    found = []
    for ax, im, scale in image_scales(fig):
        if im.get_interpolation() == "nearest" and scale < tolerance:
            rows, cols = im.get_array().shape[:2]
            title = ax.get_title() or fig.get_suptitle() or "untitled"
            found.append(f"a {cols}x{rows}-pixel image in panel '{title}' is {UNDERSIZED} "
                         f"({scale:.2f} screen pixels per image pixel at {fig.dpi:g} dpi): "
                         f"make the figure larger (plots.tile_inches gives the inches per image)")
    return found


def _check_native_size_on_display() -> None:
    """Every figure a notebook displays is checked by ``undersized_images`` first and a warning is
    printed under it when an image is drawn too small; the committed outputs keep that warning, which
    ``tools.check_notebooks`` reports. Installed once per kernel."""
    from IPython import get_ipython
    shell = get_ipython()
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["image/png"]
    draw = formatter.lookup_by_type(Figure)
    if getattr(draw, "checks_native_size", False):
        return

    def checked(fig):
        for problem in undersized_images(fig):
            print(f"Warning: {problem}", file=sys.stderr)
        return draw(fig)

    checked.checks_native_size = True
    formatter.for_type(Figure, checked)


def _to_numpy_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    if images.dim() != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got {tuple(images.shape)}")
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=pad, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy() if images.shape[1] == 3 else grid[0].numpy()


def tile_inches(images: torch.Tensor, scale: float = 0.6) -> float:
    """Inches per image in a figure: ``scale``, or more so that every image still shows at least at
    its native pixel size once titles, labels and spacing take their share (a 64x64 image gets
    about 1 inch at 80 dpi; a 28x28 one keeps ``scale``)."""
    return max(scale, 1.25 * (images.shape[-1] + 2) / plt.rcParams["figure.dpi"])


def image_grid(images: torch.Tensor, nrow: int = 8, title: str | None = None,
               ax: plt.Axes | None = None, scale: float = 0.6) -> Figure:
    """A grid of images, ``nrow`` per row."""
    arr = _to_numpy_grid(images, nrow)
    if ax is None:
        rows, tile = -(-len(images) // nrow), tile_inches(images, scale)
        _, ax = plt.subplots(figsize=(tile * min(nrow, len(images)) + 0.2, tile * rows + 0.4))
    ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def image_rows(rows: Mapping[str, torch.Tensor], title: str | None = None,
               scale: float = 0.6) -> Figure:
    """One labelled row per entry, e.g. {"original": x, "reconstruction": x_hat}."""
    n = max(len(v) for v in rows.values())
    tile = tile_inches(next(iter(rows.values())), scale)
    fig, axes = plt.subplots(len(rows), 1, figsize=(tile * n + 1.6, 1.15 * tile * len(rows) + 0.5),
                             squeeze=False)
    for ax, (label, imgs) in zip(axes[:, 0], rows.items()):
        ax.imshow(_to_numpy_grid(imgs, nrow=len(imgs)), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def snapshot_rows(history: History, every: int = 1, title: str | None = None) -> Figure:
    """The images a run stored after each epoch (``history.snapshots``), one row per epoch."""
    if not history.snapshots:
        raise ValueError("history.snapshots is empty: add a snapshot callback to the training run")
    epochs = sorted(history.snapshots)
    keep = [e for e in epochs if e % every == 0 or e in (epochs[0], epochs[-1])]
    return image_rows({f"epoch {e}": history.snapshots[e].float().div(255) for e in keep}, title)


def interpolation_strip(images: torch.Tensor, names: Sequence[str] | None, title: str) -> Figure:
    """The frames of a latent path side by side, each titled with its position t (and ``names``, if
    given): the static view of :func:`common.widgets.interpolation`."""
    steps = len(images)
    fontsize = 7                                                 # points, of the frames' titles
    tile = tile_inches(images, 0.8)
    fig, axes = plt.subplots(1, steps, figsize=(tile * steps, tile + (0.5 if names else 0.2)),
                             gridspec_kw={"left": 0.01, "right": 0.99, "wspace": 0.08})
    for i, ax in enumerate(axes):
        image_grid(images[i:i + 1], nrow=1, ax=ax)
        ax.set_title(f"t={i / (steps - 1):.1f}" + (f"\n{names[i]}" if names else ""), fontsize=fontsize)
    # the title sits above the frames' own titles (one or two lines of 7 pt), never on them
    above = ((2 if names else 1) * fontsize * 1.3 + 6 + 4) / 72  # inches: frame titles, pad, gap
    fig.suptitle(title, fontsize=10, va="bottom", y=fig.subplotpars.top + above / fig.get_figheight())
    return fig


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


#: what the training histories' keys mean, in words, for panel titles
KEY_NAMES = {
    "loss": "training loss", "test_loss": "test loss", "kl": "KL (rate)", "test_kl": "test KL (rate)",
    "recon": "reconstruction loss", "test_recon": "test reconstruction loss",
    "dead_codes": "dead codes", "test_recon_mse": "test reconstruction error (MSE)",
    "perplexity": "codebook perplexity",
    "loss_D": "discriminator loss", "loss_G": "generator loss",
    "D(x)": "D(x): D on real images", "D(G(z))": "D(G(z)): D on generated images",
    "D(x, wrong label)": "D on real images with a wrong label",
    "class_loss_real": "class loss on real images", "class_loss_fake": "class loss on generated images",
    "gp": "gradient penalty", "grad_norm_xhat": "norm of D's gradient between real and fake images",
}


def curves(histories: Mapping[str, History] | History, keys: Sequence[str | tuple[str, ...]], per: str = "epoch",
           smooth: int = 1, title: str | None = None, logy: bool = False,
           panel_title: str | None = None, units: str | Mapping[str, str] | None = None,
           names: Mapping[str, str] | None = None) -> Figure:
    """One panel per key, titled in words (``names``, then ``KEY_NAMES``; or one ``panel_title``);
    one line per run. A tuple of keys shares one panel (and one y axis), a line per run and key:
    ``("loss", "test_loss")`` puts training and test loss where they can be compared (with several
    runs, each run keeps its colour and each key gets a line style).

    ``per`` is "epoch" or "step" (steps can be smoothed with a moving average of ``smooth`` steps).
    ``units`` labels the y axes: one string for every panel, or a {key: unit} mapping (a shared
    panel takes its first key's). A log axis (``logy``) is labelled with plain numbers."""
    if isinstance(histories, History):
        histories = {"": histories}
    words = lambda key: (names or {}).get(key, KEY_NAMES.get(key, key))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], keys):
        group = (panel,) if isinstance(panel, str) else tuple(panel)
        for i, (name, h) in enumerate(histories.items()):
            for j, key in enumerate(group):
                if per == "epoch":
                    x, y = h.series(key)
                else:
                    raw = h.steps.get(key, [])
                    y = _smooth(raw, smooth)
                    x = np.arange(1, len(y) + 1) + (len(raw) - len(y))  # a moving average ends at its last step
                if len(y) == 0:
                    continue
                label = " · ".join(s for s in (name, words(key) if len(group) > 1 else "") if s) or None
                # several runs: a colour per run, a line style per key (solid: the first, e.g. training)
                style = dict(color=f"C{i}", ls=("-", "--", ":", "-.")[j % 4]) if len(histories) > 1 else {}
                ax.plot(x, y, label=label, marker="o" if per == "epoch" and len(y) < 30 else None, ms=3, **style)
        ax.set_xlabel("epoch" if per == "epoch" else "training step (batch)")
        if per == "epoch":   # whole epochs: no 1.5 on the axis
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        unit = units.get(group[0]) if isinstance(units, Mapping) else units
        if unit:
            ax.set_ylabel(unit)
        default = words(group[0]) if len(group) == 1 else " and ".join(words(k) for k in group)
        ax.set_title(default if panel_title is None else panel_title, fontsize=10)
        if logy:
            ax.set_yscale("log")
            plain_log_ticks(ax)
        if any(histories) or len(group) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


class _PlainLogLocator(LogLocator):
    """Ticks of a log axis at 1, 2 and 5 times each power of ten; at the powers of ten alone where
    that would crowd the axis (more than 8 in view); at 1, 1.5, 2, 3, 5, 7 (or every integer
    multiple) where 1, 2, 5 would label fewer than 3 values (2.6 to 13 would read only 5 and 10,
    48 to 175 only 50 and 100). Inside one decade matplotlib's own fallback gives linear steps
    (6, 6.5, 7, ...). Every call sets the subs it uses, so no state carries between calls."""

    def __init__(self):
        super().__init__(base=10, subs=(1.0, 2.0, 5.0), numticks=30)

    def _ticks(self, subs, vmin, vmax):
        self.set_params(subs=subs)
        ticks = super().tick_values(vmin, vmax)
        lo, hi = sorted((vmin, vmax))
        return ticks, int(((ticks >= lo) & (ticks <= hi)).sum())

    def tick_values(self, vmin, vmax):
        ticks, n = self._ticks((1.0, 2.0, 5.0), vmin, vmax)
        if n > 8:
            return self._ticks((1.0,), vmin, vmax)[0]
        if n < 3:
            for subs in ((1.0, 1.5, 2.0, 3.0, 5.0, 7.0), tuple(range(1, 10))):
                denser, m = self._ticks(subs, vmin, vmax)
                if n < m <= 8:
                    return denser
        return ticks


def plain_log_ticks(ax: plt.Axes, axis: str = "y") -> None:
    """Label a log axis with plain numbers (2, 5, 10, 20 or, inside one decade, 6, 6.5, 7) instead
    of matplotlib's "2×10⁰"; the minor ticks stay unlabelled."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(_PlainLogLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())
