"""CelebA's aligned faces read from torchvision's folder layout, its two text files checked line by line.

The images are decoded into the uint8 cache as the other folders' are (:func:`.folders._from_files`);
the 40 attributes travel as ``attributes``. Registered in :data:`common.machinery.sources.REGISTRY`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .folders import _follows_links_out, _from_files, _refuse_links_out
from .sources import FOLDER_SIZE, CorruptDatasetError, DatasetNotFoundError, RawSplit, _not_found, _try_download

CELEBA_SPLITS = {"train": 0, "test": 2}  # list_eval_partition.txt: 0 train, 1 valid, 2 test


def _celeba_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line of one of CelebA's text files."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise _celeba_error(path, line, f"byte {raw[err.start:err.start + 1]!r} is not UTF-8 text") from None
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise _celeba_error(path, None, "the file is empty")
    return rows


def _celeba_error(path: Path, line: int | None, what: str) -> CorruptDatasetError:
    where = f"{path}, line {line}" if line else str(path)
    return CorruptDatasetError(f"{where}: {what}. The file is damaged or not CelebA's: download {path.name} again "
                               "from the CelebA page (mmlab.ie.cuhk.edu.hk/projects/CelebA.html)"
                               + (f", or mend line {line}" if line else ""))


def _celeba_partition(path: Path, images_dir: Path) -> dict[str, int]:
    """``list_eval_partition.txt``: one 'FILE SPLIT' a line, FILE a plain name in ``images_dir``."""
    split_of, first = {}, {}
    for n, fields in _celeba_rows(path):
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise _celeba_error(path, n, f"expected 'FILE SPLIT' with SPLIT 0 (train), 1 (valid) or 2 (test), "
                                         f"found {' '.join(fields)!r}")
        name = fields[0]
        if name in (".", "..") or Path(name).name != name or "\\" in name:  # no folders, no way out of images_dir
            raise _celeba_error(path, n, f"{name!r} is not a plain file name in {images_dir} (e.g. 000001.jpg)")
        if name in first:
            raise _celeba_error(path, n, f"{name} is listed again (first on line {first[name]})")
        first[name], split_of[name] = n, int(fields[1])
    return split_of


def _celeba_attributes(path: Path, wanted: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """``list_attr_celeba.txt``: the number of rows, the attribute names, then one row a file of
    its name and one 1 or -1 per attribute. Returns the names and ``wanted``'s rows as 0/1."""
    rows = _celeba_rows(path)
    if len(rows) < 2 or len(rows[0][1]) != 1 or not rows[0][1][0].isdigit():
        raise _celeba_error(path, rows[0][0], "expected the number of rows on line 1 and the attribute names "
                                              "on line 2")
    count, names, values = int(rows[0][1][0]), tuple(rows[1][1]), {}
    for n, fields in rows[2:]:
        if len(fields) != len(names) + 1:
            raise _celeba_error(path, n, f"expected a file name and {len(names)} values of 1 or -1, "
                                         f"found {len(fields) - 1}")
        bad = [v for v in fields[1:] if v not in ("1", "-1")]
        if bad:
            raise _celeba_error(path, n, f"attribute values are 1 or -1, found {bad[0]!r}")
        values[fields[0]] = fields[1:]
    missing = [f for f in wanted if f not in values]
    if missing:
        more = f" nor for {len(missing) - 1} more images of list_eval_partition.txt" if len(missing) > 1 else ""
        raise _celeba_error(path, None, f"no row for {missing[0]}{more}")
    if len(rows) - 2 != count:
        raise _celeba_error(path, None, f"line 1 says {count} rows, but the file has {len(rows) - 2}")
    table = np.array([[v == "1" for v in values[f]] for f in wanted], dtype=np.int64)
    return names, table.reshape(len(wanted), len(names))


def read_celeba(split: str, root: Path, image_size: int | None, limit: int | None) -> RawSplit:
    """CelebA in torchvision's layout: ``celeba/img_align_celeba/*.jpg`` (178x218 aligned faces),
    ``list_eval_partition.txt`` (file, split) and ``list_attr_celeba.txt`` (count, 40 names, then
    file and forty +1/-1 values). Unlabelled: the attributes are kept as ``attributes``. Both text
    files are checked line by line; the partition may only name files directly inside
    ``img_align_celeba/``, and links there that lead out of it are read only with DGM_FOLLOW_LINKS=1."""
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
    images_dir = base / "img_align_celeba"
    partition = _celeba_partition(base / "list_eval_partition.txt", images_dir)
    wanted = sorted(f for f, s in partition.items() if s == CELEBA_SPLITS[split])
    names, attributes = _celeba_attributes(base / "list_attr_celeba.txt", wanted)
    files = [images_dir / f for f in wanted]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} images of list_eval_partition.txt are missing from "
                                   f"{images_dir}, e.g. {missing[0].name}; unzip img_align_celeba.zip again")
    inside = images_dir.resolve()
    if not _follows_links_out():
        _refuse_links_out(inside, [f"{f} -> {f.resolve()}" for f in files
                                   if f.is_symlink() and not f.resolve().is_relative_to(inside)])
    size = image_size or FOLDER_SIZE
    images, _, attributes = _from_files(files, np.zeros(len(files), np.int64), size, root, f"celeba-{split}", limit, attributes)
    return RawSplit(images, np.zeros(len(images), np.int64), (), "celeba", "celeba", str(base), attributes, names)
