import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from common import vae
from common.machinery import checkpoints
from common.classifiers import MLPClassifier


@dataclass
class Cfg:
    epochs: int = 3
    lr: float = 1e-3


@pytest.fixture
def ckdir(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DGM_PROFILE", "cpu")
    return tmp_path / "checkpoints" / "cpu"


def test_round_trip_in_another_process(ckdir):
    torch.manual_seed(0)
    model = vae.ConvVAE((1, 28, 28), latent_dim=3, channels=4, hidden=8)
    path = checkpoints.save_checkpoint(model, "conv", Cfg(), note="hello")
    assert path == ckdir / "conv.pt" and not list(ckdir.glob(".*tmp"))
    z = torch.randn(2, 3)
    torch.save(z, ckdir / "z.t")
    expected = model.decode(z)
    script = (
        "import torch, sys\n"
        "from common.machinery import checkpoints   # no model module imported first\n"
        "m, p = checkpoints.load_checkpoint(sys.argv[1])\n"
        "z = torch.load(sys.argv[2], weights_only=True)\n"
        "torch.save(m.decode(z), sys.argv[3])\n"
        "assert p['config'] == {'epochs': 3, 'lr': 1e-3} and p['extra'] == {'note': 'hello'}\n")
    subprocess.run([sys.executable, "-c", script, str(path), str(ckdir / "z.t"), str(ckdir / "out.t")],
                   check=True, env=dict(os.environ))
    assert torch.allclose(torch.load(ckdir / "out.t", weights_only=True), expected, atol=1e-6)


def test_load_rebuilds_same_model_and_checks_config(ckdir):
    model = MLPClassifier((1, 28, 28), 10, hidden=12)
    checkpoints.save_checkpoint(model, "clf", Cfg())
    loaded, payload = checkpoints.load_checkpoint("clf", expect_config=Cfg())
    assert isinstance(loaded, MLPClassifier) and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert checkpoints.matching_checkpoint("clf", Cfg()) and not checkpoints.matching_checkpoint("clf", Cfg(epochs=4))
    with pytest.raises(checkpoints.CheckpointError, match="epochs: checkpoint has 3, expected 4"):
        checkpoints.load_checkpoint("clf", expect_config=Cfg(epochs=4))


def test_loading_leaves_the_callers_random_numbers_alone(ckdir):
    checkpoints.save_checkpoint(MLPClassifier((1, 28, 28), 10, hidden=12), "clf", Cfg())
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    checkpoints.load_checkpoint("clf")  # builds a model (random init) before loading its weights
    assert torch.equal(torch.rand(4), expected), "loading a checkpoint consumed global random numbers"


def test_missing_corrupt_and_foreign_files(ckdir):
    with pytest.raises(checkpoints.CheckpointError, match="No checkpoint"):
        checkpoints.load_checkpoint("nothing")
    path = checkpoints.save_checkpoint(vae.MLPVAE((1, 28, 28), hidden=8), "m")
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(checkpoints.CheckpointError, match="corrupt.*Delete it"):
        checkpoints.load_checkpoint("m")
    torch.save({"weights": torch.zeros(2)}, ckdir / "other.pt")
    with pytest.raises(checkpoints.CheckpointError, match="not a dgm-course-checkpoint"):
        checkpoints.load_checkpoint(ckdir / "other.pt")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_loading_never_runs_pickled_code(ckdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckdir.mkdir(parents=True)
    torch.save({"format": checkpoints.FORMAT, "x": Exploit()}, ckdir / "evil.pt")
    with pytest.raises(checkpoints.CheckpointError, match="corrupt or not a course checkpoint"):
        checkpoints.load_checkpoint("evil")
    assert not (tmp_path / "pwned_marker").exists()


def test_weights_that_do_not_fit_and_unknown_classes(ckdir):
    path = checkpoints.save_checkpoint(vae.MLPVAE((1, 28, 28), hidden=8), "m")
    payload = torch.load(path, weights_only=True)
    payload["model_kwargs"]["hidden"] = 9
    torch.save(payload, path)
    with pytest.raises(checkpoints.CheckpointError, match="do not fit MLPVAE"):
        checkpoints.load_checkpoint("m")
    payload["model_class"] = "Mystery"
    torch.save(payload, path)
    with pytest.raises(checkpoints.CheckpointError, match="Mystery.*not one of the course.s model classes"):
        checkpoints.load_checkpoint("m")

    class Unregistered(torch.nn.Linear):
        hparams = {}

    with pytest.raises(checkpoints.CheckpointError, match="Unregistered is not one of the course.s model classes"):
        checkpoints.save_checkpoint(Unregistered(2, 2), "u")


def test_interrupted_save_leaves_old_checkpoint_intact(ckdir, monkeypatch):
    good = checkpoints.save_checkpoint(vae.MLPVAE((1, 28, 28), hidden=8), "m", Cfg())
    before = good.read_bytes()

    def dies_halfway(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(vae.MLPVAE((1, 28, 28), hidden=8), "m", Cfg(epochs=99))
    assert good.read_bytes() == before
    assert [p.name for p in ckdir.iterdir()] == ["m.pt"]  # no temporary file left behind
