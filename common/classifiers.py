"""Classifiers used by the course: to pretrain a VAE encoder (notebook 01) and to check what
class generated samples look like (notebooks 03-04).

Introduced in notebooks/01_vae.ipynb.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Module, eval_mode, mlp_trunk
from .machinery.checks import check_image_shape


class MLPClassifier(Module):
    """Flatten -> Linear(C*H*W, hidden) -> ReLU -> Linear(hidden, classes).

    ``trunk`` has exactly the layers of ``MLPVAE.trunk``, so its weights can initialise a VAE
    encoder: ``vae.trunk.load_state_dict(classifier.trunk.state_dict())``.
    """

    def __init__(self, image_shape: tuple, n_classes: int, hidden: int = 400):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self.trunk = mlp_trunk(math.prod(image_shape), hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of images ``x`` in [0, 1]."""
        return self.head(self.trunk(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y),
                "accuracy": (logits.argmax(1) == y).float().mean()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Predicted class of each image, in eval mode, batched to bound memory."""
        with eval_mode(self):
            return torch.cat([self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def load_or_train_mlp(train, device: torch.device | str = "cpu", epochs: int = 5, seed: int = 0
                      ) -> MLPClassifier:
    """The MLP classifier notebook 01 saves as ``classifier_mlp-<dataset tag>``; if that checkpoint
    is missing, the same recipe (C*H*W-400-classes, Adam 1e-3, batch 128) is trained on ``train``
    here. Eval mode. Notebooks 03 and 04 use it to check which class generated samples look like.
    """
    from . import training
    from .machinery import checkpoints

    name = f"classifier_mlp-{train.tag}"
    try:
        clf, _ = checkpoints.load_checkpoint(name, device)
        print(f"classifier: loaded {name}, saved by notebook 01")
        return clf
    except checkpoints.CheckpointError:
        print(f"classifier: notebook 01's {name} is missing, training the same one for {epochs} epochs")
    torch.manual_seed(seed)
    clf = MLPClassifier(train.image_shape, len(train.classes)).to(device)
    step = training.minimize(clf.loss, torch.optim.Adam(clf.parameters(), lr=1e-3))
    training.train(step, train.batches(128, seed=seed), epochs, check=clf, desc="classifier")
    return clf.eval()


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ConvClassifier(Module):
    """A small CNN, the feature network of the *domain* FID (notebook 05).

    One 3x3 conv block (conv, batch norm, ReLU) at full size, half and quarter size (28x28, 14x14,
    7x7 for Fashion-MNIST; widths w, 2w, 4w, max pooling between), then global average pooling
    to a ``4w``-dimensional vector,
    :meth:`features`, and one linear layer to the classes. Kept small so that features of 10,000
    images take seconds on a CPU. Like Inception-v3's 2048-d pool features, the FID features are
    the average over positions of the last ReLU maps, just before the classifier layer.
    """

    def __init__(self, image_shape: tuple, n_classes: int, width: int = 32):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        w = width
        self.body = nn.Sequential(
            _conv_block(self.image_shape[0], w), nn.MaxPool2d(2),
            _conv_block(w, 2 * w), nn.MaxPool2d(2),
            _conv_block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, n_classes)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4w) pooled features of images ``x`` in [0, 1]."""
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    loss = MLPClassifier.loss
    predict = MLPClassifier.predict


class IndependentClassifier(Module):
    """A second Fashion-MNIST judge, built unlike :class:`ConvClassifier` and never used in any
    training loss: 5x5 convolutions that halve the size by stride (no pooling, no batch norm),
    dropout, and a two-layer head on the flattened 7x7 maps (not a global average). Trained with
    random shifts and flips (``tools/train_independent_classifier.py``, seed 1), so what it calls
    a Sneaker is not what the course's own classifier, or a discriminator trained against a
    classifier of that kind, learned to call one. It measures the conditional models' class
    accuracy for the leaderboard (issue 28)."""

    def __init__(self, image_shape: tuple, n_classes: int, width: int = 32, hidden: int = 256):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        c, h, w = self.image_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 5, padding=2), nn.GELU(),
            nn.Conv2d(width, 2 * width, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 5, stride=2, padding=2), nn.GELU(), nn.Flatten())
        size = 2 * width * -(-h // 4) * -(-w // 4)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(size, hidden), nn.GELU(), nn.Dropout(0.3),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x - 0.5))

    loss = MLPClassifier.loss
    predict = MLPClassifier.predict


INDEPENDENT_WEIGHTS = "independent_classifier.pt"   # in data/, committed, with its .json record
INDEPENDENT_DATASET = "fashion_mnist-1x28x28"       # the one dataset it is trained for


def load_independent(device: torch.device | str = "cpu") -> IndependentClassifier:
    """The committed independent classifier (eval mode), its SHA-256 checked against its record."""
    import json

    from .machinery import checkpoints, runtime, storage
    path = runtime.REPO_ROOT / "data" / INDEPENDENT_WEIGHTS
    record = path.with_suffix(".json")
    if not (path.is_file() and record.is_file()):
        raise FileNotFoundError(f"{path} or its record {record.name} is missing: restore them with `git checkout -- "
                                f"data/` or train them with `python -m tools.train_independent_classifier`")
    if storage.file_hash(path) != json.loads(record.read_text())["sha256"]:
        raise checkpoints.CheckpointError(f"{path} is not the file its record {record.name} describes (SHA-256 "
                                          "differs): restore it with `git checkout -- data/` or retrain both "
                                          "with `python -m tools.train_independent_classifier`", "hash")
    return checkpoints.load_checkpoint(path, device)[0].eval()


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> list[float]:
    """The share of ``pred == labels`` among the items of each class, one number per class."""
    return [(pred[labels == c] == c).float().mean().item() for c in range(n_classes)]


@torch.no_grad()
def class_accuracy(generator, classifier: nn.Module, per_class: int, seed: int = 5) -> list[float]:
    """For a conditional generator: the share of ``per_class`` samples of every class that
    ``classifier`` assigns to the class they were asked for, one number per class.

    Compare with the classifier's accuracy on real test images of each class: a reference level,
    not a ceiling (samples more typical of their class than real ones can score above it). The
    noise comes from ``seed`` without touching the global random state."""
    if not getattr(generator, "conditional", False):
        raise ValueError(f"{type(generator).__name__} is not conditional: class accuracy needs a generator "
                         "that takes labels")
    k, device = generator.n_classes, generator.device
    labels = torch.arange(k, device=device).repeat_interleave(per_class)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        pred = classifier.predict(generator.sample(len(labels), labels))
    return per_class_accuracy(pred, labels, k)


@torch.no_grad()
def confident_share(images: torch.Tensor, classifier: nn.Module, threshold: float = 0.9
                    ) -> tuple[float, list[float]]:
    """The share of ``images`` to which ``classifier`` gives one class a probability of at least
    ``threshold``, and the share of the images it assigns to each class."""
    with eval_mode(classifier):
        probs = torch.cat([classifier(images[i:i + 1000]).softmax(1) for i in range(0, len(images), 1000)])
    confident = (probs.max(1).values >= threshold).float().mean().item()
    shares = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float() / len(images)
    return confident, shares.tolist()


@torch.no_grad()
def recognisable(generator, classifier: nn.Module, n: int = 1000, threshold: float = 0.9, seed: int = 5
                 ) -> tuple[float, list[float]]:
    """How recognisable an unconditional generator's samples are to ``classifier``: the share of
    ``n`` samples it gives one class a probability of at least ``threshold``, and the share of the
    samples in each class (a mode a generator dropped shows as a share near 0). The noise comes
    from ``seed`` without touching the global random state."""
    device = generator.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        images = generator.sample(n)
    return confident_share(images, classifier, threshold)
