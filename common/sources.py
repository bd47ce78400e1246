"""Where each dataset's images come from: one reader per on-disk format, and the registry.

Every reader takes ``(split, root, image_size, limit)`` and returns a :class:`RawSplit` of uint8
images (N, C, H, W) in a fixed random order (so the first ``limit`` items are a random subset).
:func:`common.data.load_dataset` is the public entry point; this module is what it dispatches to.

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
import hashlib
import json
import os
import shutil
import uuid
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .runtime import file_hash, progress

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
        x, y = mat["X"], mat["y"].astype(np.int64).reshape(-1)
    except Exception as err:  # noqa: BLE001
        raise CorruptDatasetError(f"{path} is not a readable SVHN .mat file ({type(err).__name__}: "
                                  f"{str(err)[:160]}); {REFETCH}") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise CorruptDatasetError(f"{path}: expected X of shape (32, 32, 3, N) and N labels, got {x.shape} "
                                  f"and {len(y)}; {REFETCH}")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise CorruptDatasetError(f"{path}: SVHN labels run from 1 to 10, found {y.min()} to {y.max()}; {REFETCH}")
    y[y == 10] = 0  # SVHN labels the digit 0 as 10
    return RawSplit(np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y, DIGITS, "svhn", "svhn", source=str(path))


# --------------------------------------------------------------------------- files -> uint8 cache
def _fingerprint(files: list[Path]) -> str:
    """Changes when a file is added, removed, renamed or resized."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f}\0{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _decode_one(path: Path, size: int) -> np.ndarray:
    """One image file -> (3, size, size) uint8: RGB, centre-cropped to a square, resized."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")  # decodes the file
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a damaged file
        raise CorruptDatasetError(f"{path} is not a readable image ({type(err).__name__}: {str(err)[:120]}); "
                                  "delete or replace it") from None
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def cache_dir(root: Path) -> Path:
    return root / "cache"


def decode_cached(files: list[Path], size: int, root: Path, key: str) -> np.ndarray:
    """Decode image files into one uint8 array (N, 3, size, size), cached under ``data/cache/key/``.

    The cache is written into a temporary folder and renamed into place when complete (an
    interrupted decode leaves nothing half-written), and is checked on every load: the recorded
    shape, file size and SHA-256 must match, and so must the list of source files. Returns a
    copy-on-write memory map, so a large split is not read into memory until it is used.
    """
    folder = cache_dir(root) / key
    meta_path, data_path = folder / "meta.json", folder / "images.npy"
    fingerprint = _fingerprint(files)
    shape = (len(files), 3, size, size)
    if meta_path.is_file() and data_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            ok = (meta["fingerprint"] == fingerprint and tuple(meta["shape"]) == shape
                  and data_path.stat().st_size == meta["bytes"] and file_hash(data_path) == meta["sha256"])
        except (OSError, ValueError, KeyError):
            ok = False
        if ok:
            return np.load(data_path, mmap_mode="c")
        print(f"{folder}: stale or damaged cache, decoding the images again")
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        out = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
                progress(total=len(files), desc=f"decoding {key} (once)", unit="img") as bar:
            for i, img in enumerate(pool.map(lambda f: _decode_one(f, size), files, chunksize=64)):
                out[i] = img
                bar.update()
        out.flush()
        del out
        meta = {"shape": shape, "bytes": (tmp / "images.npy").stat().st_size, "sha256": file_hash(tmp / "images.npy"),
                "fingerprint": fingerprint, "files": len(files), "source": str(files[0].parent) if files else ""}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return np.load(data_path, mmap_mode="c")


def _shuffled(n: int) -> np.ndarray:
    return np.random.default_rng(ORDER_SEED).permutation(n)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _from_files(files: list[Path], labels: np.ndarray, size: int, root: Path, key: str,
                limit: int | None, attributes: np.ndarray | None = None):
    """Decode files in the fixed shuffled order (only the first ``limit`` when given)."""
    order = _shuffled(len(files))[:limit]
    picked = [files[i] for i in order]
    key = f"{key}-{size}px" + (f"-first{len(picked)}" if len(picked) < len(files) else "")
    images = decode_cached(picked, size, root, key)
    return images, labels[order], (attributes[order] if attributes is not None else None)


# --------------------------------------------------------------------------- CelebA
CELEBA_SPLITS = {"train": 0, "test": 2}  # list_eval_partition.txt: 0 train, 1 valid, 2 test


def _read_celeba(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
    """CelebA in torchvision's layout: ``celeba/img_align_celeba/*.jpg`` (178x218 aligned faces),
    ``list_eval_partition.txt`` (file, split) and ``list_attr_celeba.txt`` (count, 40 names, then
    file and forty +1/-1 values). Unlabelled: the attributes are kept as ``attributes``."""
    base = root / "celeba"
    needed = [base / "img_align_celeba", base / "list_eval_partition.txt", base / "list_attr_celeba.txt"]
    tried = []
    if not all(p.exists() for p in needed):
        tried += [f"{p}: missing" for p in needed if not p.exists()]
        import torchvision.datasets as tvd
        _try_download(f"torchvision CelebA download into {base}",
                      lambda: tvd.CelebA(root=str(root), split="all", download=True), tried)
    if not all(p.exists() for p in needed):
        raise _not_found("CelebA", tried,
            f"torchvision's download from Google Drive is often refused even online. By hand: from the "
            f"CelebA page (mmlab.ie.cuhk.edu.hk/projects/CelebA.html) open the Google Drive or Baidu "
            f"links, download Img/img_align_celeba.zip, Anno/list_attr_celeba.txt and "
            f"Eval/list_eval_partition.txt, then unzip so that {base}/img_align_celeba/000001.jpg exists "
            f"and put the two .txt files in {base}/. Then nothing needs a network.")
    partition = dict(line.split() for line in (base / "list_eval_partition.txt").read_text().split("\n") if line.strip())
    lines = [line.split() for line in (base / "list_attr_celeba.txt").read_text().split("\n") if line.strip()]
    names = tuple(lines[1])
    attrs = {row[0]: row[1:] for row in lines[2:]}
    wanted = sorted(f for f, s in partition.items() if int(s) == CELEBA_SPLITS[split])
    files = [base / "img_align_celeba" / f for f in wanted]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} images of list_eval_partition.txt are missing from "
                                   f"{base / 'img_align_celeba'}, e.g. {missing[0].name}; unzip img_align_celeba.zip again")
    attributes = np.array([[int(v) > 0 for v in attrs[f]] for f in wanted], dtype=np.int64).reshape(len(wanted), len(names))
    size = image_size or FOLDER_SIZE
    images, _, attributes = _from_files(files, np.zeros(len(files), np.int64), size, root, f"celeba-{split}", limit, attributes)
    return RawSplit(images, np.zeros(len(images), np.int64), (), "celeba", "celeba", str(base), attributes, names)


# --------------------------------------------------------------------------- folders of images
def _classes(base: Path, files: list[Path]) -> tuple[str, ...]:
    """One class per sub-folder of ``base`` that holds images (at any depth below it); none when
    the images sit directly in ``base``."""
    top = [f for f in files if f.parent == base]
    nested = sorted({f.relative_to(base).parts[0] for f in files if f.parent != base})
    if top and nested:
        raise ValueError(f"{base} mixes {len(top)} images at its top with class sub-folders "
                         f"({', '.join(nested[:3])}...); move them into a sub-folder")
    return tuple(nested)


def _labels(base: Path, files: list[Path], classes: tuple[str, ...]) -> np.ndarray:
    if not classes:
        return np.zeros(len(files), np.int64)
    index = {c: i for i, c in enumerate(classes)}
    first = [f.relative_to(base).parts[0] for f in files]
    unknown = sorted(set(first) - set(index))
    if unknown:
        raise ValueError(f"{base} has class folders that the training split does not: {unknown[:5]}")
    return np.array([index[c] for c in first], dtype=np.int64)


def _read_image_folder(path: str) -> Callable:
    folder = Path(path).expanduser().resolve()
    slug = f"image_folder-{folder.name}-{hashlib.sha1(str(folder).encode()).hexdigest()[:8]}"

    def read(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
        """``PATH/train`` and ``PATH/test`` (or ``PATH/val``) when the folder has them; otherwise
        the whole folder, split by a stable hash of each file's relative path (1 in 10 to test)."""
        if not folder.is_dir():
            raise DatasetNotFoundError(f"image_folder: {folder} is not a folder. Give the path of a folder of "
                                       "images (class sub-folders become labels), e.g. image_folder:data/faces")
        if (folder / "train").is_dir():
            test_dirs = [folder / d for d in ("test", "val") if (folder / d).is_dir()]
            if split == "test" and not test_dirs:
                raise DatasetNotFoundError(f"{folder} has a train/ folder but no test/ or val/ folder")
            classes = _classes(folder / "train", _image_files(folder / "train"))
            base = folder / "train" if split == "train" else test_dirs[0]
            files = _image_files(base)
        else:
            base, every = folder, _image_files(folder)
            classes = _classes(folder, every)
            in_test = lambda f: int(hashlib.sha1(str(f.relative_to(folder)).encode()).hexdigest(), 16) % 10 == 0  # noqa: E731
            files = [f for f in every if in_test(f) == (split == "test")]
        if not files:
            raise DatasetNotFoundError(f"image_folder: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) for the "
                                       f"{split!r} split in {base}")
        images, labels, _ = _from_files(files, _labels(base, files, classes), image_size or FOLDER_SIZE,
                                        root, f"{slug}-{split}", limit)
        return RawSplit(images, labels, classes, f"image_folder:{folder.name}", slug, str(base))

    return read


# --------------------------------------------------------------------------- Imagenette
IMAGENETTE_CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
                      "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
                      "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
                      "n03888257": "parachute"}
IMAGENETTE_FOLDERS = ("imagenette2-160", "imagenette2-320", "imagenette2")


def _read_imagenette(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
    """fast.ai's Imagenette in torchvision's layout: ``imagenette2-160/{train,val}/<wnid>/*.JPEG``
    (the 160 px version is plenty for 64x64; 320 px or full size are used if present)."""
    tried = []
    found = [root / f for f in IMAGENETTE_FOLDERS if (root / f / "train").is_dir()]
    if not found:
        tried += [f"{root / f}/train: missing" for f in IMAGENETTE_FOLDERS]
        import torchvision.datasets as tvd
        if _try_download(f"torchvision Imagenette (160px) download into {root}",
                         lambda: tvd.Imagenette(root=str(root), split="train", size="160px", download=True), tried):
            found = [root / "imagenette2-160"]
    if not found:
        raise _not_found("Imagenette", tried,
                         f"download imagenette2-160.tgz (fast.ai's imagenette repository on GitHub links it) and "
                         f"extract it into {root}/ so that {root / 'imagenette2-160/train'} exists")
    base = found[0]
    folder = base / ("train" if split == "train" else "val")
    files = _image_files(folder)
    wnids = tuple(sorted(IMAGENETTE_CLASSES))  # the same ten classes in both splits
    images, labels, _ = _from_files(files, _labels(folder, files, wnids), image_size or FOLDER_SIZE,
                                    root, f"imagenette-{split}", limit)
    return RawSplit(images, labels, tuple(IMAGENETTE_CLASSES.get(w, w) for w in wnids),
                    "imagenette", "imagenette", str(folder))


# --------------------------------------------------------------------------- dSprites
def _read_dsprites(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
    """The official ``.npz`` when present, else the procedural generator (``common.dsprites``).
    Either way the split is a fixed 90 % / 10 % random split of the 737,280 factor combinations
    (dSprites has no official split), and the label is the shape."""
    from . import dsprites

    for path in (root / "dsprites" / dsprites.NPZ_NAME, root / dsprites.NPZ_NAME):
        if path.is_file():
            images, factors = dsprites.read_npz(path)
            idx = dsprites.split_indices(split, len(images))[:limit]
            return RawSplit(images[idx][:, None] * np.uint8(255), factors[idx, 0], dsprites.SHAPES, "dsprites",
                            "dsprites", str(path), factors[idx], dsprites.FACTOR_NAMES)
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
    "celeba": _read_celeba,
    "dsprites": _read_dsprites,
    "imagenette": _read_imagenette,
}
LABELLED = ("fashion_mnist", "mnist", "svhn", "dsprites", "imagenette", "image_folder:PATH with class sub-folders")


def reader(name: str) -> tuple[str, Callable]:
    """(canonical name, reader) for a dataset name such as "Fashion-MNIST" or "image_folder:~/faces"."""
    key, _, arg = name.partition(":")
    key = key.strip().lower().replace("-", "_")
    if key == "image_folder":
        if not arg:
            raise ValueError("image_folder needs a path: image_folder:PATH (class sub-folders become labels)")
        return name, _read_image_folder(arg)
    if key not in REGISTRY or arg:
        raise ValueError(f"Unknown dataset {name!r}. Known: {', '.join(sorted(REGISTRY))}, image_folder:PATH. "
                         "To add one, register a reader in common/sources.py REGISTRY.")
    return key, REGISTRY[key]
