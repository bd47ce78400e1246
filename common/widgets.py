"""Interactive latent-space widgets that decode what they show live, each with a static figure.

Sliders need a live Jupyter kernel; on GitHub, in a rendered page or in CI they show nothing. So
every helper here returns the widget *and* draws the same information as a static figure. The
widgets decode on demand: dragging a slider decodes the latent at that position, choosing another
endpoint (a test image, a noise seed, a class) recomputes the path; nothing is pre-rendered.

Each widget keeps what it displays as a tensor (``.current``), so a test can drive it through its
Python API (set a control's value) and compare the picture with a direct decode.

Introduced in notebooks/01_vae.ipynb.
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, ImageDraw

from . import plots

#: on-screen pixels per image pixel in the live views (28 px -> 112 px, 64 px -> 256 px at 4)
ZOOM = 4


def lerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the straight line from z0 to z1 (both ends included): (steps, *z0.shape)."""
    _check_ends(z0, z1, steps)
    return path(z0, z1, torch.linspace(0, 1, steps, device=z0.device))


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the spherical path from z0 to z1 (both ends included): (steps, *z0.shape).

    The great-circle interpolation of White (2016), "Sampling generative networks": for Gaussian
    noise in many dimensions almost all the mass lies near a sphere of radius sqrt(d), and a straight
    line between two samples cuts through the less likely inside (its midpoint has about 1/sqrt(2)
    of their norm); the spherical path keeps the norm.

    The direction turns from z0's to z1's at a constant angular speed and the norm goes linearly
    from |z0| to |z1|: White's formula sin((1-t)W)/sin(W) z0 + sin(tW)/sin(W) z1 when the norms are
    equal, and still finite when they are not and the ends point (nearly) opposite ways, where
    that formula's norm grows without bound. Opposite ends have no one great circle: the path
    then turns through a fixed direction (the coordinate axis least aligned with z0, made
    orthogonal to it), the same at every call. A zero end, ends in one direction, or 1-D
    latents: the straight line. The first and last points are z0 and z1 themselves, bitwise.
    """
    _check_ends(z0, z1, steps)
    return path(z0, z1, torch.linspace(0, 1, steps, device=z0.device), spherical=True)


def path(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor | Sequence[float],
         spherical: bool = False) -> torch.Tensor:
    """The points at positions ``t`` (0 = z0, 1 = z1) on the linear or spherical path: (len(t), *z0.shape)."""
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device).view(-1, *([1] * z0.dim()))
    arc = _arc(z0, z1, t) if spherical else None
    points = arc if arc is not None else (1 - t) * z0 + t * z1
    # the ends are the inputs themselves: round-off in the formulas would move them by an ulp or so
    return torch.where(t == 0, z0, torch.where(t == 1, z1, points))


def _arc(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
    """The spherical path of :func:`slerp` at positions ``t``, in float64, or None where it is
    the straight line (a zero end, one direction, 1-D)."""
    a, b = z0.flatten().double(), z1.flatten().double()
    r0, r1 = a.norm(), b.norm()
    if r0 == 0 or r1 == 0 or len(a) < 2:
        return None
    u0, u1 = a / r0, b / r1
    omega = 2 * torch.atan2((u0 - u1).norm(), (u0 + u1).norm())   # the angle, accurate near 0 and pi
    if omega <= 1e-4:   # the two directions coincide: the arc is the line
        return None
    v = u1 - (u0 @ u1) * u0   # the way from u0 towards u1, orthogonal to u0
    if v.norm() < 1e-6:      # (nearly) opposite: no great circle is singled out, so take a fixed one
        v = torch.zeros_like(u0)
        v[u0.abs().argmin()] = 1
        v = v - (u0 @ v) * u0
    v = v / v.norm()
    s = t.double().view(-1, 1)
    direction = torch.cos(s * omega) * u0 + torch.sin(s * omega) * v
    return (((1 - s) * r0 + s * r1) * direction).to(z0.dtype).view(len(s), *z0.shape)


def _check_ends(z0, z1, steps):
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to include both ends, got {steps}")


def to_png(images: torch.Tensor, zoom: int = ZOOM, gap: int = 2) -> bytes:
    """(N, C, H, W) images in [0, 1] side by side as PNG bytes, each pixel drawn as zoom x zoom."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with 1 or 3 channels, got {tuple(images.shape)}")
    arr = (images.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8)
    n, c, h, w = arr.shape
    canvas = torch.full((c, h, n * w + (n - 1) * gap), 255, dtype=torch.uint8)
    for i in range(n):
        canvas[:, :, i * (w + gap): i * (w + gap) + w] = arr[i]
    img = Image.fromarray(canvas[0].numpy() if c == 1 else canvas.permute(1, 2, 0).numpy())
    img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="png")
    return buf.getvalue()


def from_png(png: bytes, n: int = 1, zoom: int = ZOOM, gap: int = 2) -> torch.Tensor:
    """``to_png``'s output back as an (n, C, H, W) tensor in [0, 1] (for tests and checks)."""
    arr = np.array(Image.open(io.BytesIO(png)))[::zoom, ::zoom]
    t = torch.from_numpy(arr.copy()).float() / 255
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)[:3]
    w = (t.shape[-1] - (n - 1) * gap) // n
    return torch.stack([t[..., i * (w + gap): i * (w + gap) + w] for i in range(n)])


class Interpolation(W.VBox):
    """A live interpolation: a position slider that decodes on demand, optional endpoint pickers
    (``start``/``end``), an optional class picker (``label``) and an optional linear/spherical switch
    (``mode``). ``current`` is the (C, H, W) image on show, ``z0``/``z1`` the path's ends."""

    def __init__(self, decode, z0, z1, labels=None, endpoint=None, endpoint_name="noise seed",
                 endpoint_max=99, ends=(0, 1), classes=None, spherical=None, resolution=100):
        self._decode, self._names, self._endpoint = decode, labels, endpoint
        self.z0, self.z1, self.current = z0, z1, None
        self.t = W.FloatSlider(min=0.0, max=1.0, step=1 / resolution, value=0.0, description="t",
                               readout_format=".2f", continuous_update=True)
        rows = [self.t]
        self.start = self.end = self.label = self.mode = None
        if endpoint is not None:
            self.start = W.BoundedIntText(value=ends[0], min=0, max=endpoint_max, description=f"from {endpoint_name}",
                                          style={"description_width": "initial"})
            self.end = W.BoundedIntText(value=ends[1], min=0, max=endpoint_max, description=f"to {endpoint_name}",
                                        style={"description_width": "initial"})
            rows.insert(0, W.HBox([self.start, self.end]))   # z0, z1 already come from endpoint(ends)
        if classes is not None:
            self.label = W.Dropdown(options=[(name, i) for i, name in enumerate(classes)], value=0, description="class")
            rows.insert(0, self.label)
        if spherical is not None:
            self.mode = W.ToggleButtons(options=[("linear", False), ("spherical", True)], value=bool(spherical),
                                        description="path")
            rows.insert(0, self.mode)
        self.view, self.caption = W.Image(format="png"), W.Label()
        super().__init__(rows + [self.view, self.caption])
        for control in (self.t, self.start, self.end, self.label, self.mode):
            if control is not None:
                control.observe(self._ends_changed if control in (self.start, self.end) else self.show, names="value")
        self.show()

    def __repr__(self) -> str:   # the text a viewer without widgets shows (GitHub, nbconvert)
        return "Interpolation slider (live in Jupyter; the strip above is its static view)"

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """What the widget draws for a batch of latents: the decoder, with the chosen class if any."""
        with torch.no_grad():
            if self.label is None:
                return self._decode(z)
            return self._decode(z, torch.full((len(z),), self.label.value, dtype=torch.long, device=z.device))

    def _ends_changed(self, change=None):
        with torch.no_grad():   # an encoder or a seed's noise: nothing here needs gradients
            self.z0, self.z1 = self._endpoint(self.start.value), self._endpoint(self.end.value)
        self.show()

    def show(self, change=None):
        z = path(self.z0, self.z1, [self.t.value], spherical=self.mode is not None and bool(self.mode.value))
        self.current = self.decode(z)[0].float().cpu()
        self.view.value = to_png(self.current[None])
        self.view.width = str(self.current.shape[-1] * ZOOM)   # native size x ZOOM, never stretched
        name = f"  ({self._names(self.current[None])[0]})" if self._names is not None else ""
        self.caption.value = f"t = {self.t.value:.2f}{name}"


def interpolation(decode: Callable[..., torch.Tensor], z0: torch.Tensor | None = None,
                  z1: torch.Tensor | None = None, steps: int = 11,
                  labels: Callable[[torch.Tensor], list[str]] | None = None,
                  title: str = "interpolation z0 -> z1", *, endpoint: Callable[[int], torch.Tensor] | None = None,
                  endpoint_name: str = "noise seed", endpoint_max: int = 99, ends: tuple[int, int] = (0, 1),
                  classes: Sequence[str] | None = None, spherical: bool | None = None):
    """A live slider from z0 to z1 through ``decode``, and the same path as a static strip.

    ``decode`` maps a batch of latents (B, ...) to images (B, C, H, W) in [0, 1] (with ``classes``,
    ``decode(z, labels)``). ``labels``, if given, names each decoded image (e.g. a classifier's guess)
    so the strip shows where the path crosses into another class. ``endpoint(i)`` turns a choice
    (a test image's index, a noise seed) into a latent: the widget then lets the learner pick both
    ends (``ends`` first). ``classes`` adds a class picker (conditional models; the strip uses the
    first class). ``spherical`` adds a linear/spherical switch starting at that value. The strip
    is drawn once, from the initial ends, with ``steps`` frames. Returns ``(widget, figure, images)``.
    """
    if endpoint is not None:
        with torch.no_grad():
            z0, z1 = endpoint(ends[0]), endpoint(ends[1])
    if z0 is None or z1 is None:
        raise ValueError("give z0 and z1, or endpoint= to pick them by index or seed")
    _check_ends(z0, z1, steps)
    widget = Interpolation(decode, z0, z1, labels, endpoint, endpoint_name, endpoint_max, ends, classes, spherical)
    images = widget.decode(path(z0, z1, torch.linspace(0, 1, steps), spherical=bool(spherical))).cpu()
    names = labels(images) if labels is not None else None
    return widget, plots.interpolation_strip(images, names, title), images


class LatentExplorer(W.HBox):
    """A point moved over a 2-D latent map by two sliders (``x``, ``y``), and the image decoded at it:
    ``map_view`` is the map with the point marked, ``view`` the decoded image, ``current`` it as (C, H, W)."""

    def __init__(self, decode, points, point_labels=None, classes=None, title="latent space", zoom=ZOOM):
        self._decode, self._zoom = decode, zoom
        pts = points.detach().float().cpu().numpy()
        lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
        fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=80)
        colours = None if point_labels is None else point_labels.cpu().numpy()
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=colours, cmap="tab10", s=2, alpha=0.6)
        if classes is not None and colours is not None:
            ax.legend(sc.legend_elements()[0], classes, fontsize=6, markerscale=0.6, loc="upper right")
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="z₁", ylabel="z₂", title=title)
        fig.tight_layout()
        fig.canvas.draw()
        self._to_pixels = lambda x, y: ax.transData.transform((x, y))
        self._height = fig.canvas.get_width_height()[1]
        self._map = Image.frombuffer("RGBA", fig.canvas.get_width_height(), bytes(fig.canvas.buffer_rgba())).convert("RGB")
        plt.close(fig)
        step = float((hi - lo).max()) / 200
        self.x = W.FloatSlider(min=float(lo[0]), max=float(hi[0]), step=step, value=float(np.median(pts[:, 0])),
                               description="z₁", readout_format=".2f")
        self.y = W.FloatSlider(min=float(lo[1]), max=float(hi[1]), step=step, value=float(np.median(pts[:, 1])),
                               description="z₂", readout_format=".2f")
        self.map_view, self.view, self.current = W.Image(format="png"), W.Image(format="png"), None
        # top-aligned: a flex row would otherwise stretch the decoded image to the map's height
        super().__init__([W.VBox([self.map_view, self.x, self.y]), self.view],
                         layout=W.Layout(align_items="flex-start"))
        self.x.observe(self.show, names="value")
        self.y.observe(self.show, names="value")
        self.show()

    def __repr__(self) -> str:
        return "2-D latent explorer (live in Jupyter; the latent map above is its static view)"

    def show(self, change=None):
        with torch.no_grad():
            self.current = self._decode(torch.tensor([[self.x.value, self.y.value]]))[0].float().cpu()
        self.view.value = to_png(self.current[None], zoom=self._zoom)
        self.view.width = str(self.current.shape[-1] * self._zoom)
        img = self._map.copy()
        px, py = self._to_pixels(self.x.value, self.y.value)
        py = self._height - py
        draw = ImageDraw.Draw(img)
        draw.ellipse([px - 6, py - 6, px + 6, py + 6], outline=(0, 0, 0), width=2)
        draw.line([px - 10, py, px + 10, py], fill=(0, 0, 0))
        draw.line([px, py - 10, px, py + 10], fill=(0, 0, 0))
        buf = io.BytesIO()
        img.save(buf, format="png")
        self.map_view.value = buf.getvalue()
        self.map_view.width = str(img.width)


def latent_explorer(decode: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor,
                    point_labels: torch.Tensor | None = None, classes: Sequence[str] | None = None,
                    title: str = "latent space") -> LatentExplorer:
    """A 2-D latent explorer: move a point over the map of ``points`` (N, 2) (e.g. the test set's
    latent means, coloured by ``point_labels``) with two sliders, and see ``decode`` at that point.

    ``decode`` maps (B, 2) latents to (B, C, H, W) images in [0, 1]. The static fallback is the
    notebook's own latent map and manifold figures."""
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) latents of a 2-D latent space, got {tuple(points.shape)}")
    return LatentExplorer(decode, points, point_labels, classes, title)


def class_picker(sample: Callable[[int, int], torch.Tensor], classes: list[str] | tuple[str, ...], n_seeds: int = 20):
    """Pick a class and a noise seed; see the conditional generator's samples for them.

    ``sample(label, seed)`` returns a few images (k, C, H, W) in [0, 1]. Returns the widget; the static
    fallback is the notebook's per-class grid (``plots.image_grid`` of a batch, one row per class)."""
    dropdown = W.Dropdown(options=[(name, i) for i, name in enumerate(classes)], value=0, description="class")
    seed = W.IntSlider(min=0, max=n_seeds - 1, value=0, description="noise seed")
    view = W.Image(format="png")

    def show(change=None):
        with torch.no_grad():
            images = sample(dropdown.value, seed.value).cpu()
            view.value = to_png(images, zoom=2)
            view.width = str(2 * (len(images) * (images.shape[-1] + 2) - 2))

    dropdown.observe(show, names="value")
    seed.observe(show, names="value")
    show()
    return ClassPicker([W.HBox([dropdown, seed]), view])


class ClassPicker(W.VBox):
    """The class picker's box: a class, a noise seed, and the samples for them."""

    def __repr__(self) -> str:
        return "Class picker (live in Jupyter; the per-class grid above is its static view)"
