"""Folders of image files (Imagenette, any image folder; CelebA in :mod:`.celeba`): decoded once into a uint8 cache.

Each file is decoded by :func:`.images.decode_one` (centre-cropped to a square, resized) into one
array under ``data/cache/<key>/`` (:func:`.decode_cache.decode_cached`). The readers here are
registered in :data:`common.machinery.sources.REGISTRY`.

Only files inside the folder given are read: symbolic links that lead out of it are refused,
naming them, unless ``DGM_FOLLOW_LINKS=1`` is set (:func:`_image_files`); a system root or the
home folder itself is refused, and so is a walk of more than :data:`MAX_WALKED` entries.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .decode_cache import decode_cached
from .runtime import _truthy
from .sources import FOLDER_SIZE, IMAGE_EXTENSIONS, ORDER_SEED, DatasetNotFoundError, RawSplit, _not_found, _try_download


def _shuffled(n: int) -> np.ndarray:
    return np.random.default_rng(ORDER_SEED).permutation(n)


FOLLOW_LINKS_VAR = "DGM_FOLLOW_LINKS"
MAX_WALKED = 2_000_000  # files and folders looked at in one walk: a data set's folder, not a disk


def _image_files(folder: Path, given: Path | None = None) -> list[Path]:
    """The image files under ``folder`` at any depth, sorted. ``given`` (default ``folder``) is the
    folder the user named: nothing outside it is read unless they choose so. Symbolic links that
    resolve inside it are followed (a link back to a folder above it is a loop and is skipped);
    links that resolve outside it are refused, naming them, unless ``DGM_FOLLOW_LINKS=1`` is set.
    Names that are not UTF-8 are refused (they cannot be recorded in a cache), and so is a folder
    of more than :data:`MAX_WALKED` entries."""
    given, top, follow_out = (given or folder).resolve(), folder.resolve(), _follows_links_out()
    if not (follow_out or top.is_relative_to(given)):
        _refuse_links_out(given, [f"{folder} -> {top}"])
    files, out, not_utf8, walked = [], [], [], 0
    stack = [(folder, (top,))]  # a folder, and the real folders from the top down to it
    while stack:
        here, above = stack.pop()
        with os.scandir(here) as entries:
            for entry in entries:
                walked += 1
                if walked > MAX_WALKED:
                    raise ValueError(f"{given} holds more than {MAX_WALKED:,} files and folders; point image_folder "
                                     "at the dataset's own folder (the one that holds its images or class folders)")
                is_dir = entry.is_dir()
                if not (is_dir or entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS):
                    continue
                path = here / entry.name
                real = path.resolve() if entry.is_symlink() else above[-1] / entry.name
                if real in above:
                    continue
                if not (follow_out or real.is_relative_to(given)):
                    out.append(f"{path} -> {real}")
                elif not _is_utf8(entry.name):
                    not_utf8.append(repr(os.fsencode(entry.name)))
                elif is_dir:
                    stack.append((path, above + (real,)))
                else:
                    files.append(path)
    _refuse_links_out(given, out)
    if not_utf8:
        raise ValueError(f"{given} holds {len(not_utf8)} names that are not UTF-8 text: {', '.join(not_utf8[:5])}; "
                         "rename them (e.g. in a file manager, or with convmv) to UTF-8 names")
    return sorted(files)


def _follows_links_out() -> bool:
    return _truthy(os.environ.get(FOLLOW_LINKS_VAR, ""))


def _refuse_links_out(given: Path, out: list[str]) -> None:
    """Refuse the links in ``out`` ("link -> target"), which lead out of ``given``, with the fix."""
    if out:
        raise ValueError(f"{given}: {len(out)} symbolic link(s) lead outside it and are not read: "
                         f"{'; '.join(out[:5])}{'; ...' if len(out) > 5 else ''}. To use them, copy them into "
                         f"{given} (cp -rL copies what links point to), or set {FOLLOW_LINKS_VAR}=1 to read "
                         "through links that leave the folder")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # an undecodable byte became a lone surrogate
        return True
    except UnicodeEncodeError:
        return False


def _from_files(files: list[Path], labels: np.ndarray, size: int, root: Path, key: str,
                limit: int | None, attributes: np.ndarray | None = None):
    """Decode files in the fixed shuffled order (only the first ``limit`` when given)."""
    order = _shuffled(len(files))[:limit]
    picked = [files[i] for i in order]
    key = f"{key}-{size}px" + (f"-first{len(picked)}" if len(picked) < len(files) else "")
    images = decode_cached(picked, size, root, key)
    return images, labels[order], (attributes[order] if attributes is not None else None)


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


def _check_test_layout(train: Path, classes: tuple[str, ...], test: Path, files: list[Path]) -> None:
    """``test`` must be laid out as ``train`` is: class sub-folders in both, or in neither."""
    top = sum(f.parent == test for f in files)
    if classes and top:
        raise ValueError(f"{test} holds {top} images directly at its top, but {train} sorts its images into class "
                         f"sub-folders ({', '.join(classes[:5])}); put each test image into the sub-folder of its "
                         f"class, as in train/: {test.name}/{classes[0]}/..., or remove {train}'s sub-folders")
    if not classes and top < len(files):
        nested = sorted({f.relative_to(test).parts[0] for f in files if f.parent != test})
        raise ValueError(f"{test} sorts its images into class sub-folders ({', '.join(nested[:5])}), but {train} "
                         f"holds its images directly at its top, without classes; put the training images into "
                         f"the same class sub-folders ({train.name}/{nested[0]}/...), or the test images directly "
                         f"into {test.name}/")


# Walking one of these reads a whole disk, a home or a system's files: never a data set.
SYSTEM_FOLDERS = ("/", "/bin", "/boot", "/etc", "/home", "/lib", "/lib64", "/opt", "/root", "/run", "/sbin",
                  "/srv", "/tmp", "/usr", "/var", "/Applications", "/Library", "/System", "/Users", "/Volumes")
PSEUDO_FILE_SYSTEMS = ("/proc", "/sys", "/dev")  # nothing under them either: their files can block or never end


def _refuse_system_folder(given: str, folder: Path) -> None:
    system = {Path(f).resolve() for f in SYSTEM_FOLDERS} | {Path.home().resolve(), Path(folder.anchor)}
    if folder in system or any(folder.is_relative_to(f) for f in PSEUDO_FILE_SYSTEMS):
        raise ValueError(f"image_folder:{given} is {folder}, a system folder or your home folder, not a data set's "
                         "folder: reading it would walk every file below it. Point image_folder at the folder "
                         "that holds the images, e.g. image_folder:~/Pictures/faces")


def read_image_folder(path: str) -> Callable:
    """The reader of ``image_folder:PATH``. Only files inside PATH are read (see :func:`_image_files`
    for symbolic links); PATH may not be a system root or the home folder itself."""
    folder = Path(path).expanduser().resolve()
    slug = f"image_folder-{folder.name}-{hashlib.sha1(os.fsencode(folder)).hexdigest()[:8]}"

    def read(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
        """``PATH/train`` and ``PATH/test`` (or ``PATH/val``) when the folder has them; otherwise
        the whole folder, split by a stable hash of each file's relative path (1 in 10 to test)."""
        _refuse_system_folder(path, folder)
        if not folder.is_dir():
            raise DatasetNotFoundError(f"image_folder: {folder} is not a folder. Give the path of a folder of "
                                       "images (class sub-folders become labels), e.g. image_folder:data/faces")
        if (folder / "train").is_dir():
            test_dirs = [folder / d for d in ("test", "val") if (folder / d).is_dir()]
            if split == "test" and not test_dirs:
                raise DatasetNotFoundError(f"{folder} has a train/ folder but no test/ or val/ folder")
            classes = _classes(folder / "train", _image_files(folder / "train", folder))
            base = folder / "train" if split == "train" else test_dirs[0]
            files = _image_files(base, folder)
            if split == "test":
                _check_test_layout(folder / "train", classes, base, files)
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


def read_imagenette(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
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


