import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from common import plots, training, widgets  # noqa: E402


def test_lerp_endpoints_and_midpoint():
    z0, z1 = torch.zeros(3), torch.tensor([2.0, 4.0, -2.0])
    path = widgets.lerp(z0, z1, 5)
    assert path.shape == (5, 3)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path[2], (z0 + z1) / 2)
    with pytest.raises(ValueError, match="same shape"):
        widgets.lerp(torch.zeros(2), torch.zeros(3), 4)
    with pytest.raises(ValueError, match="steps"):
        widgets.lerp(z0, z1, 1)


def test_slerp_keeps_the_norm_and_ends_where_lerp_does():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(512, generator=g), torch.randn(512, generator=g)
    arc, line = widgets.slerp(z0, z1, 9), widgets.lerp(z0, z1, 9)
    assert torch.allclose(arc[0], z0, atol=1e-5) and torch.allclose(arc[-1], z1, atol=1e-5)
    # two independent Gaussian vectors are nearly orthogonal with nearly equal norms: the arc keeps
    # the norm, the line's midpoint has about 1/sqrt(2) of it
    norms = arc.norm(dim=1) / z0.norm()
    assert (norms - 1).abs().max() < 0.1
    assert abs(line[4].norm() / z0.norm() - 2 ** -0.5) < 0.1
    # between unit vectors the arc turns at constant speed: the angle to z0 grows linearly in t
    u0, u1 = z0 / z0.norm(), z1 / z1.norm()
    unit_arc = widgets.slerp(u0, u1, 9)
    assert torch.allclose(unit_arc.norm(dim=1), torch.ones(9), atol=1e-5)
    angles = torch.arccos((unit_arc @ u0).clamp(-1, 1))
    assert torch.allclose(angles, torch.linspace(0, 1, 9) * torch.arccos(u0 @ u1), atol=1e-3)
    # parallel ends: the arc degenerates to the line instead of dividing by sin(0)
    assert torch.allclose(widgets.slerp(z0, 2 * z0, 3), widgets.lerp(z0, 2 * z0, 3))


def test_png_round_trip_keeps_every_pixel_at_zoom():
    imgs = torch.rand(3, 1, 28, 28)
    png = widgets.to_png(imgs, zoom=4)
    back = widgets.from_png(png, n=3, zoom=4)
    assert back.shape == (3, 1, 28, 28) and (back - imgs).abs().max() <= 0.5 / 255 + 1e-6
    colour = torch.rand(1, 3, 64, 64)
    assert (widgets.from_png(widgets.to_png(colour, zoom=2), zoom=2) - colour).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        widgets.to_png(torch.rand(28, 28))


def _decoder():
    w = torch.randn(2, 28 * 28, generator=torch.Generator().manual_seed(1))
    return lambda z: torch.sigmoid(z @ w).view(-1, 1, 28, 28)


def test_interpolation_decodes_on_demand_and_matches_a_direct_decode():
    decode = _decoder()
    z0, z1 = torch.full((2,), -3.0), torch.full((2,), 3.0)
    labels = lambda imgs: ["dark" if v < 0.5 else "light" for v in imgs.mean((1, 2, 3))]  # noqa: E731
    widget, fig, images = widgets.interpolation(decode, z0, z1, steps=7, labels=labels)
    assert images.shape == (7, 1, 28, 28) and len(fig.axes) == 7
    assert torch.allclose(images, decode(widgets.lerp(z0, z1, 7)))
    first = widget.view.value
    assert torch.allclose(widget.current, decode(z0[None])[0])
    for t in (0.37, 0.5, 1.0):   # positions between the strip's frames are decoded too
        widget.t.value = t
        direct = decode(((1 - t) * z0 + t * z1)[None])[0]
        assert torch.allclose(widget.current, direct, atol=1e-6)
        assert (widgets.from_png(widget.view.value)[0] - direct).abs().max() <= 0.5 / 255 + 1e-6
        assert f"t = {t:.2f}" in widget.caption.value
    assert widget.view.value != first
    # what GitHub and nbconvert show in place of the widget: a sentence, not the widget's repr
    assert widget._repr_mimebundle_()["text/plain"].startswith("Interpolation slider (live in Jupyter")


def test_interpolation_endpoints_picked_by_index_and_spherical_switch():
    decode = _decoder()
    g = torch.Generator().manual_seed(0)
    table = torch.randn(10, 2, generator=g)
    endpoint = lambda i: table[i]  # noqa: E731  (e.g. a test image's latent mean, or a seeded noise vector)
    widget, _, images = widgets.interpolation(decode, endpoint=endpoint, endpoint_name="test image",
                                              endpoint_max=9, ends=(2, 5), spherical=False, steps=5)
    assert torch.allclose(images[0], decode(table[2:3])[0]) and torch.allclose(images[-1], decode(table[5:6])[0])
    assert widget.start.description == "from test image" and widget.end.max == 9
    widget.start.value = 7
    assert torch.equal(widget.z0, table[7]) and torch.allclose(widget.current, decode(table[7:8])[0])
    widget.t.value = 0.5
    line = widget.current
    widget.mode.value = True
    arc = decode(widgets.path(table[7], table[5], [0.5], spherical=True))[0]
    assert torch.allclose(widget.current, arc) and not torch.allclose(line, arc)
    with pytest.raises(ValueError, match="endpoint="):
        widgets.interpolation(decode)


def test_interpolation_of_a_conditional_model_follows_the_class_picker():
    calls = []

    def decode(z, labels):
        calls.append(labels.tolist())
        return (labels.float() / 10 + 0 * z.sum(1)).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)

    widget, fig, images = widgets.interpolation(decode, torch.zeros(3), torch.ones(3), steps=4,
                                                classes=["a", "b", "c"])
    assert images.shape == (4, 1, 8, 8) and torch.all(images == 0)   # the strip uses the first class
    widget.label.value = 2
    assert calls[-1] == [2] and torch.allclose(widget.current, torch.full((1, 8, 8), 0.2))


def test_latent_explorer_decodes_the_point_under_the_sliders_and_marks_it():
    decode = _decoder()
    points = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    explorer = widgets.latent_explorer(decode, points, torch.arange(500) % 3, ["a", "b", "c"])
    before_map, before = explorer.map_view.value, explorer.view.value
    explorer.x.value, explorer.y.value = 1.0, -0.5
    direct = decode(torch.tensor([[1.0, -0.5]]))[0]
    assert torch.allclose(explorer.current, direct, atol=1e-6)
    assert (widgets.from_png(explorer.view.value)[0] - direct).abs().max() <= 0.5 / 255 + 1e-6
    assert explorer.view.value != before and explorer.map_view.value != before_map
    assert explorer.x.min < -1 < 1 < explorer.x.max
    assert "live in Jupyter" in explorer._repr_mimebundle_()["text/plain"]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        widgets.latent_explorer(decode, torch.randn(10, 3))


def test_plot_helpers_return_figures():
    imgs = torch.rand(10, 1, 28, 28)
    assert plots.image_grid(imgs, nrow=5).axes
    assert plots.image_grid(torch.rand(4, 3, 64, 64), nrow=2).axes  # colour
    assert len(plots.image_rows({"a": imgs[:4], "b": imgs[4:8]}).axes) == 2
    h = training.History(epochs=[{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0}], steps={"loss": [4, 3, 2, 1]},
                         snapshots={1: (imgs[:3] * 255).byte(), 2: (imgs[3:6] * 255).byte()})
    (ax,) = plots.curves({"run": h}, ["loss"], units="nats").axes
    ax.figure.canvas.draw()
    assert ax.get_title() == "training loss" and ax.get_xlabel() == "epoch" and ax.get_ylabel() == "nats"
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
    assert ticks == [1, 2], ticks          # whole epochs only, no 1.5
    assert len(plots.curves(h, ["loss"], per="step", smooth=2).axes) == 1
    h.epochs[0]["test_loss"], h.epochs[1]["test_loss"] = 3.5, 2.5
    (shared,) = plots.curves({"run": h}, [("loss", "test_loss")]).axes   # one panel, one y axis, two lines
    assert [line.get_ydata().tolist() for line in shared.get_lines()] == [[3.0, 2.0], [3.5, 2.5]]
    assert [t.get_text() for t in shared.get_legend().get_texts()] == ["run · training loss", "run · test loss"]
    assert shared.get_title() == "training loss and test loss"
    two = plots.curves({"a": h, "b": h}, [("loss", "test_loss")]).axes[0].get_lines()
    assert [(l.get_color(), l.get_linestyle()) for l in two] == [("C0", "-"), ("C0", "--"), ("C1", "-"), ("C1", "--")]
    assert len(plots.snapshot_rows(h).axes) == 2
    with pytest.raises(ValueError, match="snapshots is empty"):
        plots.snapshot_rows(training.History())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        plots.image_grid(torch.rand(28, 28))


def test_class_picker_redraws_on_class_and_seed():
    calls = []

    def sample(label, seed):
        calls.append((label, seed))
        return torch.full((4, 1, 8, 8), (label + 1) / 10)

    widget = widgets.class_picker(sample, ["a", "b", "c"], n_seeds=5)
    (dropdown, seed), view = widget.children[0].children, widget.children[1]
    first = view.value
    dropdown.value = 2
    seed.value = 3
    assert calls == [(0, 0), (2, 0), (2, 3)] and view.value != first
    assert [o[0] for o in dropdown.options] == ["a", "b", "c"] and seed.max == 4
    assert "live in Jupyter" in widget._repr_mimebundle_()["text/plain"]


def drawn_scale(fig) -> float:
    """The smallest number of screen pixels per image pixel over every image in a figure."""
    return min(scale for _, _, scale in plots.image_scales(fig))


@pytest.mark.parametrize("size, channels", [(28, 1), (64, 1), (64, 3)])
def test_every_image_is_drawn_at_least_at_its_native_size(size, channels):
    """Rule 9 of the course: a figure too small to check (tiles shrunk below their pixel size by
    titles, labels and spacing) is a defect."""
    plots.use_course_style()
    imgs = torch.rand(20, channels, size, size)
    assert drawn_scale(plots.image_grid(imgs, nrow=10)) >= 1
    assert drawn_scale(plots.image_rows({f"row {i}": imgs[:9] for i in range(10)}, title="t")) >= 1
    decode = lambda z: torch.rand(len(z), channels, size, size)  # noqa: E731
    _, fig, _ = widgets.interpolation(decode, torch.zeros(2), torch.ones(2), steps=11, labels=lambda x: ["a"] * len(x))
    assert drawn_scale(fig) >= 1
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize("with_names", [False, True])
def test_the_strips_title_does_not_overlap_the_frame_titles(with_names):
    decode = lambda z: torch.rand(len(z), 1, 28, 28)  # noqa: E731
    labels = (lambda x: ["Ankle boot"] * len(x)) if with_names else None
    _, fig, _ = widgets.interpolation(decode, torch.zeros(2), torch.ones(2), steps=11, labels=labels,
                                      title="DCGAN: z0 -> z1")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not title.overlaps(ax.title.get_window_extent(renderer)), ax.title.get_text()
        assert not title.overlaps(ax.get_window_extent(renderer))
    matplotlib.pyplot.close("all")


def test_undersized_images_names_a_squeezed_picture_and_not_a_heat_map():
    plots.use_course_style()
    imgs = torch.rand(16, 1, 28, 28)
    assert plots.undersized_images(plots.image_grid(imgs, nrow=8)) == []
    fig, (ax1, ax2) = matplotlib.pyplot.subplots(1, 2, figsize=(0.6, 0.4))
    ax1.imshow(imgs[0, 0].numpy(), interpolation="nearest")
    ax1.set_title("sample")
    ax2.imshow(np.random.rand(200, 200))          # a smooth heat map: not a picture, not checked
    (problem,) = plots.undersized_images(fig)
    assert "28x28-pixel image in panel 'sample'" in problem and plots.UNDERSIZED in problem
    matplotlib.pyplot.close("all")


def test_a_displayed_figure_warns_under_itself_when_an_image_is_too_small(capsys):
    """In a kernel, use_course_style makes every displayed figure check itself: the warning lands in
    the cell's output, where tools.check_notebooks finds it in a committed notebook."""
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    try:
        plots.use_course_style()
        plots.use_course_style()                 # twice: still one check, one warning
        fig, ax = matplotlib.pyplot.subplots(figsize=(0.3, 0.3))
        ax.imshow(np.random.rand(28, 28), interpolation="nearest")
        data, _ = shell.display_formatter.format(fig)
        assert data["image/png"]                  # the figure is still drawn
        err = capsys.readouterr().err
        assert err.count(plots.UNDERSIZED) == 1
        fig2, ax2 = matplotlib.pyplot.subplots(figsize=(2, 2))
        ax2.imshow(np.random.rand(28, 28), interpolation="nearest")
        shell.display_formatter.format(fig2)
        assert plots.UNDERSIZED not in capsys.readouterr().err
    finally:
        matplotlib.pyplot.close("all")
        InteractiveShell.clear_instance()
