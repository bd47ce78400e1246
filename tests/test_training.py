import pytest
import torch

from common import training, vae
from common.machinery import checkpoints
from common.machinery.data import ImageData


def toy_data(n=96):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    return ImageData(images, torch.arange(n) % 10, "toy", "train", tuple("0123456789"))


def run(seed, epochs=2):
    torch.manual_seed(seed)
    model = vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=16)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    hist = training.train(vae.vae_step(model, opt), toy_data().batches(32, seed=seed), epochs)
    return model, hist


def test_history_records_steps_and_one_record_per_epoch():
    _, h = run(0, epochs=3)
    assert len(h.steps["loss"]) == 9 and h.n_epochs == 3
    assert [r["epoch"] for r in h.epochs] == [1, 2, 3] and all("kl" in r for r in h.epochs)
    assert h.images_seen == 3 * 96 and all(r["images_per_s"] > 0 for r in h.epochs)
    assert h.epochs[0]["loss"] == pytest.approx(sum(h.steps["loss"][:3]) / 3)
    assert h.series("kl")[0] == [1, 2, 3]
    assert "images/s" in h.summary() and "images_per_s" not in h.summary()


def test_a_loss_reported_on_some_batches_is_averaged_over_those_batches():
    """The generator's loss of a WGAN-GP step comes every n_critic-th batch: its epoch mean must
    be the mean of the values reported, not their sum over all batches (5x too small)."""
    calls = []

    def step(x, y):
        calls.append(1)
        return {"loss_D": 1.0, **({"loss_G": 10.0} if len(calls) % 3 == 0 else {})}

    h = training.train(step, toy_data().batches(16), 1)  # 6 batches, loss_G on 2 of them
    assert h.epochs[0]["loss_D"] == 1.0 and h.epochs[0]["loss_G"] == 10.0
    assert len(h.steps["loss_G"]) == 2


def test_same_seed_same_losses():
    _, a = run(1)
    _, b = run(1)
    _, c = run(2)
    assert a.steps["loss"] == b.steps["loss"]
    assert a.steps["loss"] != c.steps["loss"]


def test_callbacks_add_epoch_metrics_and_snapshots():
    def cb(epoch, history):
        history.snapshots[epoch] = torch.full((2, 1, 4, 4), epoch, dtype=torch.uint8)
        return {"test_loss": 10.0 * epoch}

    h = training.train(lambda x, y: {"loss": x.mean()}, toy_data().batches(48), 2, callbacks=[cb])
    assert h.series("test_loss") == ([1, 2], [10.0, 20.0]) and sorted(h.snapshots) == [1, 2]
    # continuing a run counts epochs on
    h = training.train(lambda x, y: {"loss": x.mean()}, toy_data().batches(48), 1, callbacks=[cb], history=h)
    assert h.series("test_loss") == ([1, 2, 3], [10.0, 20.0, 30.0])
    restored = training.History.from_state_dict(h.state_dict())
    assert restored.epochs == h.epochs and torch.equal(restored.snapshots[3], h.snapshots[3])


def test_a_metric_measured_every_k_epochs_needs_no_side_keys():
    every_other = lambda epoch, history: {"fid": 100.0 / epoch} if epoch % 2 == 0 else None  # noqa: E731
    h = training.train(lambda x, y: {"loss": x.mean()}, toy_data().batches(48), 5, callbacks=[every_other])
    assert h.series("fid") == ([2, 4], [50.0, 25.0])
    assert "fid" not in h.epochs[0] and "fid" in h.epochs[3]


def test_nan_guard_stops_with_clear_message():
    """A step that does not guard itself is caught when the loop reads its losses back (every
    postfix_every steps and at the end of each epoch): here at the end of epoch 1 (3 batches),
    naming the step that went bad, and the history keeps only the whole steps before it."""
    calls = []

    def step(x, y):
        calls.append(1)
        return {"loss": torch.tensor(1.0), "kl": torch.tensor(float("nan") if len(calls) == 2 else 0.0)}

    with pytest.raises(training.NonFiniteLossError, match=r"'kl' became nan at epoch 1, step 2.*learning rate") as err:
        training.train(step, toy_data().batches(32), 3)
    assert len(calls) == 3 and err.value.history.steps == {"loss": [1.0], "kl": [0.0]}


def test_losses_are_read_back_in_batches_not_every_step():
    """The loop keeps step losses as tensors and reads them back every postfix_every steps: the
    history is the same, value for value, whatever the read-back interval."""
    def run(every):
        torch.manual_seed(0)
        model = torch.nn.Linear(784, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        step = training.minimize(lambda x, y: {"loss": model(x.flatten(1)).pow(2).mean(),
                                               "half": model(x.flatten(1)).pow(2).mean() / 2}, opt)
        return training.train(step, toy_data().batches(8, seed=1), 2, postfix_every=every)

    a, b = run(1), run(5)
    assert a.steps == b.steps and len(a.steps["loss"]) == 24
    assert a.steps["half"] == [v / 2 for v in a.steps["loss"]]
    assert [r["loss"] for r in a.epochs] == [r["loss"] for r in b.epochs]


def test_step_returning_a_vector_is_refused():
    with pytest.raises(ValueError, match=r"'loss' with shape \(3,\).*one number per loss"):
        training.train(lambda x, y: {"loss": torch.ones(3)}, toy_data().batches(32), 1)


def test_keyboard_interrupt_keeps_model_and_history(capsys):
    seen = []

    def step(x, y):
        seen.append(1)
        if len(seen) == 5:
            raise KeyboardInterrupt
        return {"loss": 1.0}

    h = training.train(step, toy_data().batches(32), 4)
    assert h.interrupted and h.n_epochs == 1 and len(h.steps["loss"]) == 4
    assert "Interrupted during epoch 2" in capsys.readouterr().out


def test_evaluate_weights_by_batch_size():
    d = toy_data(100)
    out = training.evaluate(lambda x, y: {"mean": x.mean()}, d.batches(30, shuffle=False))
    assert out["mean"] == pytest.approx(d[:][0].mean().item(), rel=1e-5)


def test_fit_or_load_reuses_only_a_matching_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DGM_PROFILE", "smoke")
    cfg = {"epochs": 1, "lr": 1e-3}
    trained = []

    def fit(model):
        def run():
            trained.append(1)
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            return training.train(vae.vae_step(model, opt), toy_data().batches(32), 1)
        return run

    m = vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=16)
    _, h1 = training.fit_or_load("toy", m, cfg, fit(m), reuse=True)
    m2 = vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=16)
    loaded, h2 = training.fit_or_load("toy", m2, cfg, fit(m2), reuse=True)
    assert len(trained) == 1 and h2.steps == h1.steps
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), m.state_dict().values()))
    m3 = vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=16)
    training.fit_or_load("toy", m3, dict(cfg, epochs=2), fit(m3), reuse=True)  # config differs
    assert len(trained) == 2
    training.fit_or_load("toy", m3, dict(cfg, epochs=2), fit(m3), reuse=False)  # reuse off
    assert len(trained) == 3
    assert checkpoints.checkpoint_path("toy").parent == tmp_path.resolve() / "checkpoints" / "smoke"


def test_evaluate_is_seeded_and_leaves_the_callers_random_state_alone():
    d = toy_data(64)
    noisy = lambda x, y: {"v": x.mean() + torch.randn(())}  # noqa: E731
    torch.manual_seed(11)
    state = torch.get_rng_state()
    a = training.evaluate(noisy, d.batches(32, shuffle=False))
    assert torch.equal(torch.get_rng_state(), state)
    assert training.evaluate(noisy, d.batches(32, shuffle=False)) == a
    assert training.evaluate(noisy, d.batches(32, shuffle=False), seed=1) != a


def test_evaluate_restores_train_mode_even_when_the_loss_fails():
    model = torch.nn.BatchNorm1d(3)

    def broken(x, y):
        assert not model.training
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        training.evaluate(broken, toy_data(8).batches(8), model)
    assert model.training


def test_fit_or_load_returns_eval_mode_like_a_loaded_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    m = vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=8)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    trained, _ = training.fit_or_load("m", m, {}, lambda: training.train(vae.vae_step(m, opt), toy_data().batches(32), 1), reuse=False)
    assert not trained.training


def test_eval_mode_context_restores_the_previous_mode():
    from common.layers import eval_mode

    model = torch.nn.BatchNorm1d(2)
    with eval_mode(model):
        assert not model.training
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training  # an eval model stays in eval
    model.train()
    with pytest.raises(KeyError):
        with eval_mode(model):
            raise KeyError
    assert model.training
    with eval_mode(None):
        pass
