"""Where each dataset's images come from: one reader per on-disk format, and the registry.

Every reader takes ``(split, root, image_size, limit)`` and returns a :class:`RawSplit` of uint8
images (N, C, H, W) in a fixed random order (so the first ``limit`` items are a random subset).
:func:`common.machinery.data.load_dataset` is the public entry point; this module is what it dispatches to.

| name | read from (under ``root``, i.e. ``data/``) | else |
|---|---|---|
| fashion_mnist | ``FashionMNIST/raw/`` (IDX), then ``/usr/share/datasets/fashion-mnist`` | torchvision download |
| mnist | ``MNIST/raw/`` (IDX) | torchvision download |
| svhn | ``SVHN/{train,test}_32x32.mat`` | torchvision download |
| celeba | ``celeba/img_align_celeba/`` + ``list_eval_partition.txt`` + ``list_attr_celeba.txt`` | torchvision download (often refused by Google Drive) |
| dsprites | ``dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` | generated from its factors (``dsprites-procedural``) |
| imagenette | ``imagenette2-160/`` (or ``-320``, or full) ``{train,val}/<wnid>/*.JPEG`` | torchvision download |
| image_folder:PATH | PATH, class sub-folders as labels when present | (a folder you give) |

Folders of JPEG/PNG files (CelebA, Imagenette, image folders) are centre-cropped, resized and
decoded once into a uint8 cache under ``data/cache/`` (:func:`decode_cached`); later loads
memory-map it after checking its size, shape and SHA-256.
"""
from __future__ import annotations

import gzip
import importlib
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS = tuple(str(d) for d in range(10))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLITS = ("train", "test")
FOLDER_SIZE = 64  # default side of images decoded from files (CelebA, Imagenette, image folders)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ORDER_SEED = 0    # the fixed shuffle of every decoded split


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset could be found or downloaded; the message says what was tried."""


class CorruptDatasetError(ValueError):
    """A dataset file exists but cannot be what it claims to be; the message names the file and
    the fix (delete it and fetch it again)."""


@dataclass
class RawSplit:
    """One split as a reader returns it: uint8 images (N, C, H, W) and int64 labels (zeros and
    ``classes == ()`` when the dataset has none), plus optional per-image attributes."""

    images: np.ndarray | torch.Tensor
    labels: np.ndarray | torch.Tensor
    classes: tuple[str, ...]
    name: str                       # for people, e.g. "dsprites-procedural"
    slug: str                       # for file names, e.g. "image_folder-faces-1a2b3c4d"
    source: str                     # where the images were read from
    attributes: np.ndarray | torch.Tensor | None = None   # (N, A) ints: CelebA attributes, dSprites factors
    attribute_names: tuple[str, ...] = ()


def _not_found(what: str, tried: list[str], fix: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"Could not find {what}. Tried:\n  - " + "\n  - ".join(tried) + f"\nTo fix: {fix}")


def _try_download(label: str, fn: Callable[[], object], tried: list[str]) -> bool:
    """Run a torchvision download; on failure record why in ``tried`` (offline is the usual case)."""
    try:
        fn()
        return True
    except Exception as err:  # noqa: BLE001 - any failure is reported with the other attempts
        tried.append(f"{label}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
        return False


# --------------------------------------------------------------------------- IDX (MNIST format)
REFETCH = "delete it and run again (it is downloaded when there is a network), or copy a good copy there"


def read_idx(path: str | Path, fix: str = REFETCH) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a uint8 array.

    The header is two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    then one big-endian int32 per dimension. A damaged file is a :class:`CorruptDatasetError`.
    """
    path = Path(path)
    try:
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # not PermissionError & co: the file may be fine
        raise CorruptDatasetError(f"{path} is damaged: {type(err).__name__}: {err}; {fix}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CorruptDatasetError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4]!r}); {fix}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise CorruptDatasetError(f"{path} is truncated inside its header; {fix}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if min(shape, default=0) < 0 or data.size != int(np.prod(shape)):
        raise CorruptDatasetError(f"{path} is truncated or damaged: its header says {shape} "
                                  f"({int(np.prod(shape)):,} bytes), but it holds {data.size:,}; {fix}")
    return data.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx_split(folder: Path, split: str, n_classes: int, fix: str = REFETCH
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (N, 1, 28, 28), labels (N,)) of a split's two IDX files, each checked: images must
    be a rank-3 file of 28x28 images, labels a rank-1 file of class indices."""
    side = 28
    files = [_idx_file(folder, stem) for stem in IDX_FILES[split]]
    if None in files:
        return None
    images, labels = (read_idx(f, fix) for f in files)
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise CorruptDatasetError(f"{files[0]} should hold {side}x{side} images (rank 3), but holds an array "
                                  f"shaped {images.shape}; is it another file under this name? {fix}")
    if labels.ndim != 1:
        raise CorruptDatasetError(f"{files[1]} should hold one label per image (rank 1), but holds an array "
                                  f"shaped {labels.shape}; {fix}")
    if len(images) != len(labels):
        raise CorruptDatasetError(f"{folder}: {len(images)} images but {len(labels)} labels for {split!r}; "
                                  f"one of the two files is from another split or damaged; {fix}")
    if len(labels) and int(labels.max()) >= n_classes:
        raise CorruptDatasetError(f"{files[1]} has labels up to {int(labels.max())}, but the dataset has "
                                  f"{n_classes} classes (0-{n_classes - 1}); {fix}")
    return images[:, None], labels  # add the channel axis: (N, 1, 28, 28)


def _idx_reader(name: str, folder_name: str, tv_class: str, classes: tuple[str, ...],
                debian_dir: Path | None, hint: str) -> Callable:
    """A reader for an MNIST-format dataset: local folders first, then a torchvision download."""

    def read(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
        tried, damaged = [], []
        local = root / folder_name / "raw"
        for folder in [local] + ([debian_dir] if debian_dir else []):
            fix = REFETCH if folder == local else ("this is the system's copy: reinstall it with "
                                                   "sudo apt-get install --reinstall dataset-fashion-mnist")
            try:
                found = _read_idx_split(folder, split, len(classes), fix=fix)
            except CorruptDatasetError as err:  # a damaged copy must not hide a good one further on
                damaged.append(str(err))
                tried.append(f"{folder}: damaged")
                continue
            if found is not None:
                if damaged:
                    warnings.warn(f"{name}: used {folder}, because " + "; and ".join(damaged))
                return RawSplit(*found, classes, name, name, source=str(folder))
            tried.append(f"{folder}: no {' / '.join(IDX_FILES[split])} (.gz)")
        if damaged:  # a download would see the damaged files in place and keep them
            raise CorruptDatasetError("; and ".join(damaged) + "\nTried:\n  - " + "\n  - ".join(tried))
        import torchvision.datasets as tvd
        if _try_download(f"torchvision {tv_class} download into {root}",
                         lambda: getattr(tvd, tv_class)(root=str(root), train=(split == "train"), download=True), tried):
            found = _read_idx_split(local, split, len(classes))
            if found is not None:
                return RawSplit(*found, classes, name, name, source=f"{local} (downloaded)")
            tried.append(f"torchvision {tv_class} download into {root}: finished but the files are missing")
        raise _not_found(f"the {split!r} split of {name}", tried, hint.format(folder=local))

    return read


# --------------------------------------------------------------------------- SVHN (.mat)
def _read_svhn(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
    """SVHN's cropped digits: ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) with 10 for the digit 0."""
    folder = root / "SVHN"
    path = folder / f"{split}_32x32.mat"
    tried = []
    if not path.is_file():
        tried.append(f"{path}: missing")
        import torchvision.datasets as tvd
        _try_download(f"torchvision SVHN download into {folder}",
                      lambda: tvd.SVHN(root=str(folder), split=split, download=True), tried)
    if not path.is_file():
        raise _not_found(f"the {split!r} split of svhn", tried,
                         f"put train_32x32.mat and test_32x32.mat (from the SVHN page, 'Format 2: Cropped "
                         f"Digits') into {folder}/, or run once with a network")
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"].reshape(-1)
    except Exception as err:  # noqa: BLE001
        raise CorruptDatasetError(f"{path} is not a readable SVHN .mat file ({type(err).__name__}: "
                                  f"{str(err)[:160]}); {REFETCH}") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise CorruptDatasetError(f"{path}: expected X of shape (32, 32, 3, N) and N labels, got {x.shape} "
                                  f"and {len(y)}; {REFETCH}")
    if x.dtype != np.uint8:  # as published; float 0..1 would become zeros and wider integers would wrap
        raise CorruptDatasetError(f"{path}: X must be uint8 (0-255) as published, found {_values(x)}; {REFETCH}, "
                                  "or convert yours: X.astype(np.uint8) if it holds whole numbers 0-255, "
                                  "(X * 255).round().astype(np.uint8) if 0-1")
    if y.dtype.kind not in "iuf" or np.any(y != np.round(y)):  # MATLAB saves labels as doubles: 1.0 is fine
        bad = y.dtype if y.dtype.kind not in "iuf" else y[y != np.round(y)][0]
        raise CorruptDatasetError(f"{path}: SVHN labels must be whole numbers 1-10, found {bad}; {REFETCH}")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise CorruptDatasetError(f"{path}: SVHN labels run from 1 to 10, found {y.min():g} to {y.max():g}; {REFETCH}")
    y = y.astype(np.int64)
    y[y == 10] = 0  # SVHN labels the digit 0 as 10
    return RawSplit(np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y, DIGITS, "svhn", "svhn", source=str(path))


def _values(a: np.ndarray) -> str:
    """An array's dtype and value range, for messages: "float64 from 0 to 1"."""
    if a.dtype.kind not in "iuf" or not a.size:
        return str(a.dtype)
    return f"{a.dtype} from {a.min():g} to {a.max():g}"


# --------------------------------------------------------------------------- dSprites
def _read_dsprites(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
    """The official ``.npz`` when present, else the procedural generator (``common.machinery.dsprites``).
    Either way the split is a fixed 90 % / 10 % random split of the 737,280 factor combinations
    (dSprites has no official split), and the label is the shape."""
    from . import dsprites

    for path in (root / "dsprites" / dsprites.NPZ_NAME, root / dsprites.NPZ_NAME):
        if path.is_file():
            images, factors = dsprites.read_npz(path, split, limit)   # only the rows kept
            images *= np.uint8(255)             # 0/1 -> 0/255 in place; a tensor, so load_dataset keeps it uncopied
            return RawSplit(torch.from_numpy(images[:, None]), factors[:, 0], dsprites.SHAPES, "dsprites",
                            "dsprites", str(path), factors, dsprites.FACTOR_NAMES)
    idx = torch.from_numpy(dsprites.split_indices(split)[:limit])
    factors = dsprites.factors_of(idx)
    return RawSplit(dsprites.render(factors), factors[:, 0].numpy(), dsprites.SHAPES, "dsprites-procedural",
                    "dsprites_procedural", f"generated from its factors (no {dsprites.NPZ_NAME} in {root / 'dsprites'})",
                    factors.numpy(), dsprites.FACTOR_NAMES)


# --------------------------------------------------------------------------- the registry
REGISTRY: dict[str, Callable] = {
    "fashion_mnist": _idx_reader(
        "fashion_mnist", "FashionMNIST", "FashionMNIST", FASHION_MNIST_CLASSES, DEBIAN_FASHION_MNIST,
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, works offline), or copy the four "
        "Fashion-MNIST .gz files into {folder}/, or run once with a network"),
    "mnist": _idx_reader(
        "mnist", "MNIST", "MNIST", DIGITS, None,
        "copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz into {folder}/ (e.g. from a machine with a network: "
        "python -c \"import torchvision; torchvision.datasets.MNIST('data', download=True)\"), or run once with a network"),
    "svhn": _read_svhn,
    "celeba": lambda *args: _folders("celeba").read_celeba(*args),
    "dsprites": _read_dsprites,
    "imagenette": lambda *args: _folders().read_imagenette(*args),
}
LABELLED = ("fashion_mnist", "mnist", "svhn", "dsprites", "imagenette", "image_folder:PATH with class sub-folders")


def _folders(module: str = "folders"):
    """The readers of folders of image files (:mod:`.folders`, :mod:`.celeba`: they build on this module)."""
    return importlib.import_module(f".{module}", __package__)


def reader(name: str) -> tuple[str, Callable]:
    """(canonical name, reader) for a dataset name such as "Fashion-MNIST" or "image_folder:~/faces"."""
    key, _, arg = name.partition(":")
    key = key.strip().lower().replace("-", "_")
    if key == "image_folder":
        if not arg:
            raise ValueError("image_folder needs a path: image_folder:PATH (class sub-folders become labels)")
        return name, _folders().read_image_folder(arg)
    if key not in REGISTRY or arg:
        raise ValueError(f"Unknown dataset {name!r}. Known: {', '.join(sorted(REGISTRY))}, image_folder:PATH. "
                         "To add one, register a reader in common/machinery/sources.py REGISTRY.")
    return key, REGISTRY[key]
