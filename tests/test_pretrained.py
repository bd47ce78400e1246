"""data/pretrained/: half-precision storage, the manifest's hash check, the committed files, the tool."""
import json

import pytest
import torch

from common import cgan, dcgan, vae
from common.machinery import pretrained, runtime, storage
from tools import pretrain


def _generator(seed=0):
    torch.manual_seed(seed)
    G = dcgan.DCGANGenerator((1, 28, 28), 16, 8)
    # trained-looking batch norm statistics rather than the (0, 1) defaults
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return G.eval()


def _samples(model, n=64, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.sample(n)


def test_save_stores_half_precision_and_load_gives_float32_samples_within_1_over_255(tmp_path):
    G = _generator()
    record = pretrained.save(G, "dcgan_test", {"budget": "test", "epochs": 1}, directory=tmp_path)
    assert record["storage"] == "float16" and record["max_pixel_change"] <= 1 / 255
    assert record["sha256"] == storage.file_hash(tmp_path / "dcgan_test.pt")
    assert record["parameters"] == sum(p.numel() for p in G.parameters())
    loaded, entry = pretrained.load("dcgan_test", directory=tmp_path)
    assert entry == record and entry["budget"] == "test"
    assert all(p.dtype == torch.float32 for p in loaded.state_dict().values() if p.is_floating_point())
    change = (_samples(loaded) - _samples(G)).abs().max().item()
    assert 0 < change <= 1 / 255          # rounded, so not bit-identical, but within one grey level
    # the file holds float16 weights: about half the bytes of the float32 ones
    float32_bytes = sum(p.numel() * 4 for p in G.state_dict().values() if p.dtype == torch.float32)
    assert record["bytes"] < 0.6 * float32_bytes + 20_000


def test_save_keeps_float32_when_half_precision_would_change_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "TOLERANCE", 0.0)   # any rounding is now too much
    G = _generator()
    record = pretrained.save(G, "strict", {}, directory=tmp_path)
    assert record["storage"] == "float32" and record["max_pixel_change"] == 0.0
    loaded, _ = pretrained.load("strict", directory=tmp_path)
    assert torch.equal(_samples(loaded), _samples(G))


def test_manifest_keeps_every_model_and_sorts_them(tmp_path):
    pretrained.save(_generator(1), "b_model", {"n": 1}, directory=tmp_path)
    pretrained.save(vae.MLPVAE((1, 28, 28), 4, 16), "a_model", {"n": 2}, directory=tmp_path)
    pretrained.save(_generator(2), "b_model", {"n": 3}, directory=tmp_path)   # overwritten, not duplicated
    table = json.loads((tmp_path / pretrained.MANIFEST).read_text())
    assert list(table["models"]) == ["a_model", "b_model"] and table["models"]["b_model"]["n"] == 3
    assert pretrained.names(tmp_path) == ["a_model", "b_model"]


def test_load_refuses_a_file_that_does_not_match_its_hash(tmp_path):
    pretrained.save(_generator(), "g", {}, directory=tmp_path)
    path = tmp_path / "g.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                     # one flipped byte in the middle of the weights
    path.write_bytes(bytes(raw))
    with pytest.raises(pretrained.PretrainedError, match="does not match its manifest.*git checkout"):
        pretrained.load("g", directory=tmp_path)


def test_unknown_missing_and_broken_manifest_entries_say_what_to_do(tmp_path):
    with pytest.raises(pretrained.PretrainedError, match="no pretrained model 'nope'.*listed: none.*tools.pretrain"):
        pretrained.load("nope", directory=tmp_path)
    pretrained.save(_generator(), "g", {}, directory=tmp_path)
    (tmp_path / "g.pt").unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing; restore it"):
        pretrained.load("g", directory=tmp_path)
    (tmp_path / pretrained.MANIFEST).write_text("{not json")
    with pytest.raises(pretrained.PretrainedError, match="not valid JSON"):
        pretrained.manifest(tmp_path)


def test_committed_pretrained_models_match_their_manifest_and_budget():
    names = pretrained.names()
    if not names:
        pytest.skip("data/pretrained/ has no models yet (python -m tools.pretrain)")
    total = 0
    for name in names:
        model, entry = pretrained.load(name)      # checks the SHA-256
        total += entry["bytes"]
        assert entry["max_pixel_change"] <= 1 / 255, name
        for key in ("budget", "epochs", "steps", "device", "sessions", "train_seconds", "metrics", "recipe", "date"):
            assert key in entry, (name, key)
        assert entry["command"].startswith("python -m tools.pretrain --budget "), name   # how to reproduce it
        assert entry["curve"] or "gmm_prior" in name, name   # its metric over training (a GMM is fitted once)
        labels = torch.arange(4) if getattr(model, "conditional", False) else None
        images = model.sample(4, labels)
        assert 0 <= images.min() and images.max() <= 1
        if "dsprites" in name:                    # judged by its factors, not by FID
            assert images.shape[1:] == (1, 64, 64)
            found = entry["metrics"]["factors_found"]
            # x and y each in a dimension of its own; scale (eta^2 0.35) shares one with shape: the
            # issue's target of eta^2 >= 0.8 for scale is not met (README, "Pretrained models")
            assert all(found[f]["eta2"] >= 0.8 for f in ("pos_x", "pos_y")), found
            assert found["pos_x"]["dim"] != found["pos_y"]["dim"], found
        else:
            assert images.shape[1:] == (1, 28, 28) and entry["metrics"]["fid_domain"] > 0
        if getattr(model, "conditional", False):  # judged by the classifier no model trained against
            per_class = entry["metrics"]["class_accuracy_per_class_independent"]
            assert entry["metrics"]["class_accuracy_independent"] >= 0.9 and min(per_class) >= 0.8, (name, per_class)
    assert total <= 25e6


def test_pretrain_tool_trains_measures_and_writes_every_requested_model(tmp_path):
    pretrain.main(["--only", "dcgan_generator", "cwgan_gp_generator", "--epochs", "1", "--limit", "256",
                   "--fid-n", "100", "--per-class", "5", "--threads", "1", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    table = pretrained.manifest(tmp_path)["models"]
    assert sorted(table) == ["cwgan_gp_generator-fashion_mnist-1x28x28", "dcgan_generator-fashion_mnist-1x28x28"]
    wgan = table["cwgan_gp_generator-fashion_mnist-1x28x28"]
    assert wgan["epochs"] == 1 and wgan["budget"] == "long-cpu" and wgan["recipe"]["n_critic"] == 1
    assert wgan["metrics"]["fid_n"] == 100 and len(wgan["metrics"]["class_accuracy_per_class"]) == 10
    assert len(wgan["metrics"]["class_accuracy_per_class_independent"]) == 10       # the second judge too
    assert wgan["curve"]["fid"]["epochs"] == [1] and wgan["curve"]["fid"]["values"][0] > 0
    assert wgan["steps"] == 4 and wgan["command"] == "python -m tools.pretrain --budget long-cpu --only cwgan_gp_generator" \
        " --epochs-of vae_mlp=1 vae_conv=1 vqvae=1 latent_vae=1 dcgan=1 cdcgan=1 cwgan=1 dsprites=1"
    dcgan_metrics = table["dcgan_generator-fashion_mnist-1x28x28"]["metrics"]
    assert "class_accuracy" not in dcgan_metrics and 0 <= dcgan_metrics["recognisable_independent"] <= 1
    assert sum(dcgan_metrics["class_shares_independent"]) == pytest.approx(1)
    model, _ = pretrained.load("cwgan_gp_generator-fashion_mnist-1x28x28", directory=tmp_path)
    assert isinstance(model, cgan.ConditionalGenerator)


def test_pretrain_trains_the_dsprites_vae_with_annealed_capacity_and_records_its_factors(tmp_path):
    pretrain.main(["--only", "vae_dsprites", "--epochs", "1", "--limit", "256", "--threads", "1",
                   "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    entry = pretrained.manifest(tmp_path)["models"]["vae_dsprites-dsprites_procedural-1x64x64"]
    metrics = entry["metrics"]
    assert entry["steps"] == 4 and entry["recipe"]["gamma"] == 1000.0 and "fid_domain" not in metrics
    assert set(metrics["factors_found"]) == {"shape", "scale", "orientation", "pos_x", "pos_y"}
    assert len(metrics["eta2"]) == 10 and all(len(row) == 5 for row in metrics["eta2"])
    assert entry["curve"]["eta2_pos_x"]["epochs"] == [1]
    model, _ = pretrained.load("vae_dsprites-dsprites_procedural-1x64x64", directory=tmp_path)
    assert model.sample(2).shape == (2, 1, 64, 64)


def test_the_capacity_grows_with_the_optimizers_own_step_count_so_a_resumed_run_keeps_it():
    from common import vae
    torch.manual_seed(0)
    model = vae.ConvVAE((1, 64, 64), 4, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = pretrain.capacity_step(model, opt, gamma=10.0, capacity=4.0, anneal_steps=4)
    x = torch.rand(2, 1, 64, 64).round()
    cs = [float(step(x, None)["C"]) for _ in range(6)]
    assert cs == [0.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    fresh.load_state_dict(opt.state_dict())               # as a resume file restores it
    again = pretrain.capacity_step(model, fresh, gamma=10.0, capacity=4.0, anneal_steps=4)
    assert float(again(x, None)["C"]) == 4.0


def _budget(epochs):
    return {"budget": "long-cpu", "epochs": epochs, "device": "cpu", "train_seconds": 120.0,
            "dataset": "fashion_mnist-1x28x28"}


def test_compare_measures_yours_and_the_pretrained_model_alike_and_names_what_is_missing(tmp_path, monkeypatch):
    from common import fid, training
    from common.machinery import checkpoints, data
    monkeypatch.setattr(runtime, "checkpoint_dir", lambda profile_name=None: tmp_path / "yours")
    test = data.load_dataset("fashion_mnist", "test")
    torch.manual_seed(0)
    mine, shipped = vae.MLPVAE((1, 28, 28), 4, 16), vae.MLPVAE((1, 28, 28), 4, 16)
    history = training.History(epochs=[{"epoch": 1}, {"epoch": 2}], seconds=30.0)
    checkpoints.save_checkpoint(mine, f"vae_mlp-{test.tag}", history=history.state_dict())
    G = cgan.ConditionalGenerator((1, 28, 28), 10, 8, 8).eval()
    checkpoints.save_checkpoint(G, f"cdcgan_generator-{test.tag}", history=history.state_dict())
    pretrained.save(shipped, f"vae_mlp-{test.tag}", _budget(5), directory=tmp_path / "pre")
    pretrained.save(cgan.ConditionalGenerator((1, 28, 28), 10, 8, 8).eval(), f"cdcgan_generator-{test.tag}",
                    _budget(6), directory=tmp_path / "pre", sample=lambda m: m.sample(20, torch.arange(20) % 10))

    result = pretrained.compare([("MLP VAE", "vae_mlp", ["vae_mlp"]), ("conv VAE", "vae_conv", ["vae_conv"]),
                                 ("conditional DCGAN", "cdcgan_generator", ["cdcgan_generator"])],
                                test, n=200, per_class=4, directory=tmp_path / "pre")
    # the same measurement as fid.fid of each model on its own, for yours and the pretrained one
    for who, model in (("yours", mine), ("pretrained", pretrained.load(f"vae_mlp-{test.tag}", directory=tmp_path / "pre")[0])):
        expected = fid.fid(model.eval(), test, 200, "domain", seed=0, progress=False).value
        assert result.metrics["MLP VAE"][who]["fid"] == pytest.approx(expected, rel=1e-6)
    cond = result.metrics["conditional DCGAN"]["yours"]["class_accuracy"]
    assert list(cond) == ["independent classifier", "domain classifier"]      # the independent judge first
    for judged in cond.values():
        assert 0 <= judged["worst"] <= judged["mean"] <= 1 and judged["worst_class"] in test.classes
    assert "class accuracy (worst class): independent classifier | domain classifier" in result.table
    assert "class_accuracy" not in result.metrics["MLP VAE"]["yours"]
    # two rows of samples per compared model, drawn from the same noise, budgets in the table
    assert list(result.samples) == ["MLP VAE\nyours, 2 epochs", "MLP VAE\npretrained, 5 epochs",
                                    "conditional DCGAN\nyours, 2 epochs", "conditional DCGAN\npretrained, 6 epochs"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        assert torch.equal(result.samples["MLP VAE\nyours, 2 epochs"], mine.eval().sample(10))
    assert "2 epochs, 30 s on cpu" in result.table and "pretrained, long-cpu: 5 epochs, 2.0 min on cpu" in result.table
    assert "conv VAE: not compared" in result.table and "vae_conv" in result.table


def test_compare_on_a_dataset_without_pretrained_models_says_so_and_measures_nothing(tmp_path):
    from types import SimpleNamespace
    pretrained.save(_generator(), "dcgan_generator-fashion_mnist-1x28x28", _budget(1), directory=tmp_path)
    result = pretrained.compare([("DCGAN", "dcgan_generator", ["dcgan_generator"])],
                                SimpleNamespace(tag="mnist-1x28x28"), directory=tmp_path)
    assert not result.metrics and not result.samples
    assert "ships pretrained models for fashion_mnist-1x28x28, not mnist-1x28x28" in result.table


def test_a_pretrained_model_loads_in_a_fresh_process_without_importing_its_module():
    """The checkpoint table imports a model's module on demand: no side-effect import first."""
    import subprocess
    import sys

    code = ("import sys\nfrom common.machinery import pretrained\n"
            "assert 'common.cgan' not in sys.modules\n"
            "model, entry = pretrained.load('cdcgan_generator-fashion_mnist-1x28x28')\n"
            "import torch\nx = model.sample(4, torch.arange(4))\n"
            "assert x.shape == (4, 1, 28, 28) and 0 <= x.min() and x.max() <= 1\n"
            "print(type(model).__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=runtime.REPO_ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "common.cgan"
