"""Issue 27, the FID cache, the Inception override, slerp and the runtime's doors: each test is
named after what it guards (stale or uncacheable FID statistics, unchecked weights, antipodal
slerp ends, DGM_DATASET without a dataset field, bad seeds, a DGM_DATA_DIR that is a file or
read-only)."""
import dataclasses
import errno
import re
import warnings

import numpy as np
import pytest
import torch

from common import fid, widgets
from common.machinery import data, features, fid_stats, runtime, storage


class MeanStdExtractor(features.FeatureExtractor):
    """Two features per image (its mean and spread), counting the images it has seen."""

    name, id, dim, batch_size, device = "mean-std", "mean-std-1", 2, 64, torch.device("cpu")

    def __init__(self):
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        flat = images.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1)], 1)


def folder_data(seed: int, n: int = 200) -> data.ImageData:
    """A split as a folder of images decodes to: its name, split and size depend on the folder,
    its pixels on the files."""
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return data.ImageData(images, torch.zeros(n, dtype=torch.long), "image_folder:faces", "train", (),
                          "image_folder-faces-1a2b3c4d")


# --------------------------------------------------------------------------- 5. DGM_DATASET without a dataset field


@dataclasses.dataclass(frozen=True)
class NoDatasetConfig:
    epochs: int = 3


def test_dgm_dataset_is_ignored_with_a_warning_by_a_config_without_a_dataset_field(capsys):
    rt = runtime.Runtime("cpu", torch.device("cpu"), 0, runtime.REPO_ROOT / "data", runtime.REPO_ROOT / "data",
                         dataset="celeba")
    with pytest.warns(UserWarning, match=r"DGM_DATASET=celeba is ignored.*NoDatasetConfig has no `dataset` field"):
        cfg = runtime.configure(NoDatasetConfig, {"smoke": {"epochs": 1}}, rt)
    assert cfg == NoDatasetConfig(epochs=3) and "dataset: " not in capsys.readouterr().out


# --------------------------------------------------------------------------- 6. seeds


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (2 ** 32, ValueError), (1.5, TypeError),
                                         (True, TypeError), ("0", TypeError), (None, TypeError)])
def test_a_seed_outside_numpys_range_is_refused_at_the_door_naming_seed_and_the_range(seed, error, capsys):
    for call in (lambda: runtime.setup(seed=seed), lambda: runtime.seed_everything(seed)):
        with pytest.raises(error, match=rf"^seed must be a whole number from 0 to {2 ** 32 - 1:,}, got {seed!r}"):
            call()
    assert capsys.readouterr().out == ""                  # refused before anything is reported


@pytest.mark.parametrize("seed", [0, 2 ** 32 - 1, np.int64(7)])
def test_every_seed_numpy_takes_is_accepted(seed):
    assert runtime.setup(seed=seed, verbose=False).seed == seed
    assert type(runtime.setup(seed=seed, verbose=False).seed) is int


# --------------------------------------------------------------------------- 7. DGM_DATA_DIR


@pytest.mark.parametrize("below", ["", "sub/folder"])
def test_a_file_as_dgm_data_dir_is_refused_naming_the_file_and_the_fix(tmp_path, monkeypatch, below):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    value = str(blocker / below) if below else str(blocker)
    monkeypatch.setenv("DGM_DATA_DIR", value)
    where = f"is under {blocker}, which is" if below else "is"
    with pytest.raises(NotADirectoryError, match=re.escape(f"DGM_DATA_DIR={value} {where} a file, not a folder; "
                                                           "set DGM_DATA_DIR to a folder")):
        runtime.data_dir()
    with pytest.raises(NotADirectoryError, match="set DGM_DATA_DIR to a folder"):
        runtime.setup(verbose=False)


def test_a_read_only_dgm_data_dir_is_reported_by_setup_with_what_to_set(tmp_path, monkeypatch):
    folder = tmp_path / "shared" / "data"                   # not created yet: its parent is what counts
    folder.parent.mkdir()
    monkeypatch.setenv("DGM_DATA_DIR", str(folder))
    real_access = runtime.os.access
    monkeypatch.setattr(runtime.os, "access", lambda p, mode: False if str(p) == str(folder.parent) else real_access(p, mode))
    with pytest.warns(UserWarning, match=rf"{folder} cannot be written.*set DGM_DATA_DIR to a writable folder"):
        rt = runtime.setup(verbose=False)
    assert rt.data_dir == folder and not folder.exists()
    monkeypatch.setattr(runtime.os, "access", real_access)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime.setup(verbose=False)                         # writable: nothing to say
