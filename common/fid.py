"""Fréchet Inception Distance (FID): the distance, the statistics, and one call to measure a model.

Introduced in notebooks/05_fid.ipynb; notebooks 03 and 04 track FID during training.

- :func:`frechet_distance` -- the Fréchet (2-Wasserstein) distance between two Gaussians, in
  float64, with the trace of the matrix square root taken from eigenvalues of a symmetric matrix
  (stable and fast for 2048x2048 covariances, no complex numbers).
- :class:`FIDStats` -- the Gaussian (mean, covariance) fitted to the features of an image set.
- :func:`reference_stats` -- statistics of a real dataset split, cached on disk under
  ``data/fid_stats/`` in a file named by dataset, shape, split, N, seed and extractor id.
- :func:`fid` -- one call for a generator, a tensor of images or a dataset, against a reference;
  it returns an :class:`FIDResult` that states N and the extractor.
- :func:`tracking_callback` -- an epoch callback for :func:`common.training.train` that records
  the FID of samples of fixed noise every k epochs.

The feature extractors (Inception-v3, a domain classifier) are in :mod:`common.features`.
Numbers from different extractors, or from the same extractor with a different N, are not
comparable: every result carries its extractor and N so that nobody compares them by mistake.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import runtime
from .features import FeatureExtractor, extractor_for
from .layers import GenerativeModel, check_count

# --------------------------------------------------------------------------- the distance


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues
    (round-off) are set to 0."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) for covariance matrices, without a non-symmetric square root.

    With R = sigma1^(1/2), the product sigma1 sigma2 = R (R sigma2) has the same eigenvalues as
    (R sigma2) R = R sigma2 R, which is symmetric positive semi-definite. So the trace is the sum of
    the square roots of the eigenvalues of R sigma2 R: two symmetric eigendecompositions, real
    throughout, and well defined even when the covariances are singular (N < d).
    """
    r = _sqrtm_psd(sigma1)
    m = r @ sigma2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)), in float64.

    The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: mu {mu1.shape} / {mu2.shape}, "
                         f"sigma {sigma1.shape} / {sigma2.shape}; both sets need the same feature extractor")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))  # round-off can give -1e-12 for identical statistics


# --------------------------------------------------------------------------- statistics


def _as_float64(x) -> np.ndarray:
    """A tensor (any device) or array as a float64 NumPy array on the CPU."""
    return x.detach().to("cpu", torch.float64).numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)


@dataclass
class FIDStats:
    """The Gaussian fitted to a feature set: ``mu`` (d,), ``sigma`` (d, d), from ``n`` images
    through extractor ``extractor_id``; ``source`` says what the images were."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor_id: str
    source: str = ""
    image_shape: tuple = ()   # (C, H, W) of the images, () if unknown

    def __post_init__(self):
        d = np.shape(self.mu)
        if len(d) != 1 or np.shape(self.sigma) != (d[0], d[0]):
            raise ValueError(f"FID statistics need mu (d,) and sigma (d, d), got {np.shape(self.mu)} and "
                             f"{np.shape(self.sigma)}")
        if not (np.isfinite(self.mu).all() and np.isfinite(self.sigma).all()):
            raise ValueError(f"FID statistics of {self.source or 'a set'} contain NaN or infinite values")
        self.image_shape = tuple(int(v) for v in self.image_shape)

    @classmethod
    def from_features(cls, features, extractor_id: str = "", source: str = "",
                      image_shape: tuple = ()) -> "FIDStats":
        """The mean and (unbiased) covariance of (n, d) feature vectors, in float64."""
        x = _as_float64(features)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need (n, d) features with n >= 2, got shape {x.shape}")
        return cls(x.mean(0), np.cov(x, rowvar=False), len(x), extractor_id, source, image_shape)

    def distance(self, other: "FIDStats") -> float:
        """The Fréchet distance between this Gaussian and ``other``'s (same extractor only)."""
        if self.extractor_id and other.extractor_id and self.extractor_id != other.extractor_id:
            raise ValueError(f"statistics of {self.source or 'a set'} come from extractor {self.extractor_id}, "
                             f"those of {other.source or 'the other'} from {other.extractor_id}: FIDs from "
                             "different extractors are not comparable")
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)

    def save(self, path: str | Path) -> Path:
        """Atomically write an ``.npz`` (plain arrays and strings, loaded without pickle), through
        :func:`common.runtime.atomic_write`."""
        with runtime.atomic_write(path) as f:
            np.savez(f, mu=self.mu, sigma=self.sigma, n=self.n, extractor_id=self.extractor_id,
                     source=self.source, image_shape=np.asarray(self.image_shape, dtype=np.int64))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "FIDStats":
        """Read a file written by :meth:`save`; a damaged one raises ValueError naming it."""
        try:
            with np.load(path, allow_pickle=False) as f:
                shape = tuple(f["image_shape"]) if "image_shape" in f.files else ()
                return cls(f["mu"], f["sigma"], int(f["n"]), str(f["extractor_id"]), str(f["source"]), shape)
        except Exception as err:  # noqa: BLE001 - truncated, empty, not a zip, missing keys, NaN
            why = f"{type(err).__name__}: {str(err)[:150]}"
            raise ValueError(f"{path} is not readable FID statistics ({why})") from None


# --------------------------------------------------------------------------- features of image sets


def _describe(source) -> str:
    """A short name for a source, never its contents."""
    if isinstance(source, GenerativeModel):
        return f"samples of {type(source).__name__}"
    if torch.is_tensor(source):
        return f"a tensor of {len(source):,} images" if source.ndim else "a scalar tensor"
    if isinstance(getattr(source, "name", None), str) and isinstance(getattr(source, "split", None), str):
        return f"{source.name}/{source.split}"
    return type(source).__name__


def _image_shape(source) -> tuple:
    """(C, H, W) of a source's images, or () if it cannot be known without computing them."""
    if isinstance(source, FIDStats):
        return source.image_shape
    if torch.is_tensor(source):
        return tuple(source.shape[1:]) if source.ndim == 4 else ()
    shape = getattr(source, "image_shape", ())
    return tuple(shape) if isinstance(shape, (tuple, list)) else ()


def _batches(source, n: int, batch_size: int, seed: int):
    """Yield image batches in [0, 1]: n samples of a generator (class labels balanced for a
    conditional one) or n images of a tensor / dataset (a seeded random subset if it has more)."""
    if isinstance(source, GenerativeModel):
        labels = torch.arange(n) % source.n_classes if source.conditional else None
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            yield source.sample(b, None if labels is None else labels[i:i + b])
        return
    total = len(source)
    if n > total:
        raise ValueError(f"asked for N = {n:,} images but {_describe(source)} has only {total:,}")
    order = (torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
             if n < total else torch.arange(total))
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size].to(source.device)
        yield source[idx][0] if hasattr(source, "labels") else source[idx]


def _device(source) -> torch.device:
    if isinstance(source, GenerativeModel):
        return source.device
    return torch.device(source.device) if hasattr(source, "device") else runtime.get_device()


def extract_features(source, n: int, extractor: FeatureExtractor, *, seed: int = 0,
                     progress: bool = True, name: str | None = None) -> torch.Tensor:
    """(n, dim) float64 features on the CPU of ``n`` images of ``source``: a generator (samples
    drawn under ``seed``, class-balanced if conditional), an image tensor or a dataset (a random
    subset chosen by ``seed`` when it has more). ``name`` labels the progress bar."""
    if check_count(n, "N (images per set)") < 2:
        raise ValueError(f"FID needs N >= 2 images per set, got {n}")
    bar = runtime.progress(total=n, unit="img", disable=not progress,
               desc=f"{extractor.name} features of {name or _describe(source)}, N={n:,}")
    device = _device(source)
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)  # a generator's samples depend only on the seed
        for images in _batches(source, n, extractor.batch_size, seed):
            out.append(extractor(images).to("cpu", torch.float64))
            bar.update(len(images))
    bar.close()
    feats = torch.cat(out)
    if not torch.isfinite(feats).all():
        raise ValueError(f"{extractor.name} features of {name or _describe(source)} contain NaN or infinite "
                         "values; check the images (a model with NaN weights?) and the extractor's weights")
    return feats


def compute_stats(source, n: int, extractor: FeatureExtractor, *, seed: int = 0,
                  progress: bool = True, name: str | None = None) -> FIDStats:
    """Mean and covariance of the features of ``n`` images of ``source`` (see :func:`extract_features`)."""
    feats = extract_features(source, n, extractor, seed=seed, progress=progress, name=name)
    return FIDStats.from_features(feats, extractor.id, name or _describe(source), _image_shape(source))


def stats_cache_dir() -> Path:
    return runtime.data_dir() / "fid_stats"


def reference_stats(data, n: int, extractor: FeatureExtractor, *, seed: int = 0, cache: bool = True,
                    progress: bool = True) -> FIDStats:
    """Statistics of ``n`` real images of a dataset split (an :class:`~common.data.ImageData`; all
    of it, or a seeded random subset), cached in ``data/fid_stats/<tag>-<split>-of<size>-n<N>-seed<seed>-<extractor id>.npz``.
    A change of dataset, image size, N, seed or extractor (weights included) is another file."""
    path = stats_cache_dir() / f"{data.tag}-{data.split}-of{len(data)}-n{n}-seed{seed}-{extractor.id}.npz"
    if cache and path.is_file():
        try:
            stats = FIDStats.load(path)
            if stats.n == n and stats.extractor_id == extractor.id:
                return stats
            warnings.warn(f"{path} holds statistics of N = {stats.n} from {stats.extractor_id}; recomputing it")
        except ValueError as err:
            warnings.warn(f"{err}; recomputing it")
    stats = compute_stats(data, n, extractor, seed=seed, progress=progress)
    stats.source = f"{data.name}/{data.split}"
    if cache:
        stats.save(path)
    return stats


def fid_infinity(features, reference: FIDStats, ns, seed: int = 0) -> tuple[float, list[float]]:
    """Extrapolate FID to infinitely many samples (Chong & Forsyth, 2020).

    The FID of N samples is biased upwards by roughly k / N, so FID_N = FID_inf + k / N: we
    compute FID_N for random subsets of ``features`` of each size in ``ns`` (against the fixed
    ``reference`` statistics) and fit that line by least squares in 1/N. Returns
    (FID_inf, [FID_N for ns]).
    """
    x = _as_float64(features)
    rng = np.random.default_rng(seed)
    values = []
    for n in ns:
        if n > len(x):
            raise ValueError(f"subset size {n} exceeds the {len(x)} feature vectors")
        values.append(FIDStats.from_features(x[rng.choice(len(x), n, replace=False)]).distance(reference))
    slope, intercept = np.polyfit(1 / np.asarray(ns, dtype=np.float64), values, 1)
    return float(intercept), values


# --------------------------------------------------------------------------- FID


@dataclass
class FIDResult:
    """A FID value with what it was measured with; ``float(result)`` is the value."""

    value: float
    n: int
    n_reference: int
    extractor: str
    source: str
    reference: str
    seconds: float

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        return (f"FID {self.value:.2f} ({self.extractor} features; N = {self.n:,} {self.source} vs "
                f"{self.n_reference:,} {self.reference}; {self.seconds:.1f} s)")


def fid(source, reference, n: int = 10_000, extractor: "str | FeatureExtractor" = "auto", *,
        seed: int = 0, progress: bool = True, name: str | None = None) -> FIDResult:
    """The FID between ``n`` images of ``source`` and ``reference``.

    - ``source``: a generator with ``sample(n)`` (class-balanced labels if conditional; samples
      drawn under ``seed``), an image tensor (N, C, H, W) in [0, 1], a dataset, or FIDStats.
    - ``reference``: a dataset split (:class:`~common.data.ImageData`; statistics of ``n`` of its
      images, cached on disk) or FIDStats computed with the same extractor.
    - ``extractor``: ``"auto"`` (the reference dataset's domain classifier where one is trained,
      else Inception-v3), ``"domain"``, ``"inception"``, or a FeatureExtractor.
    - ``name``: how the result and progress bar call the source (default: its class name).
    """
    start = time.perf_counter()
    if not (isinstance(source, (GenerativeModel, FIDStats)) or torch.is_tensor(source) or hasattr(source, "labels")):
        raise TypeError(f"fid() measures a generator, an image tensor (N, C, H, W), a dataset or FIDStats; "
                        f"got {type(source).__name__}")
    src_shape, ref_shape = _image_shape(source), _image_shape(reference)
    if src_shape and ref_shape and src_shape != ref_shape:
        raise ValueError(f"{_describe(source)} has images of {'x'.join(map(str, src_shape))} but the reference "
                         f"{_describe(reference)} has {'x'.join(map(str, ref_shape))}: FID compares like with like. "
                         "Load the reference with image_size=... (and the same channels), or sample at its size")
    if isinstance(extractor, FeatureExtractor):
        ext = extractor
    elif isinstance(reference, FIDStats):
        raise ValueError("with FIDStats as the reference, pass the FeatureExtractor that computed them")
    else:
        ext = extractor_for(reference, extractor, _device(reference))
    ref = reference if isinstance(reference, FIDStats) else reference_stats(reference, n, ext, progress=progress)
    stats = source if isinstance(source, FIDStats) else compute_stats(source, n, ext, seed=seed,
                                                                      progress=progress, name=name)
    if stats.extractor_id and stats.extractor_id != ext.id:
        raise ValueError(f"statistics of {stats.source or 'a set'} come from extractor {stats.extractor_id}, "
                         f"not {ext.id}: FIDs from different extractors are not comparable")
    value = stats.distance(ref)
    return FIDResult(value, stats.n, ref.n, ext.name, stats.source or _describe(source),
                     ref.source or "reference", time.perf_counter() - start)


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
