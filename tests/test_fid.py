import math
import warnings

import numpy as np
import pytest
import torch

from common import cgan, dcgan, fid
from common.machinery import data, features, fid_stats


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
        fid.FIDStats(np.zeros(3), np.eye(3), 10, "").distance(fid.FIDStats(np.zeros(4), np.eye(4), 10, ""))


def test_the_trace_agrees_with_scipy_and_is_exact_for_singular_covariances():
    import scipy.linalg

    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(10, 10)), rng.normal(size=(10, 4))
    s1, s2 = a @ a.T + 0.1 * np.eye(10), b @ b.T  # s2 singular (rank 4)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert fid.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-6)   # scipy's sqrtm of a singular
                                                                                  # product is the rougher one
    assert fid.trace_sqrt_product(s2, s1) == pytest.approx(expected, rel=1e-6)   # singular first: same trace
    assert fid.trace_sqrt_product(np.zeros((5, 5)), np.eye(5)) == 0.0          # rank 0
    # N = 8 images of d = 512 features: covariances of rank 7. With centred, scaled features A, B
    # (sigma = A^T A), tr((A^T A B^T B)^(1/2)) is the sum of the singular values of A B^T (8 x 8):
    # an exact reference. Square roots of round-off eigenvalues would miss it by ~1e-7.
    x, y = rng.normal(size=(8, 512)) @ rng.normal(size=(512, 512)) / 20, rng.normal(1, 1.5, size=(8, 512))
    A, B = ((f - f.mean(0)) / np.sqrt(7) for f in (x, y))
    exact = np.linalg.svd(A @ B.T, compute_uv=False).sum()
    assert fid.trace_sqrt_product(A.T @ A, B.T @ B) == pytest.approx(exact, rel=1e-12)


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


# --------------------------------------------------------------------------- statistics


def test_stats_from_features_are_the_mean_and_unbiased_covariance():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1003, 12)) * rng.uniform(0.01, 2, size=12) + 1e4  # large mean, small spread
    s = fid.FIDStats.from_features(torch.from_numpy(x), "x", "somewhere")
    np.testing.assert_allclose(s.mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.sigma, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-12)
    assert s.n == 1003
    with pytest.raises(ValueError, match="n >= 2"):
        fid.FIDStats.from_features(np.zeros((1, 4)))


def test_feature_stats_are_the_float64_mean_and_unbiased_covariance_of_arrays_or_tensors():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    for given in (x, torch.from_numpy(x)):
        mu, sigma = fid.feature_stats(given)
        assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (3, 3)
        np.testing.assert_array_equal(mu, x.astype(np.float64).mean(0))
        np.testing.assert_array_equal(sigma, np.cov(x.astype(np.float64), rowvar=False))


def test_stats_round_trip_through_npz_without_pickle(tmp_path):
    rng = np.random.default_rng(6)
    s = fid.FIDStats.from_features(rng.normal(size=(50, 3)), "x-123", "somewhere")
    back = fid.FIDStats.load(s.save(tmp_path / "s.npz"))
    assert (back.n, back.extractor_id, back.source) == (50, "x-123", "somewhere")
    np.testing.assert_array_equal(back.sigma, s.sigma)
    with pytest.raises(ValueError, match="not comparable"):
        s.distance(fid.FIDStats(s.mu, s.sigma, 50, "y-456"))


# --------------------------------------------------------------------------- cache


class CountingExtractor(features.FeatureExtractor):
    """Mean and std of each image: cheap, and counts the images it sees."""

    name, dim, batch_size, device = "counting", 2, 64, torch.device("cpu")

    def __init__(self, id="counting-1"):
        self.id, self.seen = id, 0

    def __call__(self, images):
        self.seen += len(images)
        flat = images.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1)], 1)


@pytest.fixture(scope="module")
def fmnist_test():
    return data.load_dataset("fashion_mnist", "test")


def test_reference_cache_is_reused_and_invalidated_by_n_extractor_and_dataset(tmp_path, monkeypatch, fmnist_test):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    ext = CountingExtractor()
    first = fid.reference_stats(fmnist_test, 100, ext, progress=False)
    assert ext.seen == 100
    again = fid.reference_stats(fmnist_test, 100, ext, progress=False)
    assert ext.seen == 100, "the cached statistics should have been used"
    np.testing.assert_array_equal(first.sigma, again.sigma)
    fid.reference_stats(fmnist_test, 150, ext, progress=False)
    assert ext.seen == 250, "a new N must recompute"
    other = CountingExtractor(id="counting-2")  # e.g. new weights
    fid.reference_stats(fmnist_test, 100, other, progress=False)
    assert other.seen == 100, "a new extractor must recompute"
    fid.reference_stats(fmnist_test.subset(5000), 100, ext, progress=False)
    assert ext.seen == 350, "another set of images (here a subset) must recompute"
    resized = data.load_dataset("fashion_mnist", "test", image_size=32, limit=200)
    fid.reference_stats(resized, 100, ext, progress=False)
    assert ext.seen == 450, "another image size must recompute"
    names = sorted(p.name for p in (tmp_path / "fid_stats").glob("*.npz"))
    assert len(names) == 5 and any(n.startswith("fashion_mnist-1x32x32-test") for n in names)
    assert "fashion_mnist-1x28x28-test-of10000-n100-seed0-counting-1.npz" in names  # files of earlier runs still load


def test_fid_of_a_set_against_itself_is_zero_and_the_result_states_n_and_extractor(fmnist_test):
    test = fmnist_test.subset(300)
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
    with pytest.raises(ValueError, match="pass the FeatureExtractor"):
        fid.fid(test, ref, n=300, progress=False)


def test_statistics_of_another_extractor_are_refused_before_any_feature_is_computed(fmnist_test):
    test = fmnist_test.subset(300)
    ref = fid.compute_stats(test, 300, CountingExtractor(), progress=False)
    other = CountingExtractor(id="counting-2")
    with pytest.raises(ValueError, match="come from extractor counting-1, not counting-2"):
        fid.fid(test, ref, n=300, extractor=other, progress=False)
    assert other.seen == 0
    unnamed = fid.FIDStats(ref.mu, ref.sigma, ref.n, ref.extractor_id)
    assert str(fid.fid(unnamed, ref, extractor=CountingExtractor())).startswith(
        "FID 0.00 (counting features; N = 300 FIDStats vs 300 fashion_mnist/test;")


def test_the_library_names_notebooks_and_tools_use_are_one_object():
    assert fid.FIDStats is fid_stats.FIDStats and fid.reference_stats is fid_stats.reference_stats
    assert fid.extract_features is fid_stats.extract_features and fid.FIDResult is fid_stats.FIDResult


def test_generator_fid_is_seeded_and_class_balanced():
    torch.manual_seed(0)
    G = cgan.ConditionalGenerator((1, 28, 28), 10, z_dim=8, channels=8).eval()
    seen = []
    original = G.sample
    G.sample = lambda n, labels=None: seen.append(labels) or original(n, labels)
    ext = CountingExtractor()
    a = fid.compute_stats(G, 100, ext, seed=3, progress=False)
    b = fid.compute_stats(G, 100, ext, seed=3, progress=False)
    c = fid.compute_stats(G, 100, ext, seed=4, progress=False)
    np.testing.assert_array_equal(a.mu, b.mu)
    assert not np.array_equal(a.mu, c.mu)
    assert len(seen) == 3    # one sample() call per run: samples are drawn in chunks of 500, whatever the batch size
    assert torch.bincount(seen[0], minlength=10).tolist() == [10] * 10


def test_tracking_callback_measures_every_k_epochs_on_fixed_noise(tmp_path, monkeypatch, fmnist_test):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    torch.manual_seed(0)
    G = dcgan.DCGANGenerator((1, 28, 28), z_dim=8, channels=8)
    cb = fid.tracking_callback(G, fmnist_test, n=64, every=2, extractor=CountingExtractor())
    assert cb(1, None) is None
    first, second = cb(2, None), cb(4, None)
    assert list(first) == ["fid"] and first["fid"] == second["fid"] > 0  # same weights, same noise


def test_the_default_extractor_follows_the_dataset(fmnist_test):
    assert isinstance(features.extractor_for(fmnist_test), features.DomainExtractor)
    mnist_like = data.ImageData(fmnist_test.images[:10], fmnist_test.labels[:10], "mnist", "test",
                                data.MNIST_CLASSES, "mnist")
    assert not features.domain_weights(mnist_like.tag).is_file()
    assert isinstance(features.extractor_for(mnist_like), features.InceptionExtractor)


def test_fid_infinity_removes_the_one_over_n_bias():
    rng = np.random.default_rng(7)
    d = 16
    ref = fid.FIDStats(np.zeros(d), np.eye(d), 10**9, "")
    x = rng.normal(0.3, 1.0, size=(20_000, d))  # true FID = d * 0.3^2 = 1.44
    fid_inf, values = fid.fid_infinity(x, ref, [500, 1000, 2000, 5000, 20_000])
    assert values[0] > values[-1] > 1.44  # biased upwards, less so with more samples
    assert abs(fid_inf - 1.44) < abs(values[-1] - 1.44) and fid_inf == pytest.approx(1.44, abs=0.02)


# --------------------------------------------------------------------------- KID


def kid_by_loops(x, y):
    """MMD^2_u written pair by pair, as Bińkowski et al. (2018) define it."""
    k = lambda a, b: (a @ b / len(a) + 1) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("d, n", [(8, 40), (64, 300)])
def test_kid_equals_torchmetrics_on_the_same_features(d, n):
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(n, d)), rng.normal(0.2, 1.3, size=(n, d))
    # features given as the "images", one subset of all n: torchmetrics' estimate over every pair
    metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=1, subset_size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns that it keeps every feature in memory
        metric.update(torch.from_numpy(x), real=True)
        metric.update(torch.from_numpy(y), real=False)
        mean, _ = metric.compute()
    assert fid.kid(y, x) == pytest.approx(float(mean), rel=1e-10)
    assert fid.kid(x, y) == pytest.approx(float(mean), rel=1e-10)  # symmetric


def test_kid_matches_its_definition_pair_by_pair_with_unequal_sizes():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, size=(11, 5))
    assert fid.kid(x, y) == pytest.approx(kid_by_loops(x, y), rel=1e-10)


def test_kid_of_two_point_masses_is_the_kernel_distance_of_the_points():
    a, b = np.array([1.0, 2.0, 0.0]), np.array([0.0, -1.0, 3.0])
    k = lambda u, v: (u @ v / 3 + 1) ** 3
    expected = k(a, a) + k(b, b) - 2 * k(a, b)
    assert fid.kid(np.tile(a, (5, 1)), np.tile(b, (8, 1))) == pytest.approx(expected, rel=1e-12)


def test_kid_is_unbiased_zero_on_average_for_one_distribution_and_can_be_negative():
    rng = np.random.default_rng(12)
    values = np.array([fid.kid(rng.normal(size=(20, 4)), rng.normal(size=(20, 4))) for _ in range(400)])
    assert (values < 0).any() and (values > 0).any()
    assert abs(values.mean()) < 4 * values.std() / np.sqrt(len(values))  # 0 within four standard errors
    # FID of the same draws is biased upwards: every value above 0
    assert all(fid.frechet_distance(*stats(rng.normal(size=(20, 4))), *stats(rng.normal(size=(20, 4)))) > 0
               for _ in range(20))
