"""Every model of the course at every image geometry the course uses: forward, backward, sample()."""
import io
import tokenize

import pytest
import torch

from common import cgan, classifiers, dcgan, layers, priors, vae, vqvae
from common.machinery import checkpoints, runtime

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 64, 64)]
N_CLASSES = 3


def small(name, shape):
    """Each model at a small width, built for ``shape``."""
    return {
        "MLPVAE": lambda: vae.MLPVAE(shape, latent_dim=4, hidden=16),
        "ConvVAE": lambda: vae.ConvVAE(shape, latent_dim=4, channels=4, hidden=16),
        "VQVAE": lambda: vqvae.VQVAE(shape, num_codes=8, code_dim=4, channels=4),
        "DCGANGenerator": lambda: dcgan.DCGANGenerator(shape, z_dim=8, channels=4),
        "DCGANDiscriminator": lambda: dcgan.DCGANDiscriminator(shape, channels=4),
        "ConditionalGenerator": lambda: cgan.ConditionalGenerator(shape, N_CLASSES, z_dim=8, channels=4),
        "ConditionalDiscriminator": lambda: cgan.ConditionalDiscriminator(shape, N_CLASSES, channels=4, batch_norm=False),
        "MLPClassifier": lambda: classifiers.MLPClassifier(shape, N_CLASSES, hidden=16),
        "ConvClassifier": lambda: classifiers.ConvClassifier(shape, N_CLASSES, width=4),
    }[name]()


MODELS = ["MLPVAE", "ConvVAE", "VQVAE", "DCGANGenerator", "DCGANDiscriminator", "ConditionalGenerator",
          "ConditionalDiscriminator", "MLPClassifier", "ConvClassifier"]


def loss_of(model, x, y):
    """A scalar through the model's forward pass, and the images it returns (if any)."""
    if isinstance(model, (vae.VAE, vqvae.VQVAE)):
        return model.loss(x)["loss"], model(x)[0]
    if isinstance(model, cgan.ConditionalGenerator):
        out = model(torch.randn(len(y), model.z_dim), y)
        return out.square().mean(), out
    if isinstance(model, dcgan.DCGANGenerator):
        out = model(torch.randn(len(y), model.z_dim))
        return out.square().mean(), out
    if isinstance(model, cgan.ConditionalDiscriminator):
        return model(x, y).mean(), None
    if isinstance(model, dcgan.DCGANDiscriminator):
        return model(x).mean(), None
    return model.loss(x, y)["loss"], None


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_sample(name, shape):
    torch.manual_seed(0)
    model = small(name, shape)
    x, y = torch.rand(4, *shape), torch.arange(4) % N_CLASSES
    loss, images = loss_of(model, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    if images is not None:
        assert images.shape[1:] == shape
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "every parameter gets a gradient"
    if isinstance(model, layers.GenerativeModel):
        s = model.sample(3, torch.arange(3) % N_CLASSES if model.conditional else None)
        assert s.shape == (3, *shape) and 0 <= s.min() and s.max() <= 1
        assert model.image_shape == shape
    if isinstance(model, vqvae.VQVAE):
        assert model.latent_shape == (4, shape[1] // 4, shape[2] // 4)
        assert model.encode(x).shape == (4, *model.latent_shape)
    if hasattr(model, "hparams"):
        assert model.hparams["image_shape"] == shape


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_vqvae_priors_sample_at_every_shape(shape, tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    torch.manual_seed(1)
    model = vqvae.VQVAE(shape, num_codes=8, code_dim=2, channels=4)
    z = model.encode(torch.rand(40, *shape)).flatten(1).detach()
    gmm = priors.GMMPriorSampler.fit(model, z, n_pca=3, n_components=2)
    latent_vae = vae.MLPVAE((z.shape[1],), latent_dim=2, hidden=8, likelihood="gaussian", sigma2=1.0, bounded=False)
    vae_prior = priors.VAEPriorSampler.from_parts(model, latent_vae, z.mean(0), z.std(0))
    for sampler in (gmm, vae_prior):
        assert sampler.sample(2).shape == (2, *shape) and sampler.image_shape == shape
        checkpoints.save_checkpoint(sampler, "s")
        assert checkpoints.load_checkpoint("s")[0].sample(2).shape == (2, *shape)


def test_stages_are_derived_from_the_image_size():
    assert layers.resolution_stages((1, 28, 28)) == [7, 14, 28]
    assert layers.resolution_stages((3, 32, 32)) == [4, 8, 16, 32]
    assert layers.resolution_stages((3, 64, 64)) == [4, 8, 16, 32, 64]
    with pytest.raises(ValueError, match="square"):
        layers.resolution_stages((3, 64, 48))
    with pytest.raises(ValueError, match="cannot be halved.*image_size"):
        layers.resolution_stages((1, 27, 27))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        layers.check_image_shape((28, 28))
    with pytest.raises(ValueError, match="divisible by 4"):
        vqvae.VQVAE((1, 30, 30))


def test_registration_records_the_constructor_arguments():
    model = cgan.ConditionalGenerator((3, 32, 32), 5, channels=8)
    assert model.hparams == {"image_shape": (3, 32, 32), "n_classes": 5, "z_dim": 100, "channels": 8}
    sampler = priors.GMMPriorSampler(vqvae.VQVAE((1, 28, 28), 8).hparams, n_pca=2, n_components=2)
    assert sampler.hparams["vqvae"]["num_codes"] == 8 and sampler.hparams["n_pca"] == 2
    assert type(sampler)(**sampler.hparams).hparams == sampler.hparams  # rebuilds from its record


MODEL_FILES = ["layers.py", "vae.py", "vqvae.py", "priors.py", "dcgan.py", "cgan.py", "classifiers.py", "plots.py", "widgets.py"]


@pytest.mark.parametrize("filename", MODEL_FILES)
def test_no_fashion_mnist_geometry_is_hard_wired(filename):
    """The literal sizes of 28x28 images (28, 14, 7, 49, 784) appear in no code of the models and
    figure helpers, only in comments and docstrings."""
    source = (runtime.REPO_ROOT / "common" / filename).read_text()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    numbers = [(tok.start[0], tok.string) for i, tok in enumerate(tokens)
               if tok.type == tokenize.NUMBER and tok.string in {"28", "14", "7", "49", "784"}
               and tokens[i - 2].string != "fontsize"]  # font sizes are not geometry
    assert not numbers, f"{filename}: literal image sizes at lines {numbers}"


def test_class_accuracy_counts_the_requested_class_per_class_and_keeps_the_global_rng():
    from common import cgan, classifiers, dcgan

    class Oracle(torch.nn.Module):           # "classifies" by mean brightness bucket
        def predict(self, x):
            return (x.mean((1, 2, 3)) * 10).long().clamp(0, 9)

    class Painter(cgan.ConditionalGenerator):  # paints class c as brightness (c + 0.5) / 10, class 3 wrong
        def _sample(self, n, labels):
            value = (labels.float() + 0.5) / 10
            value = torch.where(labels == 3, torch.full_like(value, 0.05), value)
            return value[:, None, None, None].expand(n, *self.image_shape).clone()

    G = Painter((1, 28, 28), 10, 8, 8)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    acc = classifiers.class_accuracy(G, Oracle(), per_class=7)
    assert acc == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert torch.equal(torch.rand(1), before)            # global random state untouched
    with pytest.raises(ValueError, match="not conditional"):
        classifiers.class_accuracy(dcgan.DCGANGenerator((1, 28, 28), 8, 8), Oracle(), 2)


def test_plain_log_ticks_label_a_log_axis_with_plain_numbers():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from common import plots
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [2.5, 7, 30])
    ax.set_yscale("log")
    plots.plain_log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert {"5", "10", "20"} <= set(labels) and not any("times" in s or "^" in s for s in labels), labels
    ax.set_ylim(6, 9)                     # inside one decade matplotlib writes "6x10^0" by default
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and 6 <= t.get_position()[1] <= 9]
    assert {"6", "7", "8", "9"} <= set(labels) and not any("times" in s or "^" in s for s in labels), labels
    ax.set_ylim(2.6, 13.2)                # 1, 2, 5 would label only 5 and 10 (notebook 03's FID curve)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and 2.6 <= t.get_position()[1] <= 13.2]
    assert labels == ["3", "5", "7", "10"], labels
    ax.set_ylim(48, 175)                  # notebook 05's Inception axis: 50 and 100 only, points up to 164
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and 48 <= t.get_position()[1] <= 175]
    assert labels == ["50", "70", "100", "150"], labels
    ax.set_ylim(1e-4, 1e3)                # seven decades: powers of ten only, not 21 crowded labels
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and 1e-4 <= t.get_position()[1] <= 1e3]
    assert labels == ["0.0001", "0.001", "0.01", "0.1", "1", "10", "100", "1000"], labels
    plt.close(fig)


def test_channels_last_on_cpu_changes_the_layout_not_the_results(tmp_path, monkeypatch):
    from common import cgan
    torch.manual_seed(0)
    G = cgan.ConditionalGenerator((1, 28, 28), 10, 8, 8).eval()
    z, y = torch.randn(5, 8), torch.arange(5)
    before = G(z, y)
    layers.channels_last_on_cpu(G)
    conv = G.ups[0][1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert torch.allclose(G(z, y), before, atol=1e-5)
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    checkpoints.save_checkpoint(G, "g")                  # saves and loads like any model
    loaded, _ = checkpoints.load_checkpoint("g")
    assert torch.allclose(loaded(z, y), before, atol=1e-5)
