"""Bad input and faults: each mistake a careful user can make gets a clear error, nothing is lost,
nothing is silently wrong. One test per guard; each test's name says what it guards."""
import gzip
import io
import os
import shutil
import signal
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from common import cgan, dcgan, fid, training, vae, vqvae
from common.machinery import checkpoints, checks, data, features, fid_stats, sources, storage
from common.classifiers import ConvClassifier, MLPClassifier


@pytest.fixture
def ckdir(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DGM_PROFILE", "cpu")
    return tmp_path / "checkpoints" / "cpu"


def toy(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return data.TensorData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


# =========================================================================== training


def test_a_nan_loss_stops_before_the_update_so_the_model_keeps_its_last_finite_weights():
    torch.manual_seed(0)
    model = vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=8)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    calls, before = [], {}

    def loss_fn(x, y):
        calls.append(1)
        if len(calls) == 3:
            before.update(weights(model))
            return {k: v * float("nan") for k, v in model.loss(x).items()}
        return model.loss(x)

    with pytest.raises(training.NonFiniteLossError, match=r"'loss' became nan at epoch 1, step 3\. .*before "
                       r"the optimizer update .*no parameter was updated with it") as err:
        training.train(training.minimize(loss_fn, opt), toy().batches(16), 2)
    assert err.value.update_skipped and err.value.history.steps["loss"][:2] and finite(model)
    assert same(weights(model), before)  # not one parameter moved on the bad step


@pytest.mark.parametrize("which", ["dcgan_G", "wgan_D"])
def test_the_gan_steps_skip_the_update_whose_loss_is_nan(which):
    torch.manual_seed(0)
    G = cgan.ConditionalGenerator((1, 28, 28), 10, z_dim=8, channels=4)
    D = cgan.ConditionalDiscriminator((1, 28, 28), 10, channels=4, batch_norm=which != "wgan_D")
    opt_G, opt_D = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    if which == "dcgan_G":
        step = cgan.cdcgan_step(G, D, opt_G, opt_D, g_loss=lambda logits: dcgan.g_loss_nonsaturating(logits) * float("nan"))
    else:
        step = cgan.wgan_gp_step(G, D, opt_G, opt_D, gp_lambda=float("nan"))
    g0, d0 = weights(G), weights(D)
    with pytest.raises(training.NonFiniteLossError, match="loss_G" if which == "dcgan_G" else "loss_D"):
        training.train(step, toy().batches(16), 1)
    assert finite(G) and finite(D)
    G_params = {k: v for k, v in weights(G).items() if "running" not in k and "num_batches" not in k}
    assert same(G_params, {k: g0[k] for k in G_params})                    # G never updated
    if which == "wgan_D":
        assert same(weights(D), d0)                                          # nor the critic
    else:
        assert not same(weights(D), d0)                                      # D's finite update did run


class NaNOnCall(torch.nn.Module):
    """A critic that answers NaN on its k-th score (in a WGAN-GP step with n_critic = 1 the scores
    are of the real batch, the fake batch, x_hat, then the fake batch for G's loss)."""

    def __init__(self, critic, k):
        super().__init__()
        self.critic, self.k, self.calls = critic, k, 0

    def features(self, x):
        return self.critic.features(x)

    def score(self, h, labels):
        self.calls += 1
        out = self.critic.score(h, labels)
        return out * float("nan") if self.calls == self.k else out

    def forward(self, x, labels):
        return self.score(self.features(x), labels)


def test_the_wgan_gp_step_skips_the_generator_update_whose_loss_is_nan():
    torch.manual_seed(0)
    G = cgan.ConditionalGenerator((1, 28, 28), 10, z_dim=8, channels=4)
    D = cgan.ConditionalDiscriminator((1, 28, 28), 10, channels=4, batch_norm=False)
    step = cgan.wgan_gp_step(G, NaNOnCall(D, 4), torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()),
                            n_critic=1)
    g0, d0 = weights(G), weights(D)
    with pytest.raises(training.NonFiniteLossError, match="'loss_G' became nan at epoch 1, step 1"):
        training.train(step, toy().batches(16), 1)
    g_params = {k: v for k, v in weights(G).items() if "running" not in k and "num_batches" not in k}
    assert same(g_params, {k: g0[k] for k in g_params}) and not same(weights(D), d0) and finite(D)


def test_a_step_without_the_guard_is_told_its_weights_may_be_broken():
    def step(x, y):
        return {"loss": torch.tensor(float("inf"))}

    with pytest.raises(training.NonFiniteLossError,
                       match="after the step had run.*require_finite.*may now hold non-finite weights") as err:
        training.train(step, toy().batches(16), 1)
    assert not err.value.update_skipped


def test_epochs_below_one_are_refused():
    for epochs, error in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match=r"epochs must be"):
            training.train(lambda x, y: {"loss": 0.0}, toy().batches(16), epochs)


def test_an_empty_dataset_is_refused_not_trained_on_silently():
    empty = data.TensorData(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="batches is empty"):
        training.train(lambda x, y: {"loss": 0.0}, empty.batches(16), 2)
    with pytest.raises(ValueError, match="yielded nothing in epoch 1"):  # no len(): found while iterating
        training.train(lambda x, y: {"loss": 0.0}, iter([]), 1)


def test_evaluate_on_nothing_is_an_error_not_an_empty_dict():
    with pytest.raises(ValueError, match="evaluate got no batches"):
        training.evaluate(lambda x, y: {"loss": torch.tensor(1.0)}, [])


def test_a_one_shot_iterator_for_several_epochs_is_refused():
    with pytest.raises(TypeError, match="one-shot iterator.*after the first of 3 epochs.*data.batches"):
        training.train(lambda x, y: {"loss": 0.0}, (b for b in toy().batches(16)), 3)
    h = training.train(lambda x, y: {"loss": 0.0}, (b for b in toy().batches(16)), 1)  # one epoch is fine
    assert h.images_seen == 64


# =========================================================================== checkpoints


@dataclass
class Inner:
    root: Path = Path("data")


def test_configs_with_numpy_scalars_paths_and_tuples_are_stored_as_plain_values_and_load(ckdir):
    config = {"lr": np.float64(1e-3), "epochs": np.int64(3), "root": Path("/tmp/x"), "betas": (0.5, np.float32(0.25)),
              "inner": Inner(), "dtype": torch.float32, "flag": np.bool_(True)}
    checkpoints.save_checkpoint(MLPClassifier((1, 28, 28), 10, hidden=4), "plain", config)
    _, payload = checkpoints.load_checkpoint("plain", expect_config=config)  # compares as stored
    assert payload["config"] == {"lr": 1e-3, "epochs": 3, "root": "/tmp/x", "betas": (0.5, 0.25),
                                 "inner": {"root": "data"}, "dtype": "torch.float32", "flag": True}
    assert type(payload["config"]["lr"]) is float and type(payload["config"]["epochs"]) is int


def test_arrays_and_tensors_in_a_config_are_stored_and_compared(ckdir):
    config = {"mean": np.array([0.5, 0.25]), "w": torch.ones(3), np.int64(7): "seven"}
    checkpoints.save_checkpoint(MLPClassifier((1, 28, 28), 10, hidden=4), "arrays", config)
    assert checkpoints.matching_checkpoint("arrays", config)
    assert not checkpoints.matching_checkpoint("arrays", {**config, "w": torch.zeros(3)})
    assert checkpoints.read_checkpoint("arrays")["config"]["mean"] == [0.5, 0.25]


def test_a_value_that_cannot_load_back_is_refused_at_save_time_naming_its_key(ckdir):
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"config\['act'\] is of type builtin_function_or_method.*plain"):
        checkpoints.save_checkpoint(MLPClassifier((1, 28, 28), 10, hidden=4), "act", {"act": torch.relu})
    with pytest.raises(checkpoints.CheckpointError, match=r"extra\['history'\]\['opt'\]\[1\] is of type object"):
        checkpoints.save_checkpoint(MLPClassifier((1, 28, 28), 10, hidden=4), "act", history={"opt": [1, object()]})
    assert not ckdir.exists() or not list(ckdir.iterdir())  # nothing written, no temporary left


def test_what_a_safe_load_could_not_read_back_is_never_saved(ckdir, monkeypatch):
    model = MLPClassifier((1, 28, 28), 10, hidden=4)
    checkpoints.save_checkpoint(model, "readback", {"v": 1})
    with monkeypatch.context() as m:
        m.setattr(checkpoints, "to_plain", lambda value, where="": value)  # as if the conversion missed one
        with pytest.raises(checkpoints.CheckpointError, match="was not saved: the file written cannot be loaded back"):
            checkpoints.save_checkpoint(model, "readback", {"v": Path("x")})
    assert checkpoints.read_checkpoint("readback")["config"] == {"v": 1}
    assert [p.name for p in ckdir.iterdir()] == ["readback.pt"]


def test_fit_or_load_refuses_an_unstorable_config_before_training_and_keeps_a_run_it_cannot_save(ckdir, monkeypatch,
                                                                                               capsys):
    ran = []
    model = MLPClassifier((1, 28, 28), 10, hidden=4)
    with pytest.raises(checkpoints.CheckpointError, match=r"config\['act'\]"):
        training.fit_or_load("clf", model, {"act": torch.relu}, lambda: ran.append(1) or training.History(),
                             reuse=False)
    assert ran == []                                                       # refused before any training

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_checkpoint", disk_full)
    history = training.History(images_seen=5)
    out, h = training.fit_or_load("clf", model, {"a": 1}, lambda: history, reuse=False)
    assert out is model and h is history and "NOT saved (OSError" in capsys.readouterr().out


@pytest.mark.parametrize("reuse", [True, False])
def test_fit_or_load_keeps_an_unreadable_file_aside_instead_of_overwriting_it(ckdir, capsys, reuse):
    ckdir.mkdir(parents=True)
    (ckdir / "clf.pt").write_bytes(b"a learner's file")
    model = MLPClassifier((1, 28, 28), 10, hidden=4)
    training.fit_or_load("clf", model, {"a": 1}, training.History, reuse=reuse)
    aside = [p for p in ckdir.iterdir() if p.name.startswith("clf.pt.unreadable-")]
    assert len(aside) == 1 and aside[0].read_bytes() == b"a learner's file"
    assert checkpoints.matching_checkpoint("clf", {"a": 1})               # the new one is there too
    assert f"kept as {aside[0].name}" in capsys.readouterr().out


def forge(name, **changes):
    path = checkpoints.save_checkpoint(MLPClassifier((1, 28, 28), 10, hidden=4), name, {})
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("kwargs, message", [
    ({"image_shape": (1, 28, 28), "n_classes": 10, "hidden": 4, "dropout": 0.5}, "unexpected keyword argument 'dropout'"),
    ({"image_shape": (1, 28, 28), "hidden": 4}, "missing a required argument: 'n_classes'"),
    ({"image_shape": "big", "n_classes": 10, "hidden": 4}, "cannot be built"),
])
def test_constructor_arguments_from_a_file_are_checked_before_a_model_is_built(ckdir, kwargs, message):
    forge("forged", model_kwargs=kwargs)
    with pytest.raises(checkpoints.CheckpointError, match=message):
        checkpoints.load_checkpoint("forged")


def test_a_file_cannot_make_the_loader_allocate_an_absurd_model(ckdir):
    forge("huge", model_kwargs={"image_shape": (1, 28, 28), "n_classes": 10, "hidden": 10**12})  # 3 PB of weights
    with pytest.raises(checkpoints.CheckpointError, match=r"do not fit MLPClassifier.*trunk.1.weight \(4, 784\) "
                       r"\(model \(1000000000000, 784\)\)"):
        checkpoints.load_checkpoint("huge")


def test_two_threads_saving_to_one_path_both_succeed(ckdir):
    model, errors = MLPClassifier((1, 28, 28), 10, hidden=300), []

    def save(i):
        try:
            for j in range(4):
                checkpoints.save_checkpoint(model, "shared", {"thread": i, "j": j})
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and checkpoints.read_checkpoint("shared")["config"]["j"] == 3
    assert [p.name for p in ckdir.iterdir()] == ["shared.pt"]


def test_an_exception_during_a_save_removes_the_temporary_and_keeps_the_old_file(ckdir, monkeypatch):
    model = MLPClassifier((1, 28, 28), 10, hidden=4)
    checkpoints.save_checkpoint(model, "keep", {"v": 1})

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        checkpoints.save_checkpoint(model, "keep", {"v": 2})
    assert [p.name for p in ckdir.iterdir()] == ["keep.pt"] and checkpoints.read_checkpoint("keep")["config"] == {"v": 1}


def test_temporaries_of_killed_processes_are_cleaned_up_and_live_ones_kept(ckdir):
    ckdir.mkdir(parents=True)
    host = storage._HOST
    dead = ckdir / f".model.pt.{host}-999999999.abc123.tmp"        # no such process here
    alive = ckdir / f".model.pt.{host}-{os.getppid()}.def456.tmp"  # our parent: running
    other_host = ckdir / ".model.pt.elsewhere-999999999.abc.tmp"  # a shared folder: not ours to judge
    other = ckdir / f".other.pt.{host}-999999999.abc123.tmp"       # another checkpoint's
    for p in (dead, alive, other_host, other):
        p.write_bytes(b"x")
    checkpoints.save_checkpoint(MLPClassifier((1, 28, 28), 10, hidden=4), "model", {})
    assert not dead.exists() and alive.exists() and other_host.exists() and other.exists()


@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_ctrl_c_or_sigterm_during_a_save_waits_for_it_then_ends_as_usual(ckdir, monkeypatch, signum, expected):
    model = MLPClassifier((1, 28, 28), 10, hidden=50)
    checkpoints.save_checkpoint(model, "sig", {"v": 1})
    if signum == signal.SIGTERM:  # e.g. a job runner's handler that exits cleanly
        def exit_cleanly(s, frame):
            raise SystemExit(143)
        old = signal.signal(signal.SIGTERM, exit_cleanly)
    else:  # Python's own Ctrl-C handler, even where the test runner was started with SIGINT ignored (cmd &)
        old = signal.signal(signal.SIGINT, signal.default_int_handler)
    real_save, handler = torch.save, signal.getsignal(signum)

    class Interrupted(io.RawIOBase):  # Ctrl-C arrives while torch's zip writer is writing
        def __init__(self, f):
            self.f, self.calls = f, 0

        def writable(self):
            return True

        def write(self, b):
            self.calls += 1
            if self.calls == 3:
                signal.raise_signal(signum)
            return self.f.write(b)

    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, Interrupted(f), *a, **k))
    try:
        with pytest.raises(expected):
            checkpoints.save_checkpoint(model, "sig", {"v": 2})
        assert signal.getsignal(signum) is handler  # the caller's handler is back
    finally:
        signal.signal(signum, old)
    # the signal waited for the save: the new file is whole and in place, no temporary is left
    assert checkpoints.read_checkpoint("sig")["config"] == {"v": 2}
    assert [p.name for p in ckdir.iterdir()] == ["sig.pt"]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_no_error_message_suggests_loading_with_weights_only_false(ckdir, tmp_path):
    ckdir.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"format": checkpoints.FORMAT, "x": RunsCode(marker)}, ckdir / "evil.pt")
    (ckdir / "junk.pt").write_bytes(b"not a zip at all")
    for name in ("evil", "junk"):
        with pytest.raises(checkpoints.CheckpointError) as err:
            checkpoints.load_checkpoint(name)
        assert "weights_only" not in str(err.value) and "Delete it" in str(err.value)
    assert not marker.exists()


# =========================================================================== data


def write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + np.asarray(array).astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)


def mnist(root, images=None, labels=None, n=20):
    rng = np.random.default_rng(0)
    folder = root / "MNIST" / "raw"
    for split in ("train", "test"):
        write_idx(folder / (data.IDX_FILES[split][0] + ".gz"), rng.integers(0, 256, (n, 28, 28)) if images is None else images)
        write_idx(folder / (data.IDX_FILES[split][1] + ".gz"), rng.integers(0, 10, n) if labels is None else labels)
    return folder


def _truncate(f):
    f.write_bytes(f.read_bytes()[:60])


def _random(f):
    f.write_bytes(np.random.default_rng(1).bytes(500))


def _labels_as_images(f):
    shutil.copy(f.parent / "train-labels-idx1-ubyte.gz", f)


def _bad_size_header(f):
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:4] + struct.pack(">i", 999) + raw[8:]))


def _rank_4(f):
    write_idx(f, np.zeros((20, 1, 28, 28)))


def _wrong_size(f):
    write_idx(f, np.zeros((20, 32, 32)))


@pytest.mark.parametrize("damage, message", [
    (_truncate, "is damaged: EOFError"), (_random, "is damaged: BadGzipFile"),
    (_labels_as_images, r"should hold 28x28 images \(rank 3\), but holds an array shaped \(20,\)"),
    (_bad_size_header, "truncated or damaged: its header says \\(999, 28, 28\\)"),
    (_rank_4, r"should hold 28x28 images \(rank 3\)"), (_wrong_size, r"shaped \(20, 32, 32\)"),
])
def test_a_damaged_idx_file_is_an_error_naming_the_file_and_the_fix(tmp_path, monkeypatch, damage, message):
    import torchvision.datasets as tvd

    def no_download(*args, **kwargs):  # a download would find the damaged files in place and keep them
        raise AssertionError("a download was attempted over damaged files")

    monkeypatch.setattr(tvd, "MNIST", no_download)
    f = mnist(tmp_path) / "train-images-idx3-ubyte.gz"
    damage(f)
    with pytest.raises(data.CorruptDatasetError, match=message) as err:
        data.load_dataset("mnist", "train", root=tmp_path)
    assert str(f) in str(err.value) and "delete it" in str(err.value)


def test_labels_outside_the_class_range_are_an_error(tmp_path):
    folder = mnist(tmp_path, labels=np.full(20, 12))
    with pytest.raises(data.CorruptDatasetError, match=r"labels up to 12, but the dataset has 10 classes") as err:
        data.load_dataset("mnist", "train", root=tmp_path)
    assert str(folder / "train-labels-idx1-ubyte.gz") in str(err.value)


def test_svhn_labels_out_of_range_and_unreadable_mat_files_are_named(tmp_path):
    from scipy.io import savemat
    (tmp_path / "SVHN").mkdir()
    path = tmp_path / "SVHN" / "test_32x32.mat"
    savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[11], [1]], np.uint8)})
    with pytest.raises(data.CorruptDatasetError, match=r"SVHN labels run from 1 to 10, found 1 to 11"):
        data.load_dataset("svhn", "test", root=tmp_path)
    path.write_bytes(b"MATLAB? no")
    with pytest.raises(data.CorruptDatasetError, match=rf"{path} is not a readable SVHN .mat file.*delete it"):
        data.load_dataset("svhn", "test", root=tmp_path)


def test_any_source_with_labels_outside_its_classes_is_refused(tmp_path):
    from common.machinery import dsprites
    n = 20
    classes = np.zeros((n, 6), dtype=np.int64)
    classes[:, 1] = 5                                      # shape 5: dSprites has three shapes
    (tmp_path / "dsprites").mkdir()
    np.savez(tmp_path / "dsprites" / dsprites.NPZ_NAME, imgs=np.zeros((n, 64, 64), np.uint8), latents_classes=classes)
    with pytest.raises(data.CorruptDatasetError, match=r"labels must be class indices 0-2, found 5 to 5"):
        data.load_dataset("dsprites", "train", root=tmp_path)


def test_a_damaged_copy_in_data_does_not_hide_a_good_copy_further_down(tmp_path, monkeypatch):
    good = tmp_path / "debian"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        write_idx(good / (data.IDX_FILES[split][0] + ".gz"), rng.integers(0, 256, (30, 28, 28)))
        write_idx(good / (data.IDX_FILES[split][1] + ".gz"), rng.integers(0, 10, 30))
    monkeypatch.setattr(sources, "REGISTRY", dict(sources.REGISTRY))
    sources.REGISTRY["fashion_mnist"] = sources._idx_reader(
        "fashion_mnist", "FashionMNIST", "FashionMNIST", data.FASHION_MNIST_CLASSES, good, "")
    local = tmp_path / "root" / "FashionMNIST" / "raw"
    local.mkdir(parents=True)
    (local / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    (local / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=f"used {good}, because {local}/t10k-images-idx3-ubyte.gz is damaged"):
        d = data.load_dataset("fashion_mnist", "test", root=tmp_path / "root")
    assert len(d) == 30 and d.source == str(good)


def test_a_damaged_image_in_a_folder_is_named(tmp_path):
    from PIL import Image
    for i in range(12):
        Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(tmp_path / f"img{i}.png")
    (tmp_path / "img3.png").write_bytes(b"not a png")
    with pytest.raises(data.CorruptDatasetError, match=r"img3.png is not a readable image.*delete or replace it"):
        for split in ("train", "test"):
            data.load_dataset(f"image_folder:{tmp_path}", split, root=tmp_path / "cache_root")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"limit": 0}, ValueError, "limit .* must be >= 1, got 0"),
    ({"limit": -5}, ValueError, "limit .* must be >= 1, got -5"),
    ({"limit": 2.5}, TypeError, "limit .* must be a whole number"),
    ({"image_size": 0}, ValueError, "image_size .* must be >= 1"),
    ({"image_size": 2}, ValueError, "image_size must be at least 4"),
    ({"image_size": 30.5}, TypeError, "image_size .* whole number"),
    ({"name": 3}, TypeError, "name must be a dataset name"),
])
def test_nonsense_arguments_to_load_dataset_are_refused(kwargs, error, message):
    args = {"name": "fashion_mnist", "split": "test", **kwargs}
    with pytest.raises(error, match=message):
        data.load_dataset(**args)


def test_nonsense_subset_and_by_class_sizes_are_refused():
    d = data.load_dataset("fashion_mnist", "test", limit=50)
    with pytest.raises(ValueError, match=r"subset\(n\): n must be >= 1, got -3"):
        d.subset(-3)
    with pytest.raises(ValueError, match=r"per_class must be >= 1, got 0"):
        d.by_class(0)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("svhn", "SVHN"), ("celeba", "celeba"),
                                          ("imagenette", "imagenette2-160/train"), ("fashion_mnist", "FashionMNIST/raw")])
def test_every_offline_hint_names_the_exact_folder_the_loader_reads(tmp_path, monkeypatch, name, folder):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    for cls in ("MNIST", "FashionMNIST", "SVHN", "CelebA", "Imagenette"):
        monkeypatch.setattr(tvd, cls, offline)
    monkeypatch.setattr(sources, "REGISTRY", dict(sources.REGISTRY))
    sources.REGISTRY["fashion_mnist"] = sources._idx_reader(  # as on a machine without the Debian package
        "fashion_mnist", "FashionMNIST", "FashionMNIST", data.FASHION_MNIST_CLASSES, tmp_path / "no-debian",
        "copy the four Fashion-MNIST .gz files into {folder}/")
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_dataset(name, "train", root=tmp_path)
    fix = str(err.value).split("To fix:")[1]
    assert str(tmp_path / folder) in fix


# =========================================================================== models


G = dcgan.DCGANGenerator((1, 28, 28), z_dim=8, channels=4)
CG = cgan.ConditionalGenerator((1, 28, 28), 10, z_dim=8, channels=4)


@pytest.mark.parametrize("n, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError)])
def test_sample_n_must_be_a_positive_int(n, error):
    with pytest.raises(error, match=r"sample\(n\): n must be"):
        G.sample(n)
    assert G.sample(np.int64(3)).shape == (3, 1, 28, 28)


def test_large_samples_are_generated_in_chunks_with_their_labels(monkeypatch):
    monkeypatch.setattr(CG, "sample_chunk", 100)
    sizes = []
    hook = CG.project.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    labels = torch.arange(250) % 10
    torch.manual_seed(0)
    out = CG.sample(250, labels)
    hook.remove()
    torch.manual_seed(0)
    parts = [CG.sample(len(i), labels[i]) for i in torch.arange(250).split(100)]
    assert sizes == [100, 100, 50] and out.shape == (250, 1, 28, 28) and torch.equal(out, torch.cat(parts))


@pytest.mark.parametrize("labels, error, message", [
    (torch.tensor([0.7, 1.9, 2.2]), TypeError, "labels must be integer class indices, got torch.float32"),
    (torch.tensor([[1], [2], [3]]), ValueError, r"shaped \(3,\); got shape \(3, 1\)"),
    (torch.tensor([1, 2]), ValueError, r"shaped \(3,\); got shape \(2,\)"),
    (torch.tensor([True, False, True]), TypeError, "integer class indices"),
    ([1, 2, 10], ValueError, r"labels must be in \[0, 9\] \(10 classes\), got values from 1 to 10"),
])
def test_labels_must_be_integers_one_per_sample_in_range(labels, error, message):
    with pytest.raises(error, match=message):
        CG.sample(3, labels)


def test_a_bad_label_message_stays_short_for_many_samples():
    with pytest.raises(ValueError) as err:
        CG.sample(5000, torch.full((5000,), 11))
    assert len(str(err.value)) < 120


MODELS = {  # name -> (model, the input range it takes)
    "MLPVAE": (vae.MLPVAE((1, 28, 28), latent_dim=2, hidden=8), (0, 1)),
    "ConvVAE": (vae.ConvVAE((1, 28, 28), latent_dim=2, channels=4, hidden=8), (0, 1)),
    "VQVAE": (vqvae.VQVAE((1, 28, 28), num_codes=8, code_dim=4, channels=4), (0, 1)),
    "DCGANDiscriminator": (dcgan.DCGANDiscriminator((1, 28, 28), channels=4), (-1, 1)),
    "ConditionalDiscriminator": (cgan.ConditionalDiscriminator((1, 28, 28), 10, channels=4), (-1, 1)),
    "MLPClassifier": (MLPClassifier((1, 28, 28), 10, hidden=8), (0, 1)),
    "ConvClassifier": (ConvClassifier((1, 28, 28), 10, width=4), (0, 1)),
}


def call(name, model, x):
    """The door every batch for ``model`` passes: the training loop's first batch runs it."""
    checks.check_batch(x, model)


@pytest.mark.parametrize("name", list(MODELS))
def test_encoders_discriminators_and_losses_check_shape_and_range(name):
    """The door check names the model, the shape, the range with its usual fix, the dtype and NaN."""
    model, (low, high) = MODELS[name]
    ok = torch.rand(4, 1, 28, 28) * (high - low) + low
    call(name, model, ok)
    with pytest.raises(ValueError, match=rf"{name} expects a batch shaped \(B, 1, 28, 28\), got \(4, 1, 32, 32\)"):
        call(name, model, torch.rand(4, 1, 32, 32))
    hint = r"x / 255" if low == 0 else r"to_tanh_range\(x / 255\)"
    with pytest.raises(ValueError, match=rf"expects values in \[{low}, 1\], got a batch in .*{hint}"):
        call(name, model, torch.rand(4, 1, 28, 28) * 255)
    with pytest.raises(ValueError, match=r"got a batch in \[.*\]; rescale it to .*undo that"):
        call(name, model, torch.rand(4, 1, 28, 28) * 1.5 + 0.2)              # e.g. normalized data
    with pytest.raises(TypeError, match="expects float images, got torch.uint8.*/ 255"):
        call(name, model, torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    nan = ok.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN"):
        call(name, model, nan)
    if low == 0:
        with pytest.raises(ValueError, match=r"expects values in \[0, 1\], got a batch in \[-.*\(x \+ 1\) / 2"):
            call(name, model, torch.rand(4, 1, 28, 28) * 2 - 1)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_value_range_is_checked_on_the_first_training_batch(name):
    """A range check makes the host wait for a GPU, so the training loop checks the first batch of
    a run only (``train(..., check=model)``), before any step runs; the models keep no state for it."""
    model, (low, high) = MODELS[name]
    state = dict(vars(model))
    ran = []
    step = lambda x, y: ran.append(len(x)) or {"loss": 0.0}  # noqa: E731
    y = torch.zeros(4, dtype=torch.long)
    good = (torch.rand(4, 1, 28, 28) * (high - low) + low, y)
    with pytest.raises(ValueError, match=rf"{name} expects values in \[{low}, 1\]"):
        training.train(step, [(good[0] * 255, y), good], 1, check=model)   # a bad first batch is refused
    assert ran == []                                                     # before any step ran
    with pytest.raises(TypeError, match="expects float images"):
        training.train(step, [(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), y)], 1, check=model)
    training.train(step, [good, (good[0] + 0.5, y)], 2, check=model)     # later batches: not checked
    assert ran == [4, 4, 4, 4] and vars(model).keys() == state.keys()    # no hidden state on the model


def test_a_bernoulli_vae_refuses_minus_one_to_one_data_instead_of_a_negative_nll():
    model = MODELS["MLPVAE"][0].eval()
    with pytest.raises(ValueError, match=r"MLPVAE expects values in \[0, 1\]"):
        call("MLPVAE", model, torch.rand(8, 1, 28, 28) * 2 - 1)
    latent = vae.MLPVAE((6,), latent_dim=2, hidden=8, likelihood="gaussian", sigma2=1.0, bounded=False)
    x = torch.randn(5, 6) * 10
    call("latent VAE", latent, x)                                        # unbounded data: any values
    assert torch.isfinite(latent.loss(x)["loss"])


# =========================================================================== FID


@pytest.fixture(scope="module")
def fm():
    return data.load_dataset("fashion_mnist", "test").subset(600)


@pytest.fixture(scope="module")
def ext():
    return features.get_extractor("domain")


@pytest.mark.parametrize("transform, message", [
    (lambda x: x * 2 - 1, r"expects values in \[0, 1\], got a batch in \[-1, 1\].*\(x \+ 1\) / 2"),
    (lambda x: x * 255, r"got a batch in \[0, 255\].*x / 255"),
    (lambda x: x[:, 0], r"shaped \(N, C, H, W\), got shape \(\d+, 28, 28\).*unsqueeze\(1\)"),
])
def test_fid_refuses_images_outside_zero_one_with_a_hint(fm, ext, tmp_path, monkeypatch, transform, message):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        fid.fid(transform(fm[:500][0]), fm, 500, ext, progress=False)


def test_uint8_images_are_converted_not_misread(fm, ext, tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    as_uint8 = fid.fid(fm.images[:500], fm, 500, ext, progress=False)
    as_float = fid.fid(fm[:500][0], fm, 500, ext, progress=False)
    assert as_uint8.value == pytest.approx(as_float.value, abs=1e-9) and as_uint8.value < 1


@pytest.mark.parametrize("shape", [(1, 64, 64), (3, 28, 28)])
def test_fid_refuses_images_of_another_size_or_channels_than_the_reference(fm, ext, tmp_path, monkeypatch, shape):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    x = torch.rand(500, *shape)
    with pytest.raises(ValueError, match=rf"images of {'x'.join(map(str, shape))} but the reference "
                       r"fashion_mnist/test has 1x28x28"):
        fid.fid(x, fm, 500, "inception", progress=False)


def test_nan_images_or_features_are_an_error_never_a_nan_fid(fm, ext, tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    x = fm[:500][0].clone()
    x[3, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="contains NaN"):
        fid.fid(x, fm, 500, ext, progress=False)

    class Broken(features.FeatureExtractor):
        name, id, dim, batch_size, device = "broken", "broken-0", 4, 100, torch.device("cpu")

        def __call__(self, images):
            out = torch.ones(len(images), 4)
            out[0, 0] = float("nan")
            return out

    with pytest.raises(ValueError, match="broken features of .* contain NaN or infinite values"):
        fid.fid(fm[:500][0], fm, 500, Broken(), progress=False)


def test_asking_for_more_images_than_a_source_has_names_it_briefly(fm, ext, tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"^asked for N = 500 images but a tensor of 100 images has only 100$"):
        fid.fid(fm[:100][0], fm, 500, ext, progress=False)
    result = fid.fid(fm[:500][0], fm, 500, ext, progress=False)
    assert result.source == "a tensor of 500 images" and len(str(result)) < 150
    assert fid_stats.describe(fm) == "fashion_mnist/test"


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a zip", "NaN inside"])
def test_a_damaged_reference_cache_is_recomputed_with_a_warning(fm, ext, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    good = fid.reference_stats(fm, 500, ext, progress=False)
    (path,) = (tmp_path / "fid_stats").glob("*.npz")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not a zip":
        path.write_text("hello")
    else:
        np.savez(path, mu=good.mu * np.nan, sigma=good.sigma, n=good.n, extractor_id=good.extractor_id, source="x")
    with pytest.warns(UserWarning, match=f"{path.name} is not readable FID statistics.*recomputing it"):
        again = fid.reference_stats(fm, 500, ext, progress=False)
    assert np.array_equal(again.mu, good.mu) and fid.FIDStats.load(path).n == 500  # and the file is good again


def test_the_reference_cache_is_written_atomically_and_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync, real_savez = os.fsync, np.savez
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    old = fid.FIDStats(np.zeros(3), np.eye(3), 10, "x", "old", (1, 28, 28))
    path = old.save(tmp_path / "s.npz")
    assert synced and [p.name for p in tmp_path.iterdir()] == ["s.npz"]

    def dies_halfway(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        fid.FIDStats(np.ones(3), np.eye(3), 10, "x", "new").save(path)
    monkeypatch.setattr(np, "savez", real_savez)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]            # no temporary left behind
    kept = fid.FIDStats.load(path)
    assert kept.source == "old" and kept.image_shape == (1, 28, 28)     # the old file is whole


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_the_extractor_id_depends_on_the_weights_content_not_their_path(tmp_path):
    a, b = tmp_path / "a" / "w.pt", tmp_path / "b" / "renamed.pt"
    for p in (a, b):
        p.parent.mkdir()
        shutil.copy(features.DOMAIN_WEIGHTS, p)
    assert features.DomainExtractor("cpu", a).id == features.DomainExtractor("cpu", b).id
    net = torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    net.save(str(tmp_path / "i1.pt"))
    shutil.copy(tmp_path / "i1.pt", tmp_path / "i2.pt")
    ids = {features.InceptionExtractor("cpu", weights=p).id for p in (tmp_path / "i1.pt", tmp_path / "i2.pt")}
    assert len(ids) == 1
    torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())).save(str(tmp_path / "i3.pt"))
    assert features.InceptionExtractor("cpu", weights=tmp_path / "i3.pt").id not in ids  # other weights, other id


def test_without_a_model_the_first_training_batch_must_still_be_finite_floats():
    ran = []
    step = lambda x, y: ran.append(1) or {"loss": 0.0}  # noqa: E731
    y = torch.zeros(2, dtype=torch.long)
    bad = torch.rand(2, 3)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="first batch that contains NaN"):
        training.train(step, [(bad, y)], 1)
    with pytest.raises(TypeError, match="expects float tensors, got torch.uint8"):
        training.train(step, [(torch.zeros(2, 3, dtype=torch.uint8), y)], 1)
    assert ran == []
    training.train(step, [(torch.randn(2, 3) * 100, y)], 1)          # any finite floats: a latent VAE's data
    assert ran == [1]
