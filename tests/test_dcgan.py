"""The DCGAN of notebook 03 (common/dcgan.py): the step against a hand-written update, the losses
against their closed forms, the paper's initialisation and the models' shapes."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common import dcgan


def tiny_pair(shape=(1, 28, 28), z_dim=8, channels=4, seed=0):
    torch.manual_seed(seed)
    return dcgan.DCGANGenerator(shape, z_dim, channels), dcgan.DCGANDiscriminator(shape, channels)


def test_step_equals_a_hand_written_bce_update():
    """Same seed, same weights: the step's losses, D's gradients and the updated weights (and batch-norm
    statistics) equal two plain SGD updates written from the BCE definition, and the step leaves the
    random stream where one noise draw per batch leaves it (the order notebook 04's cdcgan_step has)."""
    G, D = tiny_pair()
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    lr = 0.1
    x = torch.rand(6, 1, 28, 28)

    torch.manual_seed(5)
    out = dcgan.dcgan_step(G, D, torch.optim.SGD(G.parameters(), lr), torch.optim.SGD(D.parameters(), lr))(x, None)
    next_draw = torch.rand(1)

    torch.manual_seed(5)
    fake = G_ref(torch.randn(6, 8))                       # one noise draw per batch
    ones, zeros = torch.ones(6), torch.zeros(6)
    d_real, d_fake = D_ref(x * 2 - 1), D_ref(fake.detach())
    loss_D = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
    grads_D = torch.autograd.grad(loss_D, list(D_ref.parameters()))
    with torch.no_grad():
        for p, g in zip(D_ref.parameters(), grads_D):
            p -= lr * g
    loss_G = F.binary_cross_entropy_with_logits(D_ref(fake), ones)   # the same fake, through the updated D
    grads_G = torch.autograd.grad(loss_G, list(G_ref.parameters()))
    with torch.no_grad():
        for p, g in zip(G_ref.parameters(), grads_G):
            p -= lr * g
    assert torch.equal(torch.rand(1), next_draw)

    assert out["loss_D"].item() == pytest.approx(loss_D.item(), rel=1e-5)
    assert out["loss_G"].item() == pytest.approx(loss_G.item(), rel=1e-5)
    assert out["D(x)"].item() == pytest.approx(torch.sigmoid(d_real).mean().item(), rel=1e-5)
    assert out["D(G(z))"].item() == pytest.approx(torch.sigmoid(d_fake).mean().item(), rel=1e-5)
    for mine, ref in [(G, G_ref), (D, D_ref)]:
        for (name, a), b in zip(mine.state_dict().items(), ref.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6), name
    # D is frozen during G's update: its gradients are those of loss_D alone
    for p, g in zip(D.parameters(), grads_D):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-7)
    assert all(p.requires_grad for p in D.parameters())   # and unfrozen afterwards


def test_losses_against_closed_forms():
    d_real, d_fake = torch.tensor([0.6, 0.8, 0.99]), torch.tensor([0.05, 0.3, 0.7])
    logit = lambda p: torch.log(p / (1 - p))
    l_real, l_fake = logit(d_real), logit(d_fake)
    expected_D = -torch.log(d_real).mean() - torch.log(1 - d_fake).mean()
    assert dcgan.d_loss_bce(l_real, l_fake).item() == pytest.approx(expected_D.item(), rel=1e-5)
    assert dcgan.g_loss_minimax(l_fake).item() == pytest.approx(torch.log(1 - d_fake).mean().item(), rel=1e-5)
    assert dcgan.g_loss_nonsaturating(l_fake).item() == pytest.approx(-torch.log(d_fake).mean().item(), rel=1e-5)
    # at logits where sigmoid rounds to 0 or 1 the losses stay finite (log(sigmoid) would be -inf)
    extreme = torch.tensor([-200.0, 200.0])
    for loss in (dcgan.g_loss_minimax, dcgan.g_loss_nonsaturating):
        assert torch.isfinite(loss(extreme))
    assert torch.isfinite(dcgan.d_loss_bce(extreme, extreme))


def test_saturating_and_non_saturating_gradients():
    """d/dl of log(1 - sigmoid(l)) is -D, of -log sigmoid(l) is -(1 - D): where D rejects the fakes
    (D -> 0) the minimax loss sends G almost nothing and the non-saturating loss almost 1."""
    l = torch.linspace(-10, 10, 41, requires_grad=True)
    D = torch.sigmoid(l.detach())
    n = len(l)
    (g_mm,) = torch.autograd.grad(dcgan.g_loss_minimax(l), l)
    (g_ns,) = torch.autograd.grad(dcgan.g_loss_nonsaturating(l), l)
    assert torch.allclose(g_mm * n, -D, atol=1e-6)
    assert torch.allclose(g_ns * n, -(1 - D), atol=1e-6)
    assert abs(g_mm[0].item() * n) < 1e-4 and abs(g_ns[0].item() * n) > 0.9999   # l = -10: D ~ 4.5e-5


def test_tanh_range_round_trip():
    x = torch.rand(3, 1, 4, 4)
    assert dcgan.to_tanh_range(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]
    assert torch.allclose(dcgan.from_tanh_range(dcgan.to_tanh_range(x)), x)


def test_init_follows_the_paper():
    torch.manual_seed(3)
    G = dcgan.DCGANGenerator((1, 28, 28), z_dim=100, channels=32)
    convs = [m for m in G.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.mean().abs() < 2e-3 and weights.std().item() == pytest.approx(0.02, rel=0.05)
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in norms])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.01) and scales.std().item() == pytest.approx(0.02, rel=0.3)
    assert all((m.bias == 0).all() for m in convs + norms if m.bias is not None)


@pytest.mark.parametrize("shape, stages", [((1, 28, 28), [7, 14, 28]), ((3, 32, 32), [4, 8, 16, 32]),
                                           ((3, 64, 64), [4, 8, 16, 32, 64])])
def test_shapes_at_28_32_and_64(shape, stages):
    G, D = tiny_pair(shape, z_dim=8, channels=4)
    convt = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convt) == len(stages) - 1 and G.net[0].out_features == 4 * 2 ** (len(stages) - 2) * stages[0] ** 2
    assert len([m for m in D.modules() if isinstance(m, nn.Conv2d)]) == len(stages) - 1
    x = G(torch.randn(5, 8))
    assert x.shape == (5, *shape) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (5,)
    s = G.sample(3)
    assert s.shape == (3, *shape) and s.min() >= 0 and s.max() <= 1
    assert G.training                                   # sample() puts the mode back
