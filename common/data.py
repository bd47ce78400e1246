"""Datasets held in memory as tensors and batched by indexing.

Fashion-MNIST is the course's default and is found *offline* first, in this order:

1. ``data/FashionMNIST/raw/`` (torchvision's layout, ``.gz`` or unpacked IDX files);
2. ``/usr/share/datasets/fashion-mnist/`` (Debian/Ubuntu: ``apt-get install dataset-fashion-mnist``);
3. a torchvision download into ``data/`` (needs a network).

If all fail, :class:`DatasetNotFoundError` lists what was tried and how to get the data. There is
never a silent fallback to random or fake data.

A 28x28 dataset is small (60,000 x 784 bytes = 47 MB), so it is loaded once into one ``uint8``
tensor on the training device and batches are cut by indexing with a shuffled index tensor;
there is no per-item ``Dataset.__getitem__``, no PIL and no worker processes.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import runtime

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLITS = ("train", "test")


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset could be found or downloaded; the message says what was tried."""


# --------------------------------------------------------------------------- IDX files
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a uint8 array.

    The header is two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    then one big-endian int32 per dimension.
    """
    path = Path(path)
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad header {raw[:4]!r}); "
                         "delete it and let the loader fetch a fresh copy")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} bytes; "
                         "delete it and fetch it again")
    return data.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    files = [_idx_file(folder, stem) for stem in IDX_FILES[split]]
    if None in files:
        return None
    images, labels = (read_idx(f) for f in files)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels for {split!r}")
    return images[:, None], labels  # add the channel axis: (N, 1, 28, 28)


def _idx_dataset(folder_name: str, tv_class: str, debian_dir: Path | None, install_hint: str
                 ) -> Callable[[str, Path], tuple[np.ndarray, np.ndarray]]:
    """A loader for an MNIST-format dataset: local folders first, then a torchvision download."""

    def load(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
        tried = []
        folders = [root / folder_name / "raw"] + ([debian_dir] if debian_dir else [])
        for folder in folders:
            found = _read_idx_split(folder, split)
            if found is not None:
                return found
            tried.append(f"{folder}: no {' / '.join(IDX_FILES[split])} (.gz)")
        try:
            import torchvision.datasets as tvd
            getattr(tvd, tv_class)(root=str(root), train=(split == "train"), download=True)
            found = _read_idx_split(root / folder_name / "raw", split)
            if found is not None:
                return found
            tried.append(f"torchvision {tv_class} download into {root}: finished but files missing")
        except Exception as err:  # noqa: BLE001 - any failure is reported with the others
            tried.append(f"torchvision {tv_class} download into {root}: {type(err).__name__}: {err}")
        raise DatasetNotFoundError(
            f"Could not find the {split!r} split of {folder_name}. Tried:\n  - "
            + "\n  - ".join(tried) + f"\nTo fix: {install_hint}")

    return load


def _torchvision_dataset(name: str) -> Callable[[str, Path], tuple[np.ndarray, np.ndarray]]:
    """SVHN and CelebA come only from torchvision (a network is needed the first time)."""

    def load(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
        import torchvision.datasets as tvd
        try:
            if name == "svhn":
                ds = tvd.SVHN(root=str(root / "SVHN"), split=split, download=True)
                return ds.data, ds.labels  # (N, 3, 32, 32) uint8, digits 0-9
            ds = tvd.CelebA(root=str(root), split="test" if split == "test" else "train",
                            target_type="attr", download=True)
            raise NotImplementedError(  # the obvious place to add a 64x64 CelebA pipeline
                f"CelebA was found ({len(ds)} images) but the course has no 64x64 in-memory "
                "pipeline for it yet; add one in common/data.py (_torchvision_dataset)")
        except NotImplementedError:
            raise
        except Exception as err:  # noqa: BLE001
            raise DatasetNotFoundError(
                f"{name} is only available through a torchvision download into {root}, which "
                f"failed: {type(err).__name__}: {err}\nTo fix: run once with a network, or copy "
                f"torchvision's {name} files into {root}") from err

    return load


DATASETS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "fashion_mnist": (_idx_dataset(
        "FashionMNIST", "FashionMNIST", DEBIAN_FASHION_MNIST,
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, works offline), or copy the "
        "four Fashion-MNIST .gz files into data/FashionMNIST/raw/, or run once with a network"),
        FASHION_MNIST_CLASSES),
    "mnist": (_idx_dataset(
        "MNIST", "MNIST", None,
        "copy the four MNIST .gz files into data/MNIST/raw/, or run once with a network"),
        MNIST_CLASSES),
    "svhn": (_torchvision_dataset("svhn"), MNIST_CLASSES),
    "celeba": (_torchvision_dataset("celeba"), ()),
}


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
    classes: tuple[str, ...]

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

    def subset(self, n: int | None) -> "ImageData":
        """The first ``n`` items (the files are already in random order), or all if ``n`` is None."""
        if n is None or n >= len(self):
            return self
        return ImageData(self.images[:n], self.labels[:n], self.name, self.split, self.classes)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> "Batches":
        return Batches(self, batch_size, shuffle, seed, drop_last)

    def by_class(self, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``per_class`` images of each class, class by class (for figures)."""
        idx = torch.cat([torch.nonzero(self.labels == c).flatten()[:per_class]
                         for c in range(len(self.classes))])
        return self[idx]

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
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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


def load_dataset(name: str = "fashion_mnist", split: str = "train",
                 device: torch.device | str = "cpu", root: str | Path | None = None,
                 limit: int | None = None) -> ImageData:
    """Load a dataset split into memory on ``device``; ``limit`` keeps the first N items."""
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Known: {', '.join(sorted(DATASETS))}. "
                         "To add one, register a loader in common/data.py DATASETS.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}")
    loader, classes = DATASETS[key]
    root = Path(root) if root is not None else runtime.data_dir()
    images, labels = loader(split, root)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = torch.from_numpy(np.array(images, dtype=np.uint8)).to(device)  # a writable copy
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    return ImageData(images, labels, key, split, classes)
