"""Bad input in folders of images (issue 27): pixel modes that were clipped, decompression bombs,
symbolic links and paths that leave the folder, system folders, EXIF orientation, undecodable file
names, mixed layouts and damaged CelebA text files. One test per guard, named after it."""
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from common.machinery import data, folders, images
from test_data import png, write_celeba


def load(folder, split="train", root=None, **kwargs):
    return data.load_dataset(f"image_folder:{folder}", split, root=root or folder.parent / "root", **kwargs)


def decoded(path, size=64):
    """What the decoder makes of one file: (size, size, 3) uint8."""
    return images.decode_one(path, size).transpose(1, 2, 0)


# --------------------------------------------------------------------------- pixel modes


GRADIENT16 = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1))  # 0 .. 65535 left to right


@pytest.mark.parametrize("name, array", [("g16.png", GRADIENT16), ("g16b.tif", GRADIENT16.astype(">u2"))])
def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path, name, array):
    Image.fromarray(array).save(tmp_path / name)
    assert Image.open(tmp_path / name).mode in ("I;16", "I;16B")
    got = decoded(tmp_path / name)
    expected = np.round(GRADIENT16 / 257)
    assert np.abs(got[..., 0].astype(int) - expected).max() <= 1  # was [0, 64, 128, 192, 255, 255, ...]
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_float_tiff_in_zero_to_one_is_scaled_to_0_255(tmp_path):
    values = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    got = decoded(tmp_path / "f.tif")[..., 0]
    assert np.abs(got.astype(int) - np.round(values * 255)).max() <= 1  # was all 0 and 1


@pytest.mark.parametrize("values, shown", [(np.linspace(0, 1000, 64), "0 to 1e+03"),
                                           (np.linspace(-1, 1, 64), "-1 to 1")])
def test_float_tiff_outside_zero_to_one_is_refused_naming_file_and_mode(tmp_path, values, shown):
    Image.fromarray(np.tile(values.astype(np.float32), (64, 1)), mode="F").save(tmp_path / "depth.tif")
    with pytest.raises(data.CorruptDatasetError) as err:
        decoded(tmp_path / "depth.tif")
    msg = str(err.value)
    assert str(tmp_path / "depth.tif") in msg and "mode F" in msg and shown in msg
    assert "rescale it to [0, 1]" in msg and "8-bit" in msg


def test_int32_tiff_beyond_sixteen_bits_is_refused_and_within_is_scaled(tmp_path):
    wide = np.tile(np.linspace(0, 2**20, 64).astype(np.int32), (64, 1))
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    assert Image.open(tmp_path / "wide.tif").mode == "I"
    with pytest.raises(data.CorruptDatasetError) as err:
        decoded(tmp_path / "wide.tif")
    msg = str(err.value)
    assert str(tmp_path / "wide.tif") in msg and "mode I" in msg and "1048576" in msg and "8-bit" in msg
    Image.fromarray(GRADIENT16.astype(np.int32)).save(tmp_path / "narrow.tif")
    assert np.abs(decoded(tmp_path / "narrow.tif")[..., 0].astype(int) - np.round(GRADIENT16 / 257)).max() <= 1


# --------------------------------------------------------------------------- decompression bombs


def bilevel_png(path, width, height):
    """A black 1-bit PNG written row by row: a file of a few KB that decodes to width x height pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte, then the packed bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_an_image_of_too_many_pixels_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    side = 6000  # 36 million pixels, under Pillow's own limit (89 million), in a file of a few KB
    assert side * side > images.MAX_DECODED_PIXELS and images.MAX_DECODED_PIXELS <= Image.MAX_IMAGE_PIXELS // 5
    for i in range(3):
        png(tmp_path / "ds" / "train" / f"{i}.png")
    bilevel_png(tmp_path / "ds" / "train" / "bomb.png", side, side)
    assert (tmp_path / "ds" / "train" / "bomb.png").stat().st_size < 50_000
    decoded_files, load_pixels = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: decoded_files.append(Path(self.filename).name) or load_pixels(self))
    with pytest.raises(data.CorruptDatasetError) as err:
        load(tmp_path / "ds")
    assert "bomb.png" not in decoded_files  # was decoded: 36 MB, then 108 MB of RGB
    msg = str(err.value)
    assert str(tmp_path / "ds" / "train" / "bomb.png") in msg and "6000x6000" in msg
    assert "shrink it" in msg and "MAX_DECODED_PIXELS" in msg
    bilevel_png(tmp_path / "huge.png", 14_000, 14_000)  # over twice Pillow's limit: refused by Image.open itself
    with pytest.raises(data.CorruptDatasetError, match=r"huge\.png is over 179 million pixels.*shrink it"):
        decoded(tmp_path / "huge.png")


def test_jpegs_are_decoded_at_a_reduced_size_for_a_small_target(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_DECODED_PIXELS", 300 * 300)
    picture = Image.new("RGB", (1200, 900), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 600, 900))  # left half red, right half blue
    picture.save(tmp_path / "big.jpg", quality=95)
    got = decoded(tmp_path / "big.jpg")  # decoded at 1/4 (300x225 pixels, twice 64 a side), under the cap
    assert got[:, :20, 0].mean() > 230 and got[:, :20, 2].mean() < 25
    assert got[:, -20:, 2].mean() > 230 and got[:, -20:, 0].mean() < 25
    picture.save(tmp_path / "big.png")  # a PNG cannot be decoded at a reduced size
    with pytest.raises(data.CorruptDatasetError, match=r"big\.png.*1200x900"):
        decoded(tmp_path / "big.png")


def test_images_decoded_at_once_are_bounded_whatever_the_core_count(tmp_path, monkeypatch):
    for i in range(24):
        png(tmp_path / "imgs" / f"{i}.png")
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    busy, most, lock = [0], [0], threading.Lock()
    convert = Image.Image.convert

    def slow_convert(self, *args, **kwargs):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.02)
        with lock:
            busy[0] -= 1
        return convert(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", slow_convert)
    train = load(tmp_path / "imgs", image_size=16)
    assert len(train) > 16 and images.DECODE_THREADS <= 4
    assert most[0] <= images.DECODE_THREADS  # was up to 64, one per core


# --------------------------------------------------------------------------- symbolic links


def pets_with_linked_dogs(tmp_path, target):
    for i in range(20):
        png(tmp_path / "pets" / "cats" / f"{i}.png", colour=(255, 0, 0))
        png(target / f"{i}.png", colour=(0, 0, 255))
    (tmp_path / "pets" / "dogs").symlink_to(target, target_is_directory=True)
    return tmp_path / "pets"


def test_a_class_folder_linked_from_outside_is_refused_naming_the_link_and_the_fix(tmp_path):
    pets = pets_with_linked_dogs(tmp_path, tmp_path / "elsewhere" / "dogs")
    with pytest.raises(ValueError) as err:  # was: classes ('cats',), the dogs dropped without a word
        load(pets)
    msg = str(err.value)
    assert str(pets / "dogs") in msg and str(tmp_path / "elsewhere" / "dogs") in msg
    assert "outside" in msg and "copy" in msg and "DGM_FOLLOW_LINKS=1" in msg


def test_links_out_of_the_folder_are_followed_when_chosen_with_DGM_FOLLOW_LINKS(tmp_path, monkeypatch):
    pets = pets_with_linked_dogs(tmp_path, tmp_path / "elsewhere" / "dogs")
    monkeypatch.setenv("DGM_FOLLOW_LINKS", "1")
    train, test = load(pets), load(pets, "test")
    assert train.classes == ("cats", "dogs") and len(train) + len(test) == 40
    blue = train.images[:, 2].float().mean((1, 2)) > 128
    assert (blue == (train.labels == 1)).all()


def test_a_class_folder_linked_inside_the_folder_is_followed(tmp_path):
    for i in range(6):
        png(tmp_path / "ds" / "store" / "dogs" / f"{i}.png", colour=(0, 0, 255))
        png(tmp_path / "ds" / "train" / "cats" / f"{i}.png", colour=(255, 0, 0))
        png(tmp_path / "ds" / "test" / "cats" / f"{i}.png", colour=(255, 0, 0))
    (tmp_path / "ds" / "train" / "dogs").symlink_to(tmp_path / "ds" / "store" / "dogs")
    (tmp_path / "ds" / "train" / "cats" / "loop").symlink_to(tmp_path / "ds" / "train")  # a cycle: not walked twice
    train = load(tmp_path / "ds")
    assert train.classes == ("cats", "dogs") and sorted(train.labels.tolist()) == [0] * 6 + [1] * 6


def test_a_file_linked_from_outside_the_folder_is_not_read(tmp_path):
    for i in range(20):
        png(tmp_path / "imgs" / f"{i}.png")
    png(tmp_path / "private" / "secret.png", colour=(1, 2, 3))
    (tmp_path / "imgs" / "secret.png").symlink_to(tmp_path / "private" / "secret.png")
    with pytest.raises(ValueError) as err:  # was: decoded into the data set without notice
        for split in ("train", "test"):
            load(tmp_path / "imgs", split)
    msg = str(err.value)
    assert str(tmp_path / "imgs" / "secret.png") in msg and str(tmp_path / "private" / "secret.png") in msg
    assert "DGM_FOLLOW_LINKS=1" in msg


# --------------------------------------------------------------------------- folders that are not a data set


def test_the_home_folder_and_system_roots_are_refused(tmp_path, monkeypatch):
    home = tmp_path / "home" / "me"
    for i in range(12):
        png(home / f"{i}.png")
    monkeypatch.setenv("HOME", str(home))
    for given in ("~", str(home), "/", "/etc", "/usr", "/proc", "/sys/class", "/dev", "/home"):
        with pytest.raises(ValueError) as err:
            data.load_dataset(f"image_folder:{given}", root=tmp_path / "root")
        msg = str(err.value)
        assert "not a data set's folder" in msg and "image_folder:" in msg, given


def test_a_walk_over_too_many_files_stops_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "MAX_WALKED", 50)
    for i in range(60):
        (tmp_path / "big" / f"{i % 3}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "big" / f"{i % 3}" / f"{i}.txt").write_text("x")
    with pytest.raises(ValueError) as err:
        load(tmp_path / "big")
    msg = str(err.value)
    assert str(tmp_path / "big") in msg and "more than 50" in msg and "dataset's own folder" in msg


# --------------------------------------------------------------------------- what a photo says about itself


@pytest.mark.parametrize("name", ["phone.jpg", "phone.png"])
def test_exif_orientation_is_applied(tmp_path, name):
    stored = Image.new("RGB", (128, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 128, 32))  # as stored: top half red, bottom half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / name, exif=exif)
    got = decoded(tmp_path / name)  # as displayed: left half blue, right half red
    assert got[:, :24, 2].mean() > 230 and got[:, :24, 0].mean() < 25
    assert got[:, -24:, 0].mean() > 230 and got[:, -24:, 2].mean() < 25


def test_a_file_name_that_is_not_utf8_is_named_with_the_fix(tmp_path):
    for i in range(12):
        png(tmp_path / "imgs" / f"{i}.png")
    bad = os.path.join(os.fsencode(tmp_path / "imgs"), b"caf\xe9.png")  # Latin-1, not UTF-8
    with open(bad, "wb") as f:
        Image.new("RGB", (8, 8)).save(f, format="PNG")
    with pytest.raises(ValueError) as err:
        for split in ("train", "test"):
            load(tmp_path / "imgs", split)
    msg = str(err.value)
    assert r"b'caf\xe9.png'" in msg and str(tmp_path / "imgs") in msg and "rename" in msg


def test_class_folders_in_train_and_a_flat_test_folder_are_explained(tmp_path):
    for c in ("cats", "dogs"):
        for i in range(3):
            png(tmp_path / "ds" / "train" / c / f"{i}.png")
    for i in range(4):
        png(tmp_path / "ds" / "test" / f"{i}.png")
    assert load(tmp_path / "ds").classes == ("cats", "dogs")
    with pytest.raises(ValueError) as err:
        load(tmp_path / "ds", "test")
    msg = str(err.value)
    assert str(tmp_path / "ds" / "test") in msg and "4 images directly" in msg and "cats, dogs" in msg
    assert "test/cats/" in msg  # the layout that is expected


def test_class_folders_in_test_and_a_flat_train_folder_are_explained(tmp_path):
    for i in range(4):
        png(tmp_path / "ds" / "train" / f"{i}.png")
        png(tmp_path / "ds" / "test" / "cats" / f"{i}.png")
    with pytest.raises(ValueError) as err:  # was: the test split loaded without its labels
        load(tmp_path / "ds", "test")
    msg = str(err.value)
    assert str(tmp_path / "ds" / "train") in msg and "class sub-folders" in msg and "cats" in msg


# --------------------------------------------------------------------------- CelebA's text files


def celeba_with_entry(root, entry):
    """write_celeba's 12 faces, and ``entry`` in the training split with its row of attributes."""
    base = write_celeba(root)
    path = base / "list_eval_partition.txt"
    path.write_text(path.read_text() + f"{entry} 0\n")
    count, rest = (base / "list_attr_celeba.txt").read_text().split("\n", 1)
    (base / "list_attr_celeba.txt").write_text(f"{int(count) + 1}\n{rest}{entry} 1 1 1\n")
    return path


@pytest.mark.parametrize("entry", ["../../../outside.png", "ABS", "/etc/hostname", "sub/000001.jpg", ".."])
def test_celeba_partition_entries_outside_the_image_folder_are_refused(tmp_path, entry):
    outside = tmp_path / "root" / "a" / "outside.png"  # where ../../../outside.png leads
    png(outside, size=(178, 218))
    entry = str(outside) if entry == "ABS" else entry
    path = celeba_with_entry(tmp_path / "root" / "a" / "b", entry)
    with pytest.raises(data.CorruptDatasetError) as err:  # was: decoded into the training set
        data.load_dataset("celeba", "train", root=tmp_path / "root" / "a" / "b")
    msg = str(err.value)
    assert f"{path}, line 13" in msg and repr(entry) in msg and "plain file name" in msg


ATTRIBUTES = "list_attr_celeba.txt"
PARTITION = "list_eval_partition.txt"
CELEBA_DAMAGE = {  # what is written, into which file, and what the message must say
    "one field": (PARTITION, 3, "000003.jpg\n", "expected 'FILE SPLIT'"),
    "not an integer": (PARTITION, 3, "000003.jpg zero\n", "'000003.jpg zero'"),
    "no such split": (PARTITION, 3, "000003.jpg 7\n", "0 (train), 1 (valid) or 2 (test)"),
    "listed twice": (PARTITION, 3, "000001.jpg 2\n", "000001.jpg is listed again (first on line 1)"),
    "empty": (PARTITION, None, "", "is empty"),
    "not text": (PARTITION, 3, "000003.jpg \xff\n", "not UTF-8 text"),
    "no attribute row": (ATTRIBUTES, 5, "", "no row for 000003.jpg"),
    "too few values": (ATTRIBUTES, 5, "000003.jpg 1 -1\n", "3 values of 1 or -1, found 2"),
    "not 1 or -1": (ATTRIBUTES, 5, "000003.jpg 1 0 1\n", "'0'"),
    "truncated": (ATTRIBUTES, 14, None, "line 1 says 12 rows, but the file has 11"),
    "no header": (ATTRIBUTES, None, "", "is empty"),
}


@pytest.mark.parametrize("case", CELEBA_DAMAGE)
def test_damaged_celeba_text_files_are_named_with_the_line_and_fix(tmp_path, case):
    name, line, text, says = CELEBA_DAMAGE[case]
    path = write_celeba(tmp_path) / name
    lines = path.read_bytes().decode().splitlines(keepends=True)
    if line is None:
        lines = []
    elif text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    raw = "".join(lines).encode("latin-1" if case == "not text" else "utf-8")
    path.write_bytes(raw)
    with pytest.raises(data.CorruptDatasetError) as err:
        data.load_dataset("celeba", "train", root=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and says in msg, msg
    if line is not None and case not in ("no attribute row", "truncated"):
        assert f"line {line}" in msg
    assert "download" in msg  # the fix


def test_a_celeba_image_linked_from_outside_its_folder_is_not_read(tmp_path, monkeypatch):
    base = write_celeba(tmp_path / "root")
    png(tmp_path / "private" / "me.png", size=(178, 218))
    face = base / "img_align_celeba" / "000002.jpg"
    face.unlink()
    face.symlink_to(tmp_path / "private" / "me.png")
    with pytest.raises(ValueError) as err:
        data.load_dataset("celeba", "train", root=tmp_path / "root")
    assert f"{face} -> {tmp_path / 'private' / 'me.png'}" in str(err.value) and "DGM_FOLLOW_LINKS=1" in str(err.value)
    monkeypatch.setenv("DGM_FOLLOW_LINKS", "1")
    assert len(data.load_dataset("celeba", "train", root=tmp_path / "root")) == 8


def test_a_train_folder_linked_from_outside_is_named_once(tmp_path):
    for i in range(3):
        png(tmp_path / "elsewhere" / "train" / "cats" / f"{i}.png")
        png(tmp_path / "ds" / "test" / "cats" / f"{i}.png")
    (tmp_path / "ds" / "train").symlink_to(tmp_path / "elsewhere" / "train")
    with pytest.raises(ValueError) as err:
        load(tmp_path / "ds")
    msg = str(err.value)
    assert "1 symbolic link(s) lead outside it" in msg
    assert f"{tmp_path / 'ds' / 'train'} -> {tmp_path / 'elsewhere' / 'train'}" in msg
