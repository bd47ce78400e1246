import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from common import vae
from common.classifiers import MLPClassifier


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(6, 5), torch.randn(6, 5)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros(5), torch.ones(5)), 1)
    assert torch.allclose(vae.gaussian_kl(mu, logvar), kl_divergence(q, p), atol=1e-5)
    assert torch.allclose(vae.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_kl_closed_form_agrees_with_monte_carlo():
    torch.manual_seed(1)
    mu, logvar = torch.tensor([[0.7, -1.2]]), torch.tensor([[-0.5, 0.3]])
    z = vae.reparameterize(mu.expand(200_000, 2), logvar.expand(200_000, 2))
    q = Normal(mu, (0.5 * logvar).exp())
    mc = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(1).mean()
    assert mc.item() == pytest.approx(vae.gaussian_kl(mu, logvar).item(), abs=0.01)


def test_reparameterization_gradients():
    torch.manual_seed(2)
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    torch.manual_seed(7)
    z = vae.reparameterize(mu, logvar)
    torch.manual_seed(7)
    eps = torch.randn(4, 3)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(4, 3))  # dz/dmu = 1
    assert torch.allclose(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)  # dz/dlogvar
    samples = vae.reparameterize(torch.full((100_000, 1), 2.0), torch.full((100_000, 1), math.log(9.0)))
    assert samples.mean().item() == pytest.approx(2.0, abs=0.05)
    assert samples.std().item() == pytest.approx(3.0, abs=0.05)


def test_likelihoods_match_torch_distributions():
    torch.manual_seed(3)
    logits, x = torch.randn(5, 1, 4, 4), torch.rand(5, 1, 4, 4).round()
    ref = -Independent(Bernoulli(logits=logits.flatten(1)), 1).log_prob(x.flatten(1))
    assert torch.allclose(vae.bernoulli_nll(logits, x), ref, atol=1e-5)
    mean, xg, s2 = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4), 0.02
    ref = -Independent(Normal(mean.flatten(1), math.sqrt(s2)), 1).log_prob(xg.flatten(1))
    assert torch.allclose(vae.gaussian_nll(mean, xg, s2), ref, atol=1e-3)


@pytest.mark.parametrize("model", [vae.MLPVAE((1, 28, 28), latent_dim=3, hidden=32), vae.ConvVAE((1, 28, 28), latent_dim=3, channels=4, hidden=16),
                                   vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=16, likelihood="gaussian", sigma2=0.05)])
def test_vae_shapes_loss_and_samples(model):
    x = torch.rand(7, 1, 28, 28)
    out, mu, logvar = model(x)
    assert out.shape == x.shape and mu.shape == logvar.shape == (7, model.latent_dim)
    losses = model.loss(x, beta=0.5)
    assert torch.allclose(losses["loss"], losses["recon"] + 0.5 * losses["kl"])
    assert losses["kl"] >= 0
    s = model.sample(5)
    assert s.shape == (5, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    assert model.reconstruct(x).shape == x.shape
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)


def test_loss_is_minus_elbo_in_nats():
    torch.manual_seed(4)
    model = vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=8)
    x = torch.rand(3, 1, 28, 28).round()  # binary, so the Bernoulli reference accepts it
    torch.manual_seed(9)
    got = model.loss(x)
    torch.manual_seed(9)
    mu, logvar = model.encode(x)
    z = vae.reparameterize(mu, logvar)
    p_x = Independent(Bernoulli(logits=model.decoder(z).flatten(1)), 1)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    minus_elbo = -(p_x.log_prob(x.flatten(1)) - kl_divergence(q, prior)).mean()
    assert got["loss"].item() == pytest.approx(minus_elbo.item(), rel=1e-5)


def test_bad_likelihood_arguments():
    with pytest.raises(ValueError, match="likelihood must be"):
        vae.MLPVAE((1, 28, 28), likelihood="poisson")
    with pytest.raises(ValueError, match="sigma2"):
        vae.MLPVAE((1, 28, 28), likelihood="gaussian")
    with pytest.raises(ValueError, match="bounded=False"):
        vae.MLPVAE((1, 28, 28), likelihood="bernoulli", bounded=False)


def test_gaussian_likelihood_decodes_the_mean_it_scores():
    torch.manual_seed(6)
    model = vae.MLPVAE((1, 4, 4), latent_dim=2, hidden=8, likelihood="gaussian", sigma2=0.1)
    x = torch.rand(5, 1, 4, 4)
    torch.manual_seed(9)
    got = model.loss(x)
    torch.manual_seed(9)
    mu, logvar = model.encode(x)
    x_mean = torch.sigmoid(model.decoder(vae.reparameterize(mu, logvar)))  # the decoder's mean, in [0, 1]
    ref = -Independent(Normal(x_mean.flatten(1), math.sqrt(0.1)), 1).log_prob(x.flatten(1))
    assert got["recon"].item() == pytest.approx(ref.mean().item(), rel=1e-5)
    assert torch.equal(model.decode(mu), torch.sigmoid(model.decoder(mu)))
    unbounded = vae.MLPVAE((6,), latent_dim=2, hidden=8, likelihood="gaussian", sigma2=1.0, bounded=False)
    z = torch.randn(3, 2)
    assert torch.equal(unbounded.decode(z), unbounded.decoder(z)) and unbounded.input_range == (None, None)
    assert model.input_range == (0.0, 1.0)


def test_vae_step_reduces_loss_on_a_fixed_batch():
    torch.manual_seed(5)
    model = vae.MLPVAE((1, 28, 28), latent_dim=4, hidden=64)
    x = torch.rand(32, 1, 28, 28).round()
    step = vae.vae_step(model, torch.optim.Adam(model.parameters(), 3e-3))
    first = step(x, None)["loss"].item()
    for _ in range(50):
        last = step(x, None)["loss"].item()
    assert last < 0.9 * first


def test_vae_step_is_one_adam_update_on_recon_plus_beta_kl():
    torch.manual_seed(7)
    model, twin = vae.MLPVAE((1, 4, 4), latent_dim=2, hidden=8), vae.MLPVAE((1, 4, 4), latent_dim=2, hidden=8)
    twin.load_state_dict(model.state_dict())
    x = torch.rand(6, 1, 4, 4)
    torch.manual_seed(3)
    losses = vae.vae_step(model, torch.optim.Adam(model.parameters(), 1e-2), beta=0.5)(x, None)
    torch.manual_seed(3)
    opt = torch.optim.Adam(twin.parameters(), 1e-2)  # the same update, written out by hand
    ref = twin.loss(x, beta=0.5)
    ref["loss"].backward()
    opt.step()
    assert torch.allclose(losses["loss"], ref["recon"] + 0.5 * ref["kl"])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_vae_step_never_updates_with_a_non_finite_loss():
    from common.training import NonFiniteLossError

    model = vae.MLPVAE((1, 4, 4), latent_dim=2, hidden=8)
    before = [p.detach().clone() for p in model.parameters()]
    step = vae.vae_step(model, torch.optim.SGD(model.parameters(), 0.1))
    with pytest.raises(NonFiniteLossError) as err:
        step(torch.full((2, 1, 4, 4), float("nan")), None)
    assert err.value.update_skipped  # require_finite stopped it between backward() and the update
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_classifier_trunk_fits_vae_trunk():
    clf, model = MLPClassifier((1, 28, 28), 10, hidden=50), vae.MLPVAE((1, 28, 28), hidden=50)
    model.trunk.load_state_dict(clf.trunk.state_dict())
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model.trunk(x), clf.trunk(x))
    assert clf(x).shape == (4, 10) and clf.predict(x).shape == (4,)


def test_load_or_train_mlp_loads_notebook_01s_classifier_or_trains_one(tmp_path, monkeypatch, capsys):
    from common.machinery import checkpoints
    from common.classifiers import load_or_train_mlp
    from common.machinery.data import ImageData

    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    images = (torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).byte()
    train = ImageData(images, torch.arange(64) % 10, "toy", "train", tuple("0123456789"))
    trained = load_or_train_mlp(train, epochs=1)
    assert "missing, training" in capsys.readouterr().out and not trained.training
    checkpoints.save_checkpoint(trained, "classifier_mlp-toy-1x28x28")  # the name notebook 01 gives it
    loaded = load_or_train_mlp(train, epochs=1)
    assert "loaded classifier_mlp-toy-1x28x28" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
