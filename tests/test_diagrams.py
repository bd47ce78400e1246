"""The three block diagrams: small figures that name what the notebooks name, with no text drawn over
other text or over a box it does not belong to, nothing cut off at the edge, and no torch."""
import ast
import itertools
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from common import diagrams  # noqa: E402
from common.machinery.runtime import REPO_ROOT  # noqa: E402

EXPECTED = {   # pieces of the labels a learner looks for in each diagram
    "vae": [r"q_\phi", r"p_\theta", r"\mu", r"\log\sigma^2", r"\sigma \odot \epsilon", r"\mathcal{N}(0, I)",
            r"\hat{x}", "reconstruction", r"\mathrm{KL}", "gradient"],
    "quantizer": ["encoder", "decoder", "z_e", "z_q", "e_1", "e_K", "codebook", "commitment", r"\beta",
                  r"\mathrm{sg}[z_e] - e", r"z_e - \mathrm{sg}[e]", "reconstruction", "straight-through"],
    "gan_loop": [r"\mathcal{N}(0, I)", "$G$", "$G(z)$", "real $x$", "$D$", "$D(x)$", "$D(G(z))$",
                 "1. D step", "2. G step", "$G$ frozen", "$D$ frozen", r"\theta_D", r"\theta_G"],
}


@pytest.fixture(params=sorted(EXPECTED))
def drawn(request):
    plt.rcParams["figure.dpi"] = 80            # the course's display dpi (plots.use_course_style)
    fig = getattr(diagrams, request.param)()   # no required arguments: notebooks call diagrams.vae()
    fig.canvas.draw()
    yield request.param, fig, fig.canvas.get_renderer()
    plt.close(fig)


def _texts(fig):
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


def test_each_diagram_is_a_small_figure(drawn):
    _, fig, _ = drawn
    assert isinstance(fig, Figure)
    width, height = fig.get_size_inches()
    assert 8 <= width <= 10 and 2.5 <= height <= 3.5


def test_each_diagram_names_what_the_notebook_names(drawn):
    name, fig, _ = drawn
    text = "\n".join(t.get_text() for t in _texts(fig))
    missing = [label for label in EXPECTED[name] if label not in text]
    assert not missing, f"{name}() lacks {missing}"


def test_no_text_overlaps_other_text_or_a_box_it_is_not_in(drawn):
    name, fig, renderer = drawn
    texts = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        assert not box_a.overlaps(box_b), f"{name}(): {a!r} overlaps {b!r}"
    boxes = [p.get_window_extent(renderer) for p in fig.findobj(FancyBboxPatch) if p is not fig.patch]
    for text, extent in texts:   # a label sits wholly inside one box or clear of every box
        inside = [b for b in boxes if b.contains(extent.x0, extent.y0) and b.contains(extent.x1, extent.y1)]
        clashes = [b for b in boxes if b.overlaps(extent) and b not in inside]
        assert len(inside) <= 1 and not clashes, f"{name}(): {text!r} runs over the edge of a box"


def test_nothing_is_drawn_outside_the_figure(drawn):
    name, fig, renderer = drawn
    page = fig.bbox.padded(1)
    artists = _texts(fig) + [p for ax in fig.axes for p in ax.patches]
    for artist in artists:
        extent = artist.get_window_extent(renderer)
        assert page.contains(extent.x0, extent.y0) and page.contains(extent.x1, extent.y1), \
            f"{name}(): {artist} is cut off at the figure's edge"


def test_gradients_are_drawn_as_dashed_coloured_arrows(drawn):
    name, fig, _ = drawn
    arrows = [p for ax in fig.axes for p in ax.patches if isinstance(p, FancyArrowPatch)]
    solid = [a for a in arrows if a.get_linestyle() == "-"]
    dashed = [a for a in arrows if a.get_linestyle() == "--"]
    assert solid and dashed, f"{name}(): needs forward (solid) and gradient (dashed) arrows"
    black = matplotlib.colors.to_rgba("black")
    assert all(a.get_edgecolor() != black for a in dashed), f"{name}(): a gradient arrow is black"


def test_the_module_draws_with_matplotlib_alone():
    tree = ast.parse((REPO_ROOT / "common" / "diagrams.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "matplotlib"}, imported
    code = "import sys, common.diagrams; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
