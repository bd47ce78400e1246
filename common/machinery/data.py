"""Datasets held in memory as uint8 tensors and batched by indexing, behind one registry.

``load_dataset(name, split, image_size=None, device=..., limit=None)`` loads any of the course's
datasets: ``fashion_mnist`` (the default, offline from the Debian package), ``mnist``, ``svhn``,
``celeba``, ``dsprites`` (generated from its factors when the official file is absent, and then
named ``dsprites-procedural``), ``imagenette`` and ``image_folder:PATH``. Where each one is
looked for, and what a missing one says, is in :mod:`common.machinery.sources`. There is never a silent
fallback to random or fake data.

A split is one ``uint8`` tensor (N, C, H, W) on the training device (large decoded splits stay
memory-mapped on the CPU); batches are cut by indexing with a shuffled index tensor: no
per-item ``Dataset.__getitem__``, no PIL and no worker processes in the training loop.
``image_size`` resizes any dataset (e.g. MNIST at 32, SVHN at 64, as the reports did).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import runtime
from .checks import check_count
from .sources import (DIGITS, FASHION_MNIST_CLASSES, IDX_FILES, LABELLED, SPLITS,  # noqa: F401 (re-exported)
                      CorruptDatasetError, DatasetNotFoundError, read_idx, reader)

MNIST_CLASSES = DIGITS


# --------------------------------------------------------------------------- in memory
@dataclass
class ImageData:
    """A whole image dataset as tensors on one device.

    ``images`` is uint8 (N, C, H, W), ``labels`` int64 (N,). Indexing returns float images in
    [0, 1] and their labels: ``x, y = data[:64]`` or ``data[idx_tensor]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str
    classes: tuple[str, ...]            # () when the dataset has no labels (CelebA, a plain folder)
    slug: str = ""                      # the name as it may appear in a file name
    source: str = ""                    # where the images were read from
    attributes: torch.Tensor | None = None   # (N, A) per-image ints: CelebA attributes, dSprites factors
    attribute_names: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[idx].float().div_(255), self.labels[idx]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def labelled(self) -> bool:
        return len(self.classes) > 0

    @property
    def tag(self) -> str:
        """Dataset and image shape, for checkpoint and cache names: "fashion_mnist-1x28x28"."""
        return f"{self.slug or self.name}-{'x'.join(map(str, self.image_shape))}"

    def subset(self, n: int | None) -> "ImageData":
        """The first ``n`` items (every split is stored in random order), or all if ``n`` is None."""
        if n is not None:
            n = check_count(n, "subset(n): n")
        if n is None or n >= len(self):
            return self
        attributes = None if self.attributes is None else self.attributes[:n]
        return ImageData(self.images[:n], self.labels[:n], self.name, self.split, self.classes,
                         self.slug, self.source, attributes, self.attribute_names)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> "Batches":
        return Batches(self, batch_size, shuffle, seed, drop_last)

    def by_class(self, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``per_class`` images of each class, class by class (for figures). Without
        labels: the first ``per_class * 10`` images (one figure row of ``per_class``, ten rows)."""
        per_class = check_count(per_class, "by_class(per_class): per_class")
        if not self.labelled:
            return self[:per_class * 10]
        idx = torch.cat([torch.nonzero(self.labels == c).flatten()[:per_class]
                         for c in range(len(self.classes))])
        return self[idx]

    def first_of_class(self, c: int) -> int:
        """Index of the first image of class ``c`` (of image ``c`` when there are no labels)."""
        return int(torch.nonzero(self.labels == c)[0]) if self.labelled else c

    def __repr__(self) -> str:
        return (f"ImageData({self.name}/{self.split}: {len(self)} images of "
                f"{'x'.join(map(str, self.image_shape))} on {self.device})")


@dataclass
class TensorData:
    """Any pair of tensors batched like :class:`ImageData` (e.g. latent codes and their labels)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> "Batches":
        return Batches(self, batch_size, shuffle, seed, drop_last)


class Batches:
    """Iterates over shuffled mini-batches of an :class:`ImageData` or :class:`TensorData` by
    index slicing.

    Each pass (epoch) draws a new permutation from a generator seeded once with ``seed``, so two
    ``Batches`` built with the same seed give the same sequence of batches, epoch after epoch.
    """

    def __init__(self, data: "ImageData | TensorData", batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        batch_size = check_count(batch_size, "batch_size")
        self.data, self.batch_size, self.shuffle, self.drop_last = data, batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = (torch.randperm(n, generator=self.generator) if self.shuffle
                 else torch.arange(n)).to(self.data.device)
        for i in range(len(self)):
            yield self.data[order[i * self.batch_size:(i + 1) * self.batch_size]]


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> (N, C, size, size), bilinear with antialiasing, in chunks."""
    out = torch.empty(len(images), images.shape[1], size, size, dtype=torch.uint8, device=images.device)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].float()
        out[i:i + chunk] = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
    return out


def _as_tensor(a, dtype: torch.dtype, device) -> torch.Tensor:
    if torch.is_tensor(a):
        return a.to(device=device, dtype=dtype)
    if isinstance(a, np.memmap) and torch.device(device).type == "cpu":
        return torch.from_numpy(a)          # stays memory-mapped: pages are read when used
    return torch.from_numpy(np.array(a, dtype=np.dtype(str(dtype).split(".")[1]))).to(device)


def load_dataset(name: str = "fashion_mnist", split: str = "train", image_size: int | None = None,
                 device: torch.device | str = "cpu", root: str | Path | None = None,
                 limit: int | None = None) -> ImageData:
    """Load a split into memory on ``device``; ``limit`` keeps the first N (a random subset),
    ``image_size`` resizes to that side (default: the dataset's own, 64 for folders of images)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name such as 'fashion_mnist', got {type(name).__name__}")
    key, read = reader(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}")
    if limit is not None:
        limit = check_count(limit, "limit (the number of images to keep; None for all)")
    if image_size is not None:
        image_size = check_count(image_size, "image_size (the side in pixels; None for the dataset's own)")
        if image_size < 4:
            raise ValueError(f"image_size must be at least 4 pixels, got {image_size}")
    root = Path(root) if root is not None else runtime.data_dir()
    raw = read(split, root, image_size, limit)
    if raw.classes and len(raw.labels) and not 0 <= int(raw.labels.min()) <= int(raw.labels.max()) < len(raw.classes):
        raise CorruptDatasetError(f"{raw.source}: labels must be class indices 0-{len(raw.classes) - 1}, found "
                                  f"{int(raw.labels.min())} to {int(raw.labels.max())}; the files are damaged or "
                                  "mixed up: delete them and fetch them again")
    images, labels = raw.images[:limit], raw.labels[:limit]
    images = _as_tensor(images, torch.uint8, device)
    if image_size is not None and images.shape[-1] != image_size:
        images = resize(images, image_size)
    attributes = None if raw.attributes is None else _as_tensor(raw.attributes[:limit], torch.int64, device)
    return ImageData(images, _as_tensor(labels, torch.int64, device), raw.name, split, raw.classes,
                     raw.slug, raw.source, attributes, raw.attribute_names)


def require_labels(data: ImageData, why: str) -> None:
    """Refuse an unlabelled dataset with a message that says why labels are needed and which
    datasets have them."""
    if not data.labelled:
        raise ValueError(f"{data.name} has no class labels, and {why}. Use a labelled dataset: "
                         f"{', '.join(LABELLED)}.")
