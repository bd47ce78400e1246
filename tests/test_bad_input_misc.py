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
from common.machinery import data, features, fid_stats, inception_weights, runtime, storage


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


# --------------------------------------------------------------------------- 1. stale reference statistics


def test_reference_statistics_are_recomputed_when_the_images_change(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    ext = MeanStdExtractor()
    old = fid.reference_stats(folder_data(0), 100, ext, progress=False)
    assert fid.reference_stats(folder_data(0), 100, ext, progress=False).n == 100 and ext.seen == 100  # cached
    replaced = folder_data(1)          # the images replaced by others: same names, count and shape
    with pytest.warns(UserWarning, match="computed from other images of image_folder:faces/train.*recomputing"):
        new = fid.reference_stats(replaced, 100, ext, progress=False)
    assert ext.seen == 200 and not np.array_equal(new.mu, old.mu)
    assert fid.fid(replaced, new, 100, ext, progress=False).value == pytest.approx(0, abs=1e-9)
    (path,) = (tmp_path / "fid_stats").glob("*.npz")       # one file per key, rewritten, never two
    assert fid.FIDStats.load(path).data_id == new.data_id != old.data_id


def test_only_the_images_the_statistics_use_are_their_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    ext, d = MeanStdExtractor(), folder_data(0)
    fid.reference_stats(d, 100, ext, progress=False)
    used = fid_stats.subset_order(len(d), 100, seed=0)
    unused = sorted(set(range(len(d))) - set(used.tolist()))[0]
    d.images[unused] = 255 - d.images[unused]             # a pixel the statistics never saw
    fid.reference_stats(d, 100, ext, progress=False)
    assert ext.seen == 100
    d.images[used[-1], 0, 3, 3] ^= 1                        # one pixel of one image they did see
    with pytest.warns(UserWarning, match="recomputing"):
        fid.reference_stats(d, 100, ext, progress=False)
    assert ext.seen == 200


def test_statistics_written_without_the_images_identity_are_recomputed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    ext, d = MeanStdExtractor(), folder_data(0)
    good = fid.reference_stats(d, 100, ext, progress=False)
    (path,) = (tmp_path / "fid_stats").glob("*.npz")
    np.savez(path, mu=good.mu + 1, sigma=good.sigma, n=good.n, extractor_id=good.extractor_id,  # an older file
             source=good.source, image_shape=np.asarray(good.image_shape))
    with pytest.warns(UserWarning, match=f"{path.name} does not record which images.*recomputing"):
        again = fid.reference_stats(d, 100, ext, progress=False)
    assert np.array_equal(again.mu, good.mu) and fid.FIDStats.load(path).data_id == good.data_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid.reference_stats(d, 100, ext, progress=False)   # now it is served, silently
    assert ext.seen == 200


# --------------------------------------------------------------------------- 2. an unwritable FID cache


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_fid_returns_its_value_when_the_statistics_cache_cannot_be_written(tmp_path, monkeypatch, code):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))

    def refuses(f, **arrays):
        raise OSError(code, "simulated")

    monkeypatch.setattr(np, "savez", refuses)
    ext, d = MeanStdExtractor(), folder_data(0)
    with pytest.warns(UserWarning) as caught:
        first = fid.fid(d, d, 100, ext, progress=False)
        second = fid.fid(d, d, 100, ext, progress=False)
    assert first.value == pytest.approx(0, abs=1e-9) and second.value == first.value
    notes = [str(w.message) for w in caught if "not cached" in str(w.message)]
    assert len(notes) == 1, "warned once per folder, not at every call"
    assert str(tmp_path / "fid_stats") in notes[0] and "DGM_DATA_DIR" in notes[0] and "simulated" in notes[0]
    assert list((tmp_path / "fid_stats").iterdir()) == []   # no temporary left behind


def test_a_file_as_the_data_folder_still_gives_fid_statistics_with_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DGM_DATA_DIR", str(blocker))
    with pytest.warns(UserWarning, match=f"not cached.*DGM_DATA_DIR={blocker} is a file"):
        stats = fid.reference_stats(folder_data(0), 100, MeanStdExtractor(), progress=False)
    assert stats.n == 100 and blocker.read_text() == "not a folder"


# --------------------------------------------------------------------------- 3. the Inception override


@pytest.fixture
def scripted_net(tmp_path):
    path = tmp_path / "not_inception.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.jit.script's deprecation notice
        torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())).save(str(path))
    return path


def test_inception_weights_from_the_environment_warn_when_their_hash_is_not_the_recorded_one(scripted_net, monkeypatch):
    monkeypatch.setenv(features.INCEPTION_VAR, str(scripted_net))
    sha1 = storage.file_hash(scripted_net, "sha1")
    with pytest.warns(UserWarning, match=rf"{features.INCEPTION_VAR}={scripted_net} has SHA-1 {sha1}, not the "
                      rf"recorded {features.INCEPTION_SHA1}.*runs its code.*trust"):
        ext = features.InceptionExtractor("cpu")
    assert ext.id == f"inception-{sha1[:12]}"
    assert "runs" in features.inception_weights_path.__doc__ and "trust" in features.InceptionExtractor.__doc__


def test_a_copy_of_the_recorded_network_loads_silently_under_the_recorded_id(scripted_net, monkeypatch):
    sha1 = storage.file_hash(scripted_net, "sha1")
    monkeypatch.setattr(inception_weights, "INCEPTION_SHA1", sha1)   # as if it were the recorded network
    monkeypatch.setenv(features.INCEPTION_VAR, str(scripted_net))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ext = features.InceptionExtractor("cpu")
    assert ext.id == f"inception-{sha1[:12]}"


# --------------------------------------------------------------------------- 4. slerp's ends


def finite_norms(points):
    assert torch.isfinite(points).all()
    return points.flatten(1).norm(dim=1)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_slerp_between_antipodal_ends_goes_around_with_interpolated_norms(scale):
    z = torch.randn(512, generator=torch.Generator().manual_seed(0))
    arc = widgets.slerp(z, -scale * z, 5)
    assert torch.equal(arc[0], z) and torch.equal(arc[-1], -scale * z)
    expected = z.norm() * torch.linspace(1, scale, 5)
    torch.testing.assert_close(finite_norms(arc), expected, rtol=1e-5, atol=0)
    cos = (arc[2] @ z / (arc[2].norm() * z.norm())).item()
    assert abs(cos) < 1e-5                                  # half way round: orthogonal to both ends
    assert torch.equal(widgets.slerp(z, -scale * z, 5), arc)    # the same path every time


def test_slerp_between_nearly_antipodal_ends_stays_finite_and_keeps_the_ends_exactly():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, generator=g)
    for eps in (1e-3, 1e-6, 1e-8, 0.0):
        z1 = -z + eps * torch.randn(64, generator=g)
        arc = widgets.slerp(z, z1, 7)
        assert torch.equal(arc[0], z) and torch.equal(arc[-1], z1), eps
        norms = finite_norms(arc)
        lo, hi = sorted((z.norm().item(), z1.norm().item()))
        assert (norms > 0.999 * lo).all() and (norms < 1.001 * hi).all(), (eps, norms)


def test_slerp_with_coincident_or_zero_ends_is_the_line_with_exact_ends():
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    zero = torch.zeros_like(z)
    for z0, z1 in [(z, z), (z, z * (1 + 1e-7)), (z, 2 * z), (zero, z), (z, zero), (zero, zero)]:
        arc = widgets.slerp(z0, z1, 5)
        assert torch.equal(arc[0], z0) and torch.equal(arc[-1], z1)
        torch.testing.assert_close(arc, widgets.lerp(z0, z1, 5))
        finite_norms(arc)


def test_slerp_ends_are_the_inputs_bitwise_for_any_pair():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        z0, z1 = torch.randn(100, generator=g) * 7, torch.randn(100, generator=g) * 0.3
        for spherical in (False, True):
            points = widgets.path(z0, z1, [0.0, 0.5, 1.0], spherical=spherical)
            assert torch.equal(points[0], z0) and torch.equal(points[-1], z1)


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
