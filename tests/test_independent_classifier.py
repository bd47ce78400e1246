"""The independent Fashion-MNIST classifier (issue 28): committed, hash-checked, as accurate as the
domain classifier on real test images, built differently, and used by no training loss."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from common import classifiers
from common.machinery import checkpoints, data, runtime
from tools.train_independent_classifier import shift_and_flip

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_independent_classifier_loads_hash_checked_and_classifies_real_test_images():
    model = classifiers.load_independent()
    record = json.loads((ROOT / "data" / "independent_classifier.json").read_text())
    assert isinstance(model, classifiers.IndependentClassifier) and not model.training
    test = data.load_dataset("fashion_mnist", "test")
    x, y = test[:len(test)]
    pred = model.predict(x)
    accuracy = (pred == y).float().mean().item()
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-4) and accuracy > 0.9
    per_class = classifiers.per_class_accuracy(pred, y, 10)
    assert per_class == pytest.approx(record["test_accuracy_per_class"], abs=1e-3)


def test_a_changed_independent_classifier_file_is_refused_naming_the_fix(tmp_path, monkeypatch):
    fake_root = tmp_path / "repo"
    (fake_root / "data").mkdir(parents=True)
    for name in ("independent_classifier.pt", "independent_classifier.json"):
        shutil.copy(ROOT / "data" / name, fake_root / "data" / name)
    with open(fake_root / "data" / "independent_classifier.pt", "ab") as f:
        f.write(b"\0")
    monkeypatch.setattr(runtime, "REPO_ROOT", fake_root)
    with pytest.raises(checkpoints.CheckpointError, match="SHA-256 differs.*train_independent_classifier"):
        classifiers.load_independent()
    (fake_root / "data" / "independent_classifier.json").unlink()
    with pytest.raises(FileNotFoundError, match="git checkout -- data/"):
        classifiers.load_independent()


def test_the_independent_classifier_is_built_unlike_the_domain_classifier():
    a = classifiers.IndependentClassifier((1, 28, 28), 10)
    b = classifiers.ConvClassifier((1, 28, 28), 10)
    kinds = lambda m: {type(x).__name__ for x in m.modules()}
    assert "BatchNorm2d" in kinds(b) and "BatchNorm2d" not in kinds(a)
    assert "MaxPool2d" in kinds(b) and "MaxPool2d" not in kinds(a) and "Dropout" in kinds(a)
    assert json.loads((ROOT / "data" / "independent_classifier.json").read_text())["recipe"]["seed"] != \
        json.loads((ROOT / "data" / "fid_domain_classifier.json").read_text())["recipe"]["seed"]


def test_no_training_code_uses_the_independent_classifier():
    users = sorted(str(p.relative_to(ROOT)) for folder in ("common", "tools", "notebooks")
                   for p in (ROOT / folder).rglob("*.py*") if "load_independent" in p.read_text(errors="ignore")
                   or "IndependentClassifier" in p.read_text(errors="ignore"))
    allowed = {"common/classifiers.py", "common/machinery/checkpoint_checks.py", "tools/pretrain.py",
               "tools/train_independent_classifier.py", "notebooks/05_fid.ipynb", "common/machinery/pretrained.py"}
    assert set(users) <= allowed, set(users) - allowed
    pretrain = (ROOT / "tools" / "pretrain.py").read_text()
    assert pretrain.count("judges") >= 2 and "def measure" in pretrain     # measuring only, after training


def test_shift_and_flip_moves_whole_pixels_with_zeros_coming_in_and_flips_left_right():
    x = torch.arange(2 * 4 * 5, dtype=torch.float).view(2, 1, 4, 5) + 1
    out = shift_and_flip(x, 0, torch.Generator().manual_seed(0))
    for i in range(2):                                            # shift 0: the image or its mirror
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    out = shift_and_flip(x.repeat(50, 1, 1, 1), 2, torch.Generator().manual_seed(1))
    assert out.shape == (100, 1, 4, 5) and set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    nonzero = out[out > 0]
    assert len(nonzero) > 0.5 * out.numel()                       # most pixels survive a shift of 2


def test_recognisable_counts_confident_samples_and_class_shares_without_touching_the_global_seed():
    class Fixed(torch.nn.Module):                    # a "generator" of ones, and a judge that is sure
        device = torch.device("cpu")

        def sample(self, n):
            return torch.ones(n, 1, 28, 28)

    class Judge(torch.nn.Module):
        def forward(self, x):
            logits = torch.full((len(x), 10), -10.0)
            logits[: len(x) // 4, 3] = 10.0         # a quarter sure of class 3, the rest unsure of class 0
            logits[len(x) // 4:, 0] = -9.9
            return logits

    state = torch.get_rng_state()
    share, classes = classifiers.recognisable(Fixed(), Judge(), n=400)
    assert torch.equal(torch.get_rng_state(), state)
    assert share == pytest.approx(0.25) and classes[3] == pytest.approx(0.25) and classes[0] == pytest.approx(0.75)
