import matplotlib

matplotlib.use("Agg")

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


def test_interpolation_widget_and_static_strip():
    decode = lambda z: torch.sigmoid(z[:, :1, None, None].expand(-1, 1, 28, 28))  # noqa: E731
    labels = lambda imgs: ["dark" if v < 0.5 else "light" for v in imgs.mean((1, 2, 3))]  # noqa: E731
    widget, fig, images = widgets.interpolation(decode, torch.full((2,), -3.0), torch.full((2,), 3.0),
                                                steps=7, labels=labels)
    assert images.shape == (7, 1, 28, 28)
    assert images[0].mean() < 0.1 and images[-1].mean() > 0.9
    slider, view, caption = widget.children
    assert slider.max == 6 and "dark" in caption.value
    first = view.value
    slider.value = 6
    assert view.value != first and "light" in caption.value and "t = 1.00" in caption.value
    assert len(fig.axes) == 7 and "light" in fig.axes[-1].get_title()


def test_plot_helpers_return_figures():
    imgs = torch.rand(10, 1, 28, 28)
    assert plots.image_grid(imgs, nrow=5).axes
    assert plots.image_grid(torch.rand(4, 3, 64, 64), nrow=2).axes  # colour
    assert len(plots.image_rows({"a": imgs[:4], "b": imgs[4:8]}).axes) == 2
    h = training.History(epochs=[{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0}], steps={"loss": [4, 3, 2, 1]},
                         snapshots={1: (imgs[:3] * 255).byte(), 2: (imgs[3:6] * 255).byte()})
    assert len(plots.curves({"run": h}, ["loss"]).axes) == 1
    assert len(plots.curves(h, ["loss"], per="step", smooth=2).axes) == 1
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


def drawn_scale(fig) -> float:
    """The smallest number of screen pixels per image pixel over every image in a figure."""
    fig.canvas.draw()
    scales = []
    for ax in fig.axes:
        for im in ax.get_images():
            h, w = im.get_array().shape[:2]
            box = ax.get_window_extent()
            scales.append(min(box.width / w, box.height / h))
    return min(scales)


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
