"""The dataset registry: each loader on small files written here in that dataset's own format."""
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from common.machinery import data, decode_cache, dsprites, sources


def write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def idx_split(folder, split, n, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    img_name, lab_name = data.IDX_FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / (img_name + suffix), images, gz)
    write_idx(folder / (lab_name + suffix), labels, gz)
    return images, labels


@pytest.fixture
def offline(monkeypatch):
    """Every torchvision download fails as it does without a network."""
    import torchvision.datasets as tvd

    def no_network(*args, **kwargs):
        raise RuntimeError("no network")

    for name in ("MNIST", "FashionMNIST", "SVHN", "CelebA", "Imagenette"):
        monkeypatch.setattr(tvd, name, no_network)


def png(path, size=(40, 30), colour=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


# --------------------------------------------------------------------------- Fashion-MNIST, MNIST (IDX)


@pytest.fixture(scope="module")
def fmnist_test():
    return data.load_dataset("fashion_mnist", "test")


def test_real_fashion_mnist_shapes_ranges_labels_and_tag(fmnist_test):
    d = fmnist_test
    assert len(d) == 10_000 and d.image_shape == (1, 28, 28) and d.tag == "fashion_mnist-1x28x28"
    assert d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64
    x, y = d[:256]
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99
    assert torch.bincount(d.labels, minlength=10).tolist() == [1000] * 10  # balanced test split
    assert d.classes[9] == "Ankle boot" and d.labelled and d.source


def test_train_split_limit_and_resize():
    d = data.load_dataset("fashion-mnist", "train", limit=1000)
    assert len(d) == 1000 and d.split == "train" and d.name == "fashion_mnist"
    big = data.load_dataset("fashion_mnist", "train", limit=10, image_size=64)
    assert big.image_shape == (1, 64, 64) and big.tag == "fashion_mnist-1x64x64"
    assert abs(big[:][0].mean() - d[:10][0].mean()) < 0.01  # resizing keeps the brightness


@pytest.mark.parametrize("name, folder", [("fashion_mnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_idx_reader_plain_and_gzip(tmp_path, name, folder):
    for gz in (True, False):
        images, labels = idx_split(tmp_path / f"gz{gz}" / folder / "raw", "test", 7, gz=gz)
        d = data.load_dataset(name, "test", root=tmp_path / f"gz{gz}")
        assert torch.equal(d.images[:, 0], torch.from_numpy(images))
        assert d.labels.tolist() == labels.tolist() and d.name == name and len(d.classes) == 10


def test_local_folder_is_preferred_over_debian_copy(tmp_path, monkeypatch):
    idx_split(tmp_path / "FashionMNIST" / "raw", "train", 5)
    idx_split(tmp_path / "debian", "train", 9)
    monkeypatch.setitem(sources.REGISTRY, "fashion_mnist", sources._idx_reader(
        "fashion_mnist", "FashionMNIST", "FashionMNIST", sources.FASHION_MNIST_CLASSES, tmp_path / "debian", "hint"))
    d = data.load_dataset("fashion_mnist", "train", root=tmp_path)
    assert len(d) == 5 and d.source == str(tmp_path / "FashionMNIST" / "raw")
    (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").unlink()
    d = data.load_dataset("fashion_mnist", "train", root=tmp_path)
    assert len(d) == 9 and d.source == str(tmp_path / "debian")


def test_missing_mnist_says_what_was_tried_and_how_to_get_it(tmp_path, offline):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_dataset("mnist", "test", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "no network" in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and f"into {tmp_path / 'MNIST' / 'raw'}/" in msg


def test_bad_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'cifar100'.*fashion_mnist.*image_folder:PATH"):
        data.load_dataset("cifar100")
    with pytest.raises(ValueError, match="Unknown split"):
        data.load_dataset("fashion_mnist", "valid")
    with pytest.raises(ValueError, match="image_folder needs a path"):
        data.load_dataset("image_folder")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x03\x04junk"))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(short)


# --------------------------------------------------------------------------- SVHN (.mat)


def test_svhn_from_its_mat_files(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)  # SVHN stores (H, W, C, N)
    y = np.array([[10], [1], [2], [3], [10], [9]], dtype=np.uint8)  # 10 is the digit 0
    (tmp_path / "SVHN").mkdir()
    savemat(tmp_path / "SVHN" / "test_32x32.mat", {"X": x, "y": y})
    d = data.load_dataset("svhn", "test", root=tmp_path)
    assert d.image_shape == (3, 32, 32) and d.tag == "svhn-3x32x32"
    assert d.labels.tolist() == [0, 1, 2, 3, 0, 9] and d.classes == data.MNIST_CLASSES
    assert torch.equal(d.images[2], torch.from_numpy(x[:, :, :, 2]).permute(2, 0, 1))  # channels first
    assert data.load_dataset("svhn", "test", root=tmp_path, image_size=64).image_shape == (3, 64, 64)


def test_missing_svhn_names_the_files_and_folder(tmp_path, offline):
    with pytest.raises(data.DatasetNotFoundError, match=r"(?s)test_32x32\.mat: missing.*no network.*train_32x32\.mat"):
        data.load_dataset("svhn", "test", root=tmp_path)


# --------------------------------------------------------------------------- CelebA (folder + text files)


def write_celeba(root, n=12):
    base = root / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for i, name in enumerate(names):
        png(base / "img_align_celeba" / name, size=(178, 218), colour=(20 * i, 100, 200))
    (base / "list_eval_partition.txt").write_text("".join(f"{f} {0 if i < 8 else 2}\n" for i, f in enumerate(names)))
    attrs = ["Smiling", "Male", "Young"]
    rows = [f"{f} {' '.join('1' if (i + k) % 2 else '-1' for k in range(3))}" for i, f in enumerate(names)]
    (base / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(attrs)}\n" + "\n".join(rows) + "\n")
    return base


def test_celeba_from_its_folder_and_attribute_files(tmp_path):
    write_celeba(tmp_path)
    train = data.load_dataset("celeba", "train", root=tmp_path)
    test = data.load_dataset("celeba", "test", root=tmp_path)
    assert len(train) == 8 and len(test) == 4 and train.image_shape == (3, 64, 64)
    assert not train.labelled and train.attribute_names == ("Smiling", "Male", "Young")
    assert sorted(train.attributes[:, 0].tolist()) == [0] * 4 + [1] * 4  # -1/1 read as 0/1
    reds = sorted(train.images[:, 0].float().mean((1, 2)).tolist())
    assert reds == pytest.approx([20 * i for i in range(8)], abs=3)  # every image once (JPEG rounding)
    assert data.load_dataset("celeba", "train", root=tmp_path, image_size=32).image_shape == (3, 32, 32)
    with pytest.raises(ValueError, match="no class labels.*fashion_mnist"):
        data.require_labels(train, "notebook 04 conditions on the class")


def test_missing_celeba_gives_the_manual_route(tmp_path, offline):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_dataset("celeba", "train", root=tmp_path)
    msg = str(err.value)
    assert "img_align_celeba: missing" in msg and "no network" in msg
    assert "list_eval_partition.txt" in msg and str(tmp_path / "celeba") in msg and "often refused" in msg


# --------------------------------------------------------------------------- folders of images


def test_image_folder_with_class_subfolders_and_a_stable_split(tmp_path):
    for c, colour in [("cats", (255, 0, 0)), ("dogs", (0, 0, 255))]:
        for i in range(30):
            png(tmp_path / "pets" / c / f"{i}.png", colour=colour)
    train = data.load_dataset(f"image_folder:{tmp_path / 'pets'}", "train", root=tmp_path)
    test = data.load_dataset(f"image_folder:{tmp_path / 'pets'}", "test", root=tmp_path)
    assert train.classes == ("cats", "dogs") and len(train) + len(test) == 60 and 0 < len(test) < 20
    assert train.image_shape == (3, 64, 64) and train.name == "image_folder:pets"
    red = train.images[:, 0].float().mean((1, 2)) > 128
    assert torch.equal(red, train.labels == 0)  # labels follow the folders
    assert train.tag.startswith("image_folder-pets-") and train.tag.endswith("-3x64x64")
    again = data.load_dataset(f"image_folder:{tmp_path / 'pets'}", "test", root=tmp_path)
    assert torch.equal(again.labels, test.labels)


def test_image_folder_with_train_and_val_folders_and_no_labels(tmp_path):
    for split, n in [("train", 5), ("val", 3)]:
        for c in ("a", "b"):
            for i in range(n):
                png(tmp_path / "ds" / split / c / "nested" / f"{i}.jpg", size=(50, 80))
    d = data.load_dataset(f"image_folder:{tmp_path / 'ds'}", "test", root=tmp_path, image_size=32)
    assert len(d) == 6 and d.classes == ("a", "b") and d.image_shape == (3, 32, 32)
    for i in range(4):
        png(tmp_path / "flat" / f"{i}.png")
    flat = data.load_dataset(f"image_folder:{tmp_path / 'flat'}", "train", root=tmp_path)
    assert not flat.labelled and flat.labels.tolist() == [0] * len(flat)
    png(tmp_path / "mixed" / "top.png")
    png(tmp_path / "mixed" / "sub" / "x.png")
    with pytest.raises(ValueError, match="mixes 1 images at its top with class sub-folders"):
        data.load_dataset(f"image_folder:{tmp_path / 'mixed'}", "train", root=tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match="is not a folder"):
        data.load_dataset(f"image_folder:{tmp_path / 'nowhere'}", root=tmp_path)


def test_decoded_images_are_cached_checked_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    for i in range(6):
        png(tmp_path / "imgs" / f"{i}.png", colour=(40 * i, 0, 0))
    calls = []
    original = decode_cache.decode_one
    monkeypatch.setattr(decode_cache, "decode_one", lambda f, s: calls.append(f) or original(f, s))
    name = f"image_folder:{tmp_path / 'imgs'}"
    first = data.load_dataset(name, "train", root=tmp_path)
    expected = first.images.clone()  # (the split is memory-mapped: damaging the file in place shows through)
    decoded = len(calls)
    assert decoded == len(first) > 0
    again = data.load_dataset(name, "train", root=tmp_path)
    assert len(calls) == decoded and torch.equal(again.images, first.images)  # from the cache
    (cache,) = [p for p in (tmp_path / "cache").iterdir() if "train" in p.name]
    assert not list((tmp_path / "cache").glob(".*tmp"))  # nothing half-written left
    blob = bytearray((cache / "images.npy").read_bytes())
    blob[-1] ^= 0xFF  # one flipped byte
    (cache / "images.npy").write_bytes(bytes(blob))
    repaired = data.load_dataset(name, "train", root=tmp_path)
    assert len(calls) == 2 * decoded and torch.equal(repaired.images, expected)
    png(tmp_path / "imgs" / "new.png")  # the folder changed: the cache is stale
    data.load_dataset(name, "train", root=tmp_path)
    assert len(calls) > 2 * decoded


# --------------------------------------------------------------------------- Imagenette


def test_imagenette_from_torchvisions_folder_layout(tmp_path):
    for split, n in [("train", 4), ("val", 2)]:
        for wnid in ("n01440764", "n03888257"):
            for i in range(n):
                png(tmp_path / "imagenette2-160" / split / wnid / f"{wnid}_{i}.JPEG", size=(213, 160))
    train = data.load_dataset("imagenette", "train", root=tmp_path)
    test = data.load_dataset("imagenette", "test", root=tmp_path)
    assert len(train) == 8 and len(test) == 4 and train.image_shape == (3, 64, 64)
    assert train.classes[0] == "tench" and train.classes[-1] == "parachute" and len(train.classes) == 10
    assert sorted(set(test.labels.tolist())) == [0, 9]


def test_missing_imagenette_says_where_to_extract_it(tmp_path, offline):
    with pytest.raises(data.DatasetNotFoundError, match=r"(?s)imagenette2-160/train: missing.*no network.*imagenette2-160\.tgz"):
        data.load_dataset("imagenette", "train", root=tmp_path)


# --------------------------------------------------------------------------- dSprites


def test_dsprites_from_the_official_npz_layout_without_unpickling(tmp_path):
    n = 50
    idx = torch.arange(0, dsprites.N_IMAGES, dsprites.N_IMAGES // n)[:n]
    classes = torch.cat([torch.zeros(n, 1, dtype=torch.long), dsprites.factors_of(idx)], 1).numpy()
    imgs = (dsprites.render(dsprites.factors_of(idx))[:, 0] // 255).numpy()
    (tmp_path / "dsprites").mkdir()
    np.savez(tmp_path / "dsprites" / dsprites.NPZ_NAME, imgs=imgs, latents_classes=classes,
             latents_values=classes.astype(float), metadata=np.array([{"pickled": "object"}], dtype=object))
    test = data.load_dataset("dsprites", "test", root=tmp_path)
    train = data.load_dataset("dsprites", "train", root=tmp_path)
    assert test.name == "dsprites" and len(train) + len(test) == n and len(test) == 5
    assert train.image_shape == (1, 64, 64) and set(train.images.unique().tolist()) <= {0, 255}
    assert train.classes == ("square", "ellipse", "heart") and train.attribute_names[0] == "shape"
    assert torch.equal(train.labels, train.attributes[:, 0])


def test_procedural_dsprites_covers_every_factor_combination_once():
    factors = dsprites.factors_of(torch.arange(dsprites.N_IMAGES))
    for k, size in enumerate(dsprites.FACTOR_SIZES):
        assert torch.bincount(factors[:, k]).tolist() == [dsprites.N_IMAGES // size] * size
    codes = ((factors[:, 0] * 6 + factors[:, 1]) * 40 + factors[:, 2]) * 1024 + factors[:, 3] * 32 + factors[:, 4]
    assert torch.equal(codes, torch.arange(dsprites.N_IMAGES))  # each combination once, in the file's order
    train, test = dsprites.split_indices("train"), dsprites.split_indices("test")
    assert len(test) == 73_728 and len(np.union1d(train, test)) == dsprites.N_IMAGES


def test_procedural_dsprites_follow_their_factors():
    def img(shape=0, scale=5, orient=0, x=16, y=16):
        return dsprites.render(torch.tensor([[shape, scale, orient, x, y]]))[0, 0].float() / 255

    areas = [img(shape=s).sum().item() for s in range(3)]
    assert areas[0] > areas[2] > areas[1] > 0  # square > heart > ellipse
    assert img(scale=0).sum() < img(scale=5).sum()  # scale grows the sprite
    assert img(scale=5).sum() == pytest.approx(400, rel=0.05)  # a 20 x 20 px square at scale 1
    cols = torch.arange(64.0)
    centre_x = lambda im: (im.sum(0) * cols).sum() / im.sum()  # noqa: E731
    assert centre_x(img(x=0)) == pytest.approx(16, abs=0.6) and centre_x(img(x=31)) == pytest.approx(47, abs=0.6)
    assert not torch.equal(img(orient=5), img(orient=0))  # a rotated square
    assert torch.equal(img(shape=1, orient=0), img(shape=1, orient=39))  # 0 and 2 pi are the same angle
    d = data.load_dataset("dsprites", "train", limit=300)
    assert d.name == "dsprites-procedural" and d.tag == "dsprites_procedural-1x64x64"
    assert "generated from its factors" in d.source and len(d) == 300


# --------------------------------------------------------------------------- in memory


def test_batches_cover_everything_once_and_shuffle_by_seed(fmnist_test):
    d = fmnist_test.subset(1000)
    b = d.batches(128, seed=3)
    assert len(b) == 8
    epoch1 = torch.cat([y for _, y in b])
    epoch2 = torch.cat([y for _, y in b])
    assert len(epoch1) == 1000 and sorted(epoch1.tolist()) == sorted(d.labels.tolist())
    assert not torch.equal(epoch1, epoch2)  # reshuffled each epoch
    again = d.batches(128, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]), epoch1)  # same seed, same order
    other = torch.cat([y for _, y in d.batches(128, seed=4)])
    assert not torch.equal(other, epoch1)
    assert len(d.batches(128, drop_last=True)) == 7
    ordered = torch.cat([y for _, y in d.batches(100, shuffle=False)])
    assert torch.equal(ordered, d.labels)
    with pytest.raises(ValueError, match="batch_size"):
        d.batches(0)


def test_by_class_and_images_stay_on_device(fmnist_test):
    x, y = fmnist_test.by_class(3)
    assert x.shape == (30, 1, 28, 28) and y.tolist() == [c for c in range(10) for _ in range(3)]
    xb, _ = next(iter(fmnist_test.batches(16)))
    assert xb.device == fmnist_test.device
    assert fmnist_test.first_of_class(9) == int(torch.nonzero(fmnist_test.labels == 9)[0])
