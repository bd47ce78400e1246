import math

import numpy as np
import pytest
import torch

from common import priors, vae, vqvae
from common.machinery import checkpoints


@pytest.fixture
def quantizer():
    torch.manual_seed(0)
    q = vqvae.VectorQuantizer(num_codes=10, code_dim=4)
    q.codebook.weight.data.normal_()
    return q


def test_output_is_exactly_a_codebook_row_and_the_nearest_one(quantizer):
    z_e = torch.randn(3, 4, 5, 5)
    z_q, idx, _ = quantizer(z_e)
    assert idx.shape == (3, 5, 5) and z_q.shape == z_e.shape
    flat_q = z_q.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(flat_q, quantizer.codebook.weight[idx.flatten()])  # exactly, not just close
    brute = torch.cdist(z_e.permute(0, 2, 3, 1).reshape(-1, 4), quantizer.codebook.weight).argmin(1)
    assert torch.equal(idx.flatten(), brute)
    assert torch.equal(quantizer.lookup(idx), z_q)


def test_nearest_code_matches_brute_force_distances():
    torch.manual_seed(7)
    flat, codebook = torch.randn(500, 6), torch.randn(33, 6)
    brute = ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1).argmin(1)  # the N x K x D way
    assert torch.equal(vqvae.nearest_code(flat, codebook), brute)
    assert torch.equal(vqvae.nearest_code(codebook[[4, 0, 32]], codebook), torch.tensor([4, 0, 32]))


def test_straight_through_has_the_value_of_zq_and_the_gradient_of_ze():
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vqvae.straight_through(z_e, z_q)
    assert torch.equal(out, z_q)                        # exactly the quantized value
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    assert torch.equal(z_e.grad, upstream) and z_q.grad is None


def test_straight_through_gradient_passes_dL_dzq_to_ze(quantizer):
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, _, _ = quantizer(z_e)
    upstream = torch.randn_like(z_q)
    (z_q * upstream).sum().backward()
    assert torch.allclose(z_e.grad, upstream)
    assert quantizer.codebook.weight.grad is None  # reconstruction does not move the codebook


def test_codebook_and_commitment_losses_match_formulas_and_route_gradients(quantizer):
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    _, idx, losses = quantizer(z_e)
    e = quantizer.codebook.weight[idx.flatten()].detach()
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    expected = ((flat - e) ** 2).mean()
    assert losses["codebook"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["commitment"].item() == pytest.approx(expected.item(), rel=1e-5)
    losses["codebook"].backward(retain_graph=True)
    assert z_e.grad is None and quantizer.codebook.weight.grad.abs().sum() > 0  # sg[z_e]
    quantizer.codebook.weight.grad = None
    losses["commitment"].backward()
    assert z_e.grad.abs().sum() > 0 and quantizer.codebook.weight.grad is None  # sg[e]


def test_perplexity_uniform_is_K_and_single_code_is_1():
    assert vqvae.perplexity(torch.arange(64).repeat(5), 64).item() == pytest.approx(64, rel=1e-5)
    assert vqvae.perplexity(torch.full((100,), 7), 64).item() == pytest.approx(1.0)
    half = torch.cat([torch.zeros(50), torch.ones(50)]).long()
    assert vqvae.perplexity(half, 64).item() == pytest.approx(2.0, rel=1e-5)


def test_dead_codes_are_detected_and_reinitialised_from_encoder_outputs():
    torch.manual_seed(1)
    model = vqvae.VQVAE((1, 28, 28), num_codes=32, code_dim=4, channels=4)
    x = torch.rand(20, 1, 28, 28)
    usage = vqvae.code_usage(model, x)
    assert usage.sum() == 20 * 49
    dead = usage == 0
    assert dead.any()  # tiny uniform init far from encoder outputs: most codes unused
    before = model.quantizer.codebook.weight.detach().clone()
    model.eval()  # code_usage measures in eval mode, so take the encoder outputs the same way
    z_e = model.encode(x).detach()
    assert vqvae.reinit_dead_codes(model.quantizer, usage, z_e) == int(dead.sum())
    after = model.quantizer.codebook.weight.detach()
    assert torch.equal(after[~dead], before[~dead])
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    nearest = torch.cdist(after[dead], flat).min(1).values
    assert (nearest < 0.05 * flat.std() * 4).all()  # each reset code sits on an encoder output
    assert int((vqvae.code_usage(model, x) == 0).sum()) < int(dead.sum())


def test_vqvae_loss_and_step():
    torch.manual_seed(2)
    model = vqvae.VQVAE((1, 28, 28), num_codes=16, code_dim=4, channels=8)
    x = torch.rand(16, 1, 28, 28)
    losses = model.loss(x)
    assert torch.allclose(losses["loss"], losses["recon"] + losses["codebook"] + 0.25 * losses["commitment"])
    assert 1 <= losses["perplexity"] <= 16
    x_hat, idx, _ = model(x)
    assert x_hat.shape == x.shape and idx.shape == (16, 7, 7) and 0 <= x_hat.min() and x_hat.max() <= 1
    s = vqvae.vqvae_step(model, torch.optim.Adam(model.parameters(), 1e-3))
    first = s(x, None)["loss"].item()
    for _ in range(20):
        last = s(x, None)["loss"].item()
    assert last < first


def latents(n, seed=0):
    """Clustered fake encoder outputs (n, 16*7*7): 3 well separated blobs."""
    centres = 3 * torch.randn(3, 16 * 49, generator=torch.Generator().manual_seed(0))
    noise = 0.3 * torch.randn(n, 16 * 49, generator=torch.Generator().manual_seed(seed + 1))
    return centres[torch.arange(n) % 3] + noise


def test_gmm_prior_matches_sklearn_and_beats_a_single_gaussian_on_held_out_latents():
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    torch.manual_seed(3)
    model = vqvae.VQVAE((1, 28, 28), num_codes=16, code_dim=16, channels=4)
    train, held_out = latents(600), latents(300, seed=1)
    gmm3 = priors.GMMPriorSampler.fit(model, train, n_pca=5, n_components=3)
    gmm1 = priors.GMMPriorSampler.fit(model, train, n_pca=5, n_components=1)
    assert gmm3.log_prob(held_out).mean() > gmm1.log_prob(held_out).mean() + 1.0
    x = train.double().numpy()
    pca = PCA(5, random_state=0).fit(x)
    ref = GaussianMixture(3, covariance_type="full", reg_covar=1e-4, random_state=0).fit(pca.transform(x))
    ours = gmm3.log_prob(held_out[:50]).double().numpy()
    expected = ref.score_samples(pca.transform(held_out[:50].double().numpy()))
    np.testing.assert_allclose(ours, expected, rtol=1e-3)


def test_samplers_shapes_ranges_and_checkpoint_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    torch.manual_seed(4)
    model = vqvae.VQVAE((1, 28, 28), num_codes=16, code_dim=16, channels=4)
    gmm = priors.GMMPriorSampler.fit(model, latents(200), n_pca=4, n_components=2)
    latent_vae = vae.MLPVAE((16 * 49,), latent_dim=3, hidden=8, likelihood="gaussian", sigma2=0.1,
                            bounded=False)
    vaep = priors.VAEPriorSampler.from_parts(model, latent_vae, torch.zeros(16 * 49), torch.ones(16 * 49))
    for sampler, name in [(gmm, "gmm"), (vaep, "vaep")]:
        torch.manual_seed(5)
        s = sampler.sample(6)
        assert s.shape == (6, 1, 28, 28) and 0 <= s.min() and s.max() <= 1
        assert sampler.sample_latent(2).shape == (2, 16, 7, 7)
        checkpoints.save_checkpoint(sampler, name)
        loaded, _ = checkpoints.load_checkpoint(name)
        torch.manual_seed(5)
        assert torch.allclose(loaded.sample(6), s, atol=1e-6)
        with pytest.raises(ValueError, match="unconditional"):
            loaded.sample(2, labels=[0, 1])


def test_unbounded_vae_needs_gaussian_likelihood():
    with pytest.raises(ValueError, match="bounded=False"):
        vae.MLPVAE((1, 28, 28), bounded=False)
    m = vae.MLPVAE((5,), latent_dim=2, hidden=4, likelihood="gaussian", sigma2=1.0, bounded=False)
    assert m.decode(torch.randn(3, 2)).shape == (3, 5)
    assert math.isfinite(m.loss(torch.randn(4, 5) * 10)["loss"].item())


def test_dead_code_callback_counts_and_resets_only_before_the_last_epoch():
    torch.manual_seed(6)
    model = vqvae.VQVAE((1, 28, 28), num_codes=32, code_dim=4, channels=4)
    x = torch.rand(10, 1, 28, 28)
    cb = vqvae.dead_code_callback(model, x, reinit=True, last_epoch=2)
    before = model.quantizer.codebook.weight.detach().clone()
    first = cb(1, None)
    assert first["dead_codes"] > 0 and first["reset"] == first["dead_codes"]
    assert first["codes_used"] + first["dead_codes"] == 32 and model.training
    after_first = model.quantizer.codebook.weight.detach().clone()
    assert not torch.equal(before, after_first)
    last = cb(2, None)
    assert last["reset"] == 0 and torch.equal(model.quantizer.codebook.weight, after_first)
    assert vqvae.dead_code_callback(model, x, reinit=False, last_epoch=5)(1, None)["reset"] == 0
