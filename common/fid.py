"""Fréchet Inception Distance (FID): the Fréchet distance between Gaussians fitted to image features.

Introduced in notebooks/05_fid.ipynb, which writes these functions in its cells; notebooks 03 and
04 track FID during training with :func:`tracking_callback`.

- :func:`frechet_distance` -- ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)),
  in float64, the trace from a pivoted Cholesky factor and one symmetric eigenproblem
  (:func:`trace_sqrt_product`): real throughout, exact and fast when the covariances are singular.
- :func:`feature_stats` -- the Gaussian (mean, covariance) of a set of features.
- :func:`fid` -- one call for a generator, images, a dataset or statistics against a reference; the
  result states N and the extractor, since FIDs with another extractor or N are not comparable.
- :func:`fid_infinity` -- FID extrapolated to infinitely many samples (Chong & Forsyth, 2020).
- :func:`kid` -- the kernel inception distance (Bińkowski et al., 2018): unbiased at any N.

Feature extraction, the on-disk cache of reference statistics and the checks on fid()'s arguments
are machinery: :mod:`common.machinery.fid_stats` and :mod:`common.machinery.features`.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import scipy.linalg

from .layers import GenerativeModel
from .machinery.features import FeatureExtractor, extractor_for
from .machinery.fid_stats import (FIDResult, FIDStats, check_fid_call, compute_stats,  # noqa: F401 (re-exported)
                                  extract_features, reference_stats)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) for covariance matrices, without a matrix square root.

    Pivoted Cholesky (LAPACK's dpstrf) factors sigma1 = L L^T and stops at its rank r, so L is
    d x r. Then sigma1 sigma2 = L (L^T sigma2) has the same non-zero eigenvalues as
    (L^T sigma2) L = L^T sigma2 L: r x r, symmetric, positive semi-definite. The trace is the sum of
    their square roots: real throughout, exact for singular covariances (no square roots of
    round-off zeros), and for N images (r <= N - 1) an N x N problem whatever d is.
    """
    c, piv, rank, _ = scipy.linalg.lapack.dpstrf(sigma1, lower=1)   # sigma1[piv, piv] = C C^T
    L = np.zeros((len(sigma1), rank))
    L[piv - 1] = np.tril(c)[:, :rank]       # undo the pivoting (dpstrf counts from 1): sigma1 = L L^T
    m = L.T @ sigma2 @ L
    w = np.linalg.eigvalsh((m + m.T) / 2)   # symmetric up to round-off: make it exactly so
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)), in float64.

    The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).
    """
    mu1, sigma1, mu2, sigma2 = (np.asarray(a, dtype=np.float64) for a in (mu1, sigma1, mu2, sigma2))
    diff = mu1 - mu2
    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(d2, 0.0))  # round-off can give -1e-12 for identical statistics


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian fitted to (n, d) features: their mean mu (d,) and covariance sigma (d, d).

    In float64: Inception features have a large mean and a small spread, and float32 sums over
    thousands of images would lose the digits that the covariance is made of.
    """
    x = np.asarray(features, dtype=np.float64)  # (n, d), on the CPU
    mu = x.mean(0)
    sigma = np.cov(x, rowvar=False)  # unbiased: divides by n - 1
    return mu, sigma


def fid(source, reference, n: int = 10_000, extractor: "str | FeatureExtractor" = "auto", *,
        seed: int = 0, progress: bool = True, name: str | None = None) -> FIDResult:
    """The FID between n images of source and reference, as a result that states N and the extractor.

    source: a generator (samples drawn under seed, class-balanced if conditional), an image tensor
    (N, C, H, W) in [0, 1], a dataset, or FIDStats. reference: a dataset split (the statistics of n
    of its images, cached on disk) or FIDStats. extractor: "auto" (the dataset's domain classifier
    where one is trained, else Inception-v3), "domain", "inception" or a FeatureExtractor.
    name: what the progress bar and the result call the source.
    """
    start = time.perf_counter()
    ext = check_fid_call(source, reference, extractor)  # the door: what it measures, image shapes, one extractor
    # each set as a Gaussian: statistics given, or the mean and covariance of n images' features
    ref = reference if isinstance(reference, FIDStats) else reference_stats(reference, n, ext, progress=progress)
    stats = source if isinstance(source, FIDStats) else compute_stats(source, n, ext, seed=seed, name=name,
                                                                      progress=progress)
    d2 = frechet_distance(stats.mu, stats.sigma, ref.mu, ref.sigma)
    return FIDResult(d2, stats.n, ref.n, ext.name, stats.source, ref.source, time.perf_counter() - start)


def fid_infinity(features, reference: FIDStats, ns, seed: int = 0) -> tuple[float, list[float]]:
    """FID extrapolated to infinitely many samples (Chong & Forsyth, 2020).

    The FID of N samples is biased upwards by about k / N, so FID_N = FID_inf + k / N: compute FID_N
    for a random subset of the (n, d) features of each size in ns, against the fixed reference
    statistics, and fit that line by least squares in 1 / N. Returns (FID_inf, [FID_N for ns]).
    """
    x = np.asarray(features, dtype=np.float64)  # (n, d), on the CPU
    rng = np.random.default_rng(seed)
    values = []
    for n in ns:
        subset = x[rng.choice(len(x), n, replace=False)]  # n of the feature vectors, drawn without repeats
        values.append(frechet_distance(*feature_stats(subset), reference.mu, reference.sigma))
    k, fid_inf = np.polyfit(1 / np.asarray(ns, dtype=np.float64), values, 1)  # slope k, intercept FID_inf
    return float(fid_inf), values


def kid(x, y) -> float:
    """Kernel inception distance (Bińkowski et al., 2018): the unbiased estimate of MMD^2 between
    (m, d) features x and (n, d) features y with the cubic kernel k(a, b) = (a.b / d + 1)^3.

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y). The within-set means leave out each vector
    paired with itself (the diagonal): that makes the estimate unbiased at any m, n, and able to go below 0.
    """
    x, y = (np.asarray(f, dtype=np.float64) for f in (x, y))
    m, n, d = len(x), len(y), x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))  # (m, m), (n, n), (m, n)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))  # mean of k over pairs i != j
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def tracking_callback(generator: GenerativeModel, reference, n: int = 2_000, every: int = 1, seed: int = 0,
                      extractor: "str | FeatureExtractor" = "auto", key: str = "fid") -> Callable:
    """An epoch callback for :func:`common.training.train`: every ``every`` epochs, the FID of
    ``n`` samples drawn with the same noise (``seed``) against ``reference`` (a dataset split),
    recorded as ``key`` in that epoch's record. With the domain extractor on a CPU it takes a
    few seconds for n = 5,000."""
    ext = extractor if isinstance(extractor, FeatureExtractor) else extractor_for(reference, extractor, generator.device)
    ref = reference_stats(reference, n, ext)

    def callback(epoch: int, history) -> dict | None:
        if epoch % every:
            return None
        return {key: fid(generator, ref, n, ext, seed=seed, progress=False).value}

    return callback
