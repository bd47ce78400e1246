import gzip
import struct

import numpy as np
import pytest
import torch

from common import data


def write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_split(folder, split, n, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    img_name, lab_name = data.IDX_FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / (img_name + suffix), images, gz)
    write_idx(folder / (lab_name + suffix), labels, gz)
    return images, labels


@pytest.fixture(scope="module")
def fmnist_test():
    return data.load_dataset("fashion_mnist", "test")


def test_real_fashion_mnist_shapes_ranges_and_labels(fmnist_test):
    d = fmnist_test
    assert len(d) == 10_000 and d.image_shape == (1, 28, 28)
    assert d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64
    x, y = d[:256]
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99
    assert torch.bincount(d.labels, minlength=10).tolist() == [1000] * 10  # balanced test split
    assert d.classes[9] == "Ankle boot" and len(d.classes) == 10


def test_train_split_and_limit():
    d = data.load_dataset("fashion-mnist", "train", limit=1000)
    assert len(d) == 1000 and d.split == "train" and d.name == "fashion_mnist"


def test_idx_reader_plain_and_gzip(tmp_path):
    for gz in (True, False):
        images, labels = fake_split(tmp_path / f"gz{gz}" / "FashionMNIST" / "raw", "test", 7, gz=gz)
        d = data.load_dataset("fashion_mnist", "test", root=tmp_path / f"gz{gz}")
        assert torch.equal(d.images[:, 0], torch.from_numpy(images))
        assert d.labels.tolist() == labels.tolist()


def test_local_folder_is_preferred_over_debian_copy(tmp_path, monkeypatch):
    fake_split(tmp_path / "FashionMNIST" / "raw", "train", 5)
    fake_split(tmp_path / "debian", "train", 9)
    monkeypatch.setattr(data, "DATASETS", dict(data.DATASETS, fashion_mnist=(
        data._idx_dataset("FashionMNIST", "FashionMNIST", tmp_path / "debian", "hint"),
        data.FASHION_MNIST_CLASSES)))
    assert len(data.load_dataset("fashion_mnist", "train", root=tmp_path)) == 5
    (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").unlink()
    assert len(data.load_dataset("fashion_mnist", "train", root=tmp_path)) == 9


def test_missing_data_error_lists_what_was_tried(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    monkeypatch.setattr(data, "DATASETS", dict(data.DATASETS, fashion_mnist=(
        data._idx_dataset("FashionMNIST", "FashionMNIST", tmp_path / "nowhere", "apt-get install x"),
        data.FASHION_MNIST_CLASSES)))
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_dataset("fashion_mnist", "test", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and str(tmp_path / "nowhere") in msg
    assert "no network" in msg and "apt-get install x" in msg


def test_bad_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'cifar100'.*fashion_mnist"):
        data.load_dataset("cifar100")
    with pytest.raises(ValueError, match="Unknown split"):
        data.load_dataset("fashion_mnist", "valid")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x03\x04junk"))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(short)


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
