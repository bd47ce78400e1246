"""The conditional GANs of notebook 04 (common/cgan.py, common/ema.py, common/recipes.py): the
gradient penalty against a linear critic's closed form, the steps against hand-written losses,
the projection discriminator, wrong labels, the EMA, and the recipes; plus shared GAN checks."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common import cgan, dcgan, recipes
from common.ema import EMA, recalibrate_batch_norm
from common.machinery import checkpoints


class LinearCritic(nn.Module):
    """D(x) = w . x: its gradient is w everywhere, so the penalty is exactly lam * (||w|| - 1)^2."""

    def __init__(self, d=12):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))
        self.seen = []

    def forward(self, x, labels=None):
        self.seen.append(x.detach().clone())
        return x.flatten(1) @ self.w


def test_gradient_penalty_of_a_linear_critic_is_exact_and_flows_into_the_weights():
    torch.manual_seed(0)
    critic = LinearCritic()
    real, fake = torch.randn(8, 3, 2, 2), torch.randn(8, 3, 2, 2)
    penalty, norm = cgan.gradient_penalty(critic, real, fake, lam=10.0)
    w_norm = critic.w.norm().item()
    assert penalty.item() == pytest.approx(10 * (w_norm - 1) ** 2, rel=1e-5)
    assert norm.item() == pytest.approx(w_norm, rel=1e-5)
    penalty.backward()
    expected = 2 * 10 * (w_norm - 1) * critic.w.detach() / w_norm
    assert torch.allclose(critic.w.grad, expected, rtol=1e-4, atol=1e-6)


def test_alpha_is_one_uniform_value_per_sample():
    torch.manual_seed(1)
    critic = LinearCritic(d=48)
    real, fake = torch.randn(256, 3, 4, 4), torch.randn(256, 3, 4, 4)
    cgan.gradient_penalty(critic, real, fake)
    x_hat, diff = critic.seen[-1].flatten(1), (real - fake).flatten(1)
    a = ((x_hat - fake.flatten(1)) * diff).sum(1) / diff.pow(2).sum(1)  # least-squares alpha per sample
    residual = x_hat - (fake.flatten(1) + a[:, None] * diff)
    assert residual.abs().max() < 1e-5  # one alpha explains every pixel of a sample
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0.2  # spread like U[0, 1] (std 0.29)


def test_the_wgan_generator_loss_is_minus_the_mean_score():
    scores = torch.tensor([1.0, -3.0, 0.5], requires_grad=True)
    loss = cgan.wgan_g_loss(scores)
    assert loss.item() == pytest.approx(0.5)                 # -E[D(G(z))]
    (grad,) = torch.autograd.grad(loss, scores)
    assert torch.allclose(grad, torch.full((3,), -1 / 3))    # never saturates: a constant push up


S = (1, 28, 28)


@pytest.mark.parametrize("conditional", [False, True])
def test_shapes_and_labels(conditional):
    torch.manual_seed(2)
    if conditional:
        G, D = cgan.ConditionalGenerator(S, 10, z_dim=8, channels=8), cgan.ConditionalDiscriminator(S, 10, channels=8)
        labels = torch.arange(10)
    else:
        G, D = dcgan.DCGANGenerator(S, z_dim=8, channels=8), dcgan.DCGANDiscriminator(S, channels=8)
        labels = None
    z = torch.randn(10, 8)
    x = G(z, labels)
    assert x.shape == (10, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert D(x, labels).shape == (10,)
    s = G.sample(10, labels)
    assert s.shape == (10, 1, 28, 28) and 0 <= s.min() and s.max() <= 1
    if conditional:
        G.eval()
        same_z = z[:1].expand(10, -1)
        out = G(same_z, torch.arange(10))
        assert all(not torch.allclose(out[i], out[j]) for i in range(10) for j in range(i))  # every label matters
        scores = D(out.detach(), torch.arange(10))
        assert not torch.allclose(D(out.detach(), torch.zeros(10, dtype=torch.long)), scores)
        with pytest.raises(ValueError, match="conditional"):
            G.sample(3)
        with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
            G.sample(2, labels=[0, 10])
    else:
        with pytest.raises(ValueError, match="unconditional"):
            G.sample(2, labels=[0, 1])


def test_the_64x64_models_follow_the_dcgan_paper():
    """At 64x64 the DCGAN paper's generator goes 4 -> 8 -> 16 -> 32 -> 64 with 1024, 512, 256, 128
    maps, and its discriminator mirrors it: channels=128 reproduces those widths."""
    G, D = dcgan.DCGANGenerator((3, 64, 64), channels=128), dcgan.DCGANDiscriminator((3, 64, 64), channels=128)
    convt = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convt] == [(1024, 512), (512, 256), (256, 128), (128, 3)]
    assert G.net[0].out_features == 1024 * 4 * 4
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(3, 128), (128, 256), (256, 512), (512, 1024)]
    assert G(torch.randn(2, 100)).shape == (2, 3, 64, 64) and D(torch.rand(2, 3, 64, 64)).shape == (2,)


def test_upsample_conv_doubles_size_without_a_checkerboard():
    block = cgan.upsample_conv(4, 2, norm=False)
    nn.init.constant_(block[1].weight, 1.0)
    nn.init.zeros_(block[1].bias)
    out = block(torch.ones(1, 4, 7, 7))
    assert out.shape == (1, 2, 14, 14)
    assert torch.allclose(out[0, 0, 1:-1, 1:-1], torch.full((12, 12), 36.0))  # uniform inside
    convt = nn.ConvTranspose2d(4, 2, 3, 2, 1, output_padding=1, bias=False)
    nn.init.constant_(convt.weight, 1.0)
    inner = convt(torch.ones(1, 4, 7, 7))[0, 0, 1:-1, 1:-1]
    assert inner.max() / inner.min() == 4  # uneven overlap: the checkerboard


def test_dcgan_initialisation_statistics():
    torch.manual_seed(3)
    G, D = dcgan.DCGANGenerator(S, channels=64), dcgan.DCGANDiscriminator(S, channels=64)
    w = torch.cat([m.weight.flatten() for m in list(G.modules()) + list(D.modules())
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))])
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01) and bn.std().item() == pytest.approx(0.02, rel=0.2)


def make(kind):
    if kind == "dcgan":
        return dcgan.DCGANGenerator(S, z_dim=8, channels=8), dcgan.DCGANDiscriminator(S, channels=8)
    return (cgan.ConditionalGenerator(S, 10, z_dim=8, channels=8),
            cgan.ConditionalDiscriminator(S, 10, channels=8, batch_norm=(kind == "cdcgan")))


def make_step(kind, G, D, opt_G, opt_D, n_critic=1):
    if kind == "dcgan":
        return dcgan.dcgan_step(G, D, opt_G, opt_D)
    if kind == "cdcgan":
        return cgan.cdcgan_step(G, D, opt_G, opt_D)
    return cgan.wgan_gp_step(G, D, opt_G, opt_D, n_critic=n_critic)


def g_objective(kind, G, D, z, labels):
    """The generator's own loss, written independently of the steps."""
    scores = D(G(z, labels), labels)
    return -F.logsigmoid(scores).mean() if kind != "wgan-gp" else -scores.mean()


@pytest.mark.parametrize("kind", ["dcgan", "cdcgan", "wgan-gp"])
def test_the_step_updates_the_generator_towards_fooling_the_critic(kind):
    """Through the step itself: with D frozen (learning rate 0), one step must lower G's loss on
    the step's own noise. A sign flip of the generator loss in the step fails here."""
    torch.manual_seed(4)
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    G, D = make(kind)
    labels = y if G.conditional else None
    opt_G = torch.optim.SGD(G.parameters(), lr=0.05)
    opt_D = torch.optim.SGD(D.parameters(), lr=0.0)
    step = make_step(kind, G, D, opt_G, opt_D)
    torch.manual_seed(5)
    z = torch.randn(64, 8)  # the step's first random draw is its noise: the same z
    before = g_objective(kind, G, D, z, labels).item()  # train mode (batch statistics), as in the step
    torch.manual_seed(5)
    out = step(x, y)
    after = g_objective(kind, G, D, z, labels).item()
    assert "loss_G" in out and D.first.weight.grad.norm() > 0
    assert after < before, f"G's loss rose from {before:.6f} to {after:.6f}"


@pytest.mark.parametrize("kind", ["dcgan", "cdcgan", "wgan-gp"])
def test_the_step_updates_the_critic_towards_telling_real_from_fake(kind):
    torch.manual_seed(4)
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    G, D = make(kind)
    opt_D, opt_G = torch.optim.Adam(D.parameters(), 1e-3), torch.optim.Adam(G.parameters(), 0.0)
    step = make_step(kind, G, D, opt_G, opt_D, n_critic=2)
    torch.manual_seed(5)
    first = step(x, y)  # D's loss before its update
    torch.manual_seed(5)
    second = step(x, y)  # same z (and alpha): D's loss after one update
    assert second["loss_D"] < first["loss_D"]
    if kind == "wgan-gp":
        assert "loss_G" not in first and "loss_G" in second  # n_critic = 2: G on every second call
        assert second["gp"] >= 0 and second["grad_norm_xhat"] > 0
    else:
        assert 0 < first["D(x)"] < 1 and 0 < first["D(G(z))"] < 1  # probabilities


def test_generators_round_trip_through_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    for G, labels in [(dcgan.DCGANGenerator((3, 32, 32), z_dim=8, channels=8), None),
                      (cgan.ConditionalGenerator(S, 10, z_dim=8, channels=8), torch.arange(6) % 10)]:
        torch.manual_seed(6)
        expected = G.sample(6, labels)
        checkpoints.save_checkpoint(G, "g")
        loaded, _ = checkpoints.load_checkpoint("g")
        torch.manual_seed(6)
        assert torch.allclose(loaded.sample(6, labels), expected, atol=1e-6)


def _pair(seed=0, conditional=True):
    torch.manual_seed(seed)
    if conditional:
        return (cgan.ConditionalGenerator((1, 28, 28), 10, 16, 8), cgan.ConditionalDiscriminator((1, 28, 28), 10, 8))
    return dcgan.DCGANGenerator((1, 28, 28), 16, 8), dcgan.DCGANDiscriminator((1, 28, 28), 8)


@pytest.mark.parametrize("conditional", [False, True])
def test_the_steps_freezing_d_for_g_update_changes_no_number(conditional):
    """The steps freeze D's weights during G's update (a speed-up: G's backward pass skips D's
    weight gradients). A hand-written step without the freeze must give identical weights."""
    import copy
    G, D = _pair(conditional=conditional)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opts = [torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999)) for m in (G, D, G2, D2)]
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    labels = y if conditional else None
    step = (cgan.cdcgan_step if conditional else dcgan.dcgan_step)(G, D, opts[0], opts[1])
    torch.manual_seed(3)
    out = step(x, y)
    torch.manual_seed(3)
    fake = G2(torch.randn(16, 16), labels)
    loss_D = dcgan.d_loss_bce(D2(x * 2 - 1, labels), D2(fake.detach(), labels))
    opts[3].zero_grad()
    loss_D.backward()
    opts[3].step()
    loss_G = dcgan.g_loss_nonsaturating(D2(fake, labels))
    opts[2].zero_grad()
    loss_G.backward()
    opts[2].step()
    assert out["loss_G"].item() == loss_G.item()
    for a, b in zip([*G.parameters(), *D.parameters()], [*G2.parameters(), *D2.parameters()]):
        assert torch.equal(a, b)
    assert all(p.requires_grad for p in D.parameters())  # unfrozen again for the next step


def test_ema_is_the_closed_form_average_and_never_feeds_back():
    G, _ = _pair()
    ema = EMA(G, decay=0.9)
    start = [p.detach().clone() for p in G.parameters()]
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    live = [p.detach().clone() for p in G.parameters()]
    ema.update()                          # first update: decay min(0.9, 2/11)
    d = 2 / 11
    for avg, s0 in zip(ema.model.parameters(), start):
        assert torch.allclose(avg, d * s0 + (1 - d) * (s0 + 1), atol=1e-6)
    for p, q in zip(G.parameters(), live):
        assert torch.equal(p, q)          # G untouched
    for _ in range(200):
        ema.update()
    assert min(0.9, 202 / 211) == 0.9     # later updates use the full decay...
    for avg, q in zip(ema.model.parameters(), live):
        assert torch.allclose(avg, q, atol=1e-6)   # ...and converge to a G that stopped moving
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError, match="decay must be in \\[0, 1\\)"):
        EMA(G, decay=1.0)


def test_recalibrate_batch_norm_sets_the_exact_mean_over_its_batches():
    G, _ = _pair()
    ema = EMA(G)
    bn = ema.model.project[2]
    seen = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].mean((0, 2, 3))))
    state = torch.get_rng_state()
    model = recalibrate_batch_norm(ema.model, n_batches=3, batch_size=32, seed=1)
    hook.remove()
    assert model is ema.model and not model.training
    assert torch.equal(torch.get_rng_state(), state)   # its own generator: the global stream untouched
    assert torch.allclose(bn.running_mean, torch.stack(seen).mean(0), atol=1e-6)
    assert bn.momentum == 0.1             # restored
    again = [b.clone() for b in model.buffers()]
    recalibrate_batch_norm(ema.model, n_batches=3, batch_size=32, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(again, model.buffers()))  # seeded: repeatable


def test_steps_update_the_ema_once_per_generator_update():
    G, D = _pair()
    ema = EMA(G)
    opt_G, opt_D = (torch.optim.Adam(m.parameters(), 1e-4, betas=(0.0, 0.9)) for m in (G, D))
    step = cgan.wgan_gp_step(G, D, opt_G, opt_D, n_critic=3, ema=ema)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    for _ in range(7):
        step(x, y)
    assert ema.updates == 2
    step = cgan.cdcgan_step(G, cgan.ConditionalDiscriminator((1, 28, 28), 10, 8), opt_G,
                            torch.optim.Adam(D.parameters()), ema=ema)
    step(x, y)
    assert ema.updates == 3


def test_d_is_unfrozen_even_when_g_backward_is_interrupted():
    """Ctrl-C inside G's backward pass must not leave D frozen for a run that is continued."""
    G, D = _pair()
    opts = [torch.optim.Adam(m.parameters()) for m in (G, D)]

    def interrupted(_):
        raise KeyboardInterrupt

    step = cgan.cdcgan_step(G, D, *opts, g_loss=lambda logits: logits.mean() + 0 * interrupted(logits))
    with pytest.raises(KeyboardInterrupt):
        step(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    assert all(p.requires_grad for p in D.parameters())


def _projection(shared=False, aux_classifier=True, batch_norm=True, seed=0):
    torch.manual_seed(seed)
    return cgan.ProjectionDiscriminator(S, 10, channels=8, batch_norm=batch_norm, shared=shared,
                                        aux_classifier=aux_classifier)


@pytest.mark.parametrize("shared", [False, True])
def test_projection_discriminator_scores_are_a_per_class_linear_function_of_the_features(shared):
    D = _projection(shared=shared).eval()
    x, y = torch.rand(6, 1, 28, 28) * 2 - 1, torch.tensor([0, 1, 2, 3, 9, 9])
    h = D.features(x)
    assert h.shape == (6, 16 * 7 * 7)      # channels 8: 8 maps at 14x14, 16 at 7x7
    expected = torch.stack([D.heads.weight[c] @ h[i] for i, c in enumerate(y.tolist())])
    if shared:
        expected = expected + D.shared(h).squeeze(1)
    assert torch.allclose(D(x, y), expected, atol=1e-5)
    assert D.classifier(h).shape == (6, 10)
    # the label only enters at the end: the same image under two labels differs by <w_a - w_b, h>
    a, b = D(x, torch.zeros(6, dtype=torch.long)), D(x, torch.ones(6, dtype=torch.long))
    assert torch.allclose(a - b, h @ (D.heads.weight[0] - D.heads.weight[1]), atol=1e-5)
    assert _projection(aux_classifier=False).classifier is None


def test_both_discriminators_split_into_features_and_score():
    """The steps score one pass of features under several labels: for the label-channel D the
    features are the image itself, for the heads D one trunk pass serves every score."""
    x, y = torch.rand(4, 1, 28, 28) * 2 - 1, torch.arange(4)
    D = cgan.ConditionalDiscriminator(S, 10, 8).eval()
    assert D.features(x) is x and torch.equal(D.score(D.features(x), y), D(x, y))
    D = _projection().eval()
    calls = []
    D.trunk.register_forward_hook(lambda *a: calls.append(1))
    h = D.features(x)
    wrong = cgan.wrong_labels(y, 10)
    assert torch.equal(D.score(h, y), D(x, y)) and torch.equal(D.score(h, wrong), D(x, wrong))
    assert len(calls) == 3                 # h once, then the two forward passes


def test_the_conditional_dcgan_step_passes_each_batch_through_the_trunk_once():
    """Real batch (every term on x), fake batch for D, fake batch for G: three trunk passes."""
    G, D = cgan.ConditionalGenerator(S, 10, 8, 8), _projection()
    calls = []
    D.trunk.register_forward_hook(lambda *a: calls.append(1))
    opt_G, opt_D = (torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D))
    cgan.cdcgan_step(G, D, opt_G, opt_D, matching_weight=0.5, class_weight=1.0)(
        torch.rand(8, 1, 28, 28), torch.arange(8))
    assert len(calls) == 3


def test_wrong_labels_are_never_the_label_and_cover_every_other_class():
    torch.manual_seed(0)
    y = torch.arange(10).repeat(2000)
    w = cgan.wrong_labels(y, 10)
    assert not (w == y).any() and w.min() >= 0 and w.max() <= 9
    counts = torch.bincount(w[y == 3], minlength=10)
    assert counts[3] == 0 and (counts[torch.arange(10) != 3] > 150).all()   # ~222 each


def test_matching_aware_and_classifier_terms_are_the_written_losses():
    """The step's loss_D and loss_G against the formulas, with the same noise and wrong labels;
    the gradient the step leaves on D's first layer (notebook 04 plots its norm) is loss_D's."""
    import copy
    torch.manual_seed(1)
    G, D = cgan.ConditionalGenerator(S, 10, 8, 8), _projection()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opt_G, opt_D = (torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D))   # lr 0: weights fixed
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    torch.manual_seed(2)
    out = cgan.cdcgan_step(G, D, opt_G, opt_D, matching_weight=0.5, class_weight=0.7)(x, y)
    torch.manual_seed(2)
    fake = G2(torch.randn(16, 8), y)
    wrong = cgan.wrong_labels(y, 10)
    real = x * 2 - 1
    bce = F.binary_cross_entropy_with_logits
    loss_D = (bce(D2(real, y), torch.ones(16)) + bce(D2(fake.detach(), y), torch.zeros(16))
              + 0.5 * bce(D2(real, wrong), torch.zeros(16))
              + 0.7 * F.cross_entropy(D2.classifier(D2.features(real)), y))
    loss_D.backward()
    loss_G = bce(D2(fake, y), torch.ones(16)) + 0.7 * F.cross_entropy(D2.classifier(D2.features(fake)), y)
    assert out["loss_D"].item() == pytest.approx(loss_D.item(), rel=1e-5)
    assert out["loss_G"].item() == pytest.approx(loss_G.item(), rel=1e-5)
    assert out["D(x, wrong label)"].item() == pytest.approx(torch.sigmoid(D2(real, wrong)).mean().item(), rel=1e-5)
    assert set(out) >= {"class_loss_real", "class_loss_fake"}
    assert torch.allclose(D.first.weight.grad, D2.first.weight.grad, rtol=1e-4, atol=1e-7)


def test_the_auxiliary_classifier_term_teaches_g_the_requested_class():
    """D frozen (lr 0), the adversarial term switched off: G's step must lower D's classifier's
    cross-entropy for the requested classes on G's own noise. A sign flip of the term fails here."""
    torch.manual_seed(3)
    G, D = cgan.ConditionalGenerator(S, 10, 8, 8), _projection()
    opt_G = torch.optim.SGD(G.parameters(), lr=0.05)
    opt_D = torch.optim.SGD(D.parameters(), lr=0.0)
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    step = cgan.cdcgan_step(G, D, opt_G, opt_D, g_loss=lambda s: 0 * s.mean(), class_weight=1.0)
    torch.manual_seed(4)
    z = torch.randn(32, 8)

    def class_loss():
        return cgan.class_loss(D, D.features(G(z, y)), y).item()

    before = class_loss()
    torch.manual_seed(4)
    step(x, y)
    assert class_loss() < before


def test_wgan_gp_step_with_the_auxiliary_classifier_is_the_written_loss():
    import copy
    torch.manual_seed(1)
    G, D = cgan.ConditionalGenerator(S, 10, 8, 8), _projection(batch_norm=False)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opt_G, opt_D = (torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D))
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    torch.manual_seed(2)
    out = cgan.wgan_gp_step(G, D, opt_G, opt_D, n_critic=1, class_weight=0.7)(x, y)
    torch.manual_seed(2)
    fake = G2(torch.randn(16, 8), y)
    real = x * 2 - 1
    gp, _ = cgan.gradient_penalty(D2, real, fake, y)              # the same alpha: drawn next
    ce = lambda imgs: F.cross_entropy(D2.classifier(D2.features(imgs)), y)
    loss_D = D2(fake.detach(), y).mean() - D2(real, y).mean() + gp + 0.7 * ce(real)
    loss_D.backward()
    loss_G = -D2(fake, y).mean() + 0.7 * ce(fake)
    assert out["loss_D"].item() == pytest.approx(loss_D.item(), rel=1e-5)
    assert out["loss_G"].item() == pytest.approx(loss_G.item(), rel=1e-5)
    assert out["gp"].item() == pytest.approx(gp.item(), rel=1e-5)
    assert torch.allclose(D.first.weight.grad, D2.first.weight.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("recipe", [recipes.CDCGAN(), recipes.WGANGP(), recipes.CDCGAN(discriminator="channels",
                                    class_weight=0.0), recipes.WGANGP(discriminator="projection", ema=True)])
def test_build_makes_what_the_recipe_says(recipe):
    torch.manual_seed(0)
    G, D, opt_G, opt_D, step, ema = recipes.build(recipe, S, 10, z_dim=8, g_channels=8, d_channels=8)
    wgan = isinstance(recipe, recipes.WGANGP)
    kind = {"channels": cgan.ConditionalDiscriminator}.get(recipe.discriminator, cgan.ProjectionDiscriminator)
    assert isinstance(G, cgan.ConditionalGenerator) and type(D) is kind
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules()) != wgan      # no batch norm in a critic
    if kind is cgan.ProjectionDiscriminator:
        assert (D.shared is not None) == (recipe.discriminator == "projection")
        assert (D.classifier is not None) == (recipe.class_weight > 0)
    assert opt_D.defaults["lr"] == recipe.lr and opt_G.defaults["betas"] == recipe.betas
    assert (ema is not None) == recipe.ema
    out = step(torch.rand(8, 1, 28, 28), torch.arange(8))
    assert ("class_loss_real" in out) == (recipe.class_weight > 0) and "loss_D" in out
    assert ("gp" in out) == wgan and ("D(x, wrong label)" in out) == (not wgan and recipe.matching_weight > 0)


def test_recipes_hold_the_notebooks_settings_and_refuse_what_cannot_work():
    assert (recipes.CDCGAN().lr, recipes.CDCGAN().betas, recipes.CDCGAN().batch_size) == (2e-4, (0.5, 0.999), 64)
    w = recipes.WGANGP()
    assert (w.betas, w.gp_lambda, w.n_critic, w.batch_size, w.class_weight) == ((0.0, 0.9), 10.0, 1, 64, 1.0)
    assert not hasattr(w, "matching_weight")               # the matching-aware term is a BCE recipe's
    with pytest.raises(ValueError, match="class_weight > 0 needs a classifier"):
        recipes.CDCGAN(discriminator="channels")
    with pytest.raises(ValueError, match="'channels', 'heads' or 'projection'"):
        recipes.WGANGP(discriminator="onehot")
