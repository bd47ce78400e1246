"""Block diagrams of the three models, drawn in code (boxes and arrows, mathtext labels).

A learner sees the data flow and where each loss term attaches before reading the code:
``vae()`` in notebooks/01_vae.ipynb (the reparameterization trick), ``quantizer()`` in
notebooks/02_vq_vae.ipynb (the straight-through gradient), ``gan_loop()`` in
notebooks/03_dcgan.ipynb (the two alternating steps). Solid black arrows are the forward pass;
dashed coloured arrows are gradients. Each returns its ``Figure``; call it, then ``plt.show()``.
Only matplotlib: no torch, no images from outside.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

GRAD = "tab:red"       # gradients and the losses they come from
D_COLOR, G_COLOR = "tab:blue", "tab:orange"
FONT = 11


def _canvas(width: float, height: float) -> tuple[Figure, plt.Axes]:
    """A figure whose one axes fills it, with data units in inches: (0, 0) is the bottom left."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, width), ylim=(0, height))
    ax.axis("off")
    return fig, ax


def _box(ax, x, y, text, w=1.2, h=0.55, color="black", fill="#f2f2f2", size=FONT) -> FancyBboxPatch:
    """A rounded box of size (w, h) centred on (x, y) with ``text`` in it; returns the box."""
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                           facecolor=fill, edgecolor=color, linewidth=1.3)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=size, color=color)
    return patch


def _arrow(ax, a, b, color="black", dashed=False, rad=0.0) -> None:
    """An arrow from ``a`` to ``b``; each is a point (x, y) or a box, where the arrow stops at its edge."""
    ends = [(p.get_x() + p.get_width() / 2, p.get_y() + p.get_height() / 2)
            if isinstance(p, FancyBboxPatch) else p for p in (a, b)]
    ax.add_patch(FancyArrowPatch(*ends, patchA=a if isinstance(a, FancyBboxPatch) else None,
                                 patchB=b if isinstance(b, FancyBboxPatch) else None,
                                 arrowstyle="-|>", mutation_scale=14, color=color, linewidth=1.4,
                                 linestyle="--" if dashed else "-", shrinkA=2, shrinkB=2,
                                 connectionstyle=f"arc3,rad={rad}"))


def _note(ax, x, y, text, color="black", size=FONT - 1, ha="center") -> None:
    ax.text(x, y, text, ha=ha, va="center", fontsize=size, color=color)


def vae() -> Figure:
    """x -> encoder -> (mu, log sigma^2) -> z = mu + sigma * eps -> decoder -> x_hat, with the side
    input eps ~ N(0, I), the gradient path through mu and sigma, and the two ELBO terms."""
    fig, ax = _canvas(10, 3.2)
    y = 1.75
    x = _box(ax, 0.45, y, r"$x$", w=0.6)
    enc = _box(ax, 1.95, y, "encoder\n" r"$q_\phi(z\,|\,x)$", w=1.5, h=0.8)
    stats = _box(ax, 3.9, y, r"$\mu,\ \log\sigma^2$", w=1.45)
    z = _box(ax, 5.95, y, r"$z = \mu + \sigma \odot \epsilon$", w=1.85)
    dec = _box(ax, 7.9, y, "decoder\n" r"$p_\theta(x\,|\,z)$", w=1.5, h=0.8)
    x_hat = _box(ax, 9.45, y, r"$\hat{x}$", w=0.6)
    for a, b in [(x, enc), (enc, stats), (stats, z), (z, dec), (dec, x_hat)]:
        _arrow(ax, a, b)
    eps = _box(ax, 5.95, 0.45, r"$\epsilon \sim \mathcal{N}(0, I)$", w=1.7, fill="white", color="dimgray")
    _arrow(ax, eps, z, color="dimgray")
    _note(ax, 7.85, 0.45, "sampled outside the model:\nno gradient to $\\epsilon$", color="dimgray")
    # the gradient of both losses reaches phi through mu and sigma, not through the random draw
    _arrow(ax, (6.3, 2.2), (2.25, 2.3), color=GRAD, dashed=True, rad=0.2)
    _note(ax, 4.2, 2.95, r"gradient flows back through $\mu$ and $\sigma$ to $\phi$", color=GRAD)
    _arrow(ax, stats, (3.9, 0.8), color=GRAD)
    _note(ax, 3.9, 0.5, "KL term\n" r"$\mathrm{KL}(q_\phi(z\,|\,x)\,\|\,\mathcal{N}(0,I))$", color=GRAD)
    _arrow(ax, x_hat, (9.45, 2.45), color=GRAD)
    _note(ax, 9.3, 2.8, "reconstruction\n" r"$-\log p_\theta(x\,|\,z)$", color=GRAD)
    return fig


def quantizer() -> Figure:
    """x -> encoder -> z_e -> nearest codebook vector -> z_q -> decoder -> x_hat, the codebook
    e_1..e_K, the straight-through gradient from z_q to z_e, and the three VQ-VAE loss terms."""
    fig, ax = _canvas(10, 3.4)
    y = 2.0
    x = _box(ax, 0.4, y, r"$x$", w=0.55)
    enc = _box(ax, 1.55, y, "encoder", w=1.15)
    z_e = _box(ax, 2.85, y, r"$z_e$", w=0.65)
    near = _box(ax, 4.55, y, "nearest\n" r"$e_k$", w=1.35, h=0.8)
    z_q = _box(ax, 6.2, y, r"$z_q = e_k$", w=1.1)
    dec = _box(ax, 7.75, y, "decoder", w=1.15)
    x_hat = _box(ax, 9.3, y, r"$\hat{x}$", w=0.55)
    for a, b in [(x, enc), (enc, z_e), (z_e, near), (near, z_q), (z_q, dec), (dec, x_hat)]:
        _arrow(ax, a, b)
    # the codebook: K learned vectors, drawn as a row of cells under the nearest-neighbour lookup
    cells = [r"$e_1$", r"$e_2$", r"$e_3$", r"$\cdots$", r"$e_K$"]
    left, cell = 4.55 - 2.5 * 0.5, 0.5
    for i, label in enumerate(cells):
        ax.add_patch(Rectangle((left + i * cell, 0.55), cell, 0.45, facecolor=plt.cm.tab10(i) if i != 3
                               else "white", alpha=0.35, edgecolor="black"))
        _note(ax, left + (i + 0.5) * cell, 0.775, label, size=FONT)
    _note(ax, 4.55, 0.3, r"codebook $e_1, \ldots, e_K$ (learned)", color="dimgray")
    _arrow(ax, (4.55, 1.05), near, color="dimgray")
    _note(ax, 5.2, 1.3, r"$k = \arg\min_j \|z_e - e_j\|$", color="dimgray", ha="left")
    # straight-through: argmin has no gradient, so dL/dz_q is copied onto z_e unchanged
    _arrow(ax, (6.2, 2.3), (2.85, 2.3), color=GRAD, dashed=True, rad=0.3)
    _note(ax, 4.55, 3.15, r"straight-through: $\nabla_{z_e} L = \nabla_{z_q} L$ (copied past the argmin)",
          color=GRAD)
    _note(ax, 1.55, 0.75, "commitment\n" r"$\beta\,\|z_e - \mathrm{sg}[e]\|^2$", color=GRAD)
    _arrow(ax, (2.1, 1.1), z_e, color=GRAD)
    _note(ax, 7.35, 0.55, "codebook\n" r"$\|\mathrm{sg}[z_e] - e\|^2$", color=GRAD)
    _arrow(ax, (6.75, 0.775), (5.85, 0.775), color=GRAD)
    _note(ax, 9.15, 0.8, "reconstruction\n" r"$\|x - \hat{x}\|^2$", color=GRAD)
    _arrow(ax, x_hat, (9.3, 1.2), color=GRAD)
    return fig


def gan_loop() -> Figure:
    """z ~ N(0, I) -> G -> G(z) and real x both into D; the D step and the G step, each loss's
    arrow pointing at the parameters it updates while the other network is frozen."""
    fig, ax = _canvas(10, 3.4)
    z = _box(ax, 0.85, 2.1, r"$z \sim \mathcal{N}(0, I)$", w=1.5)
    G = _box(ax, 2.6, 2.1, r"$G$", w=0.7, color=G_COLOR, fill="#fdebd9")
    g_z = _box(ax, 3.9, 2.1, r"$G(z)$", w=0.9)
    x = _box(ax, 3.9, 0.75, r"real $x$", w=0.9)
    D = _box(ax, 5.3, 1.45, r"$D$", w=0.7, color=D_COLOR, fill="#dbe9f6")
    out = _box(ax, 6.55, 1.45, r"$D(x)$" "\n" r"$D(G(z))$", w=1.1, h=0.8)
    for a, b in [(z, G), (G, g_z), (g_z, D), (x, D), (D, out)]:
        _arrow(ax, a, b)
    d_step = _box(ax, 8.75, 0.65, "1. D step: raise $D(x)$,\nlower $D(G(z))$; $G$ frozen",
                  w=2.3, h=0.8, color=D_COLOR, fill="white", size=FONT - 1)
    g_step = _box(ax, 8.75, 2.5, "2. G step: raise $D(G(z))$;\n$D$ frozen",
                  w=2.3, h=0.8, color=G_COLOR, fill="white", size=FONT - 1)
    _arrow(ax, out, d_step)
    _arrow(ax, out, g_step)
    # each loss's gradient updates one network's parameters
    _arrow(ax, (7.6, 0.45), (5.3, 1.15), color=D_COLOR, dashed=True, rad=-0.25)
    _note(ax, 6.2, 0.3, r"updates $\theta_D$", color=D_COLOR)
    _arrow(ax, (7.6, 2.75), (2.6, 2.4), color=G_COLOR, dashed=True, rad=0.15)
    _note(ax, 5.1, 3.15, r"updates $\theta_G$ (gradient passes through frozen $D$)", color=G_COLOR)
    return fig
