"""FID's machinery: features of image sets, the statistics file, the reference cache, the door.

The maths (the Fréchet distance, the mean and covariance of features) is :mod:`common.fid`,
written in notebooks/05_fid.ipynb; this module is what :func:`common.fid.fid` stands on:

- :class:`FIDStats` -- the Gaussian (mean, covariance) of a feature set with what it was computed
  from (N, extractor id, source, image shape), saved to and loaded from ``.npz`` without pickle.
- :func:`extract_features` / :func:`compute_stats` -- the features (and their statistics) of N
  images of a generator, a tensor or a dataset, batch by batch, seeded.
- :func:`reference_stats` -- the statistics of a real dataset split, cached on disk under
  ``data/fid_stats/`` by :mod:`.stats_cache` (file names, the hash of the images used, a folder
  that cannot be written costing the cache, never the value).
- :func:`check_fid_call` -- fid()'s door: what it can measure, like-for-like image shapes, one
  extractor for both sets; it returns the extractor to use.
- :class:`FIDResult` -- a value that states N and the extractor, so nobody compares FIDs by mistake.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import runtime, storage
from .checks import check_count
from .features import FeatureExtractor, extractor_for
from .stats_cache import (HASH_CHUNK, cache_name, cached, images_id, save_or_warn,  # noqa: F401 (re-exported)
                          stats_cache_dir, subset_order)


def _is_generator(source) -> bool:
    from ..layers import GenerativeModel  # teaching code: imported when used, never at load time
    return isinstance(source, GenerativeModel)


def _as_float64(x) -> np.ndarray:
    """A tensor (any device) or array as a float64 NumPy array on the CPU."""
    return x.detach().to("cpu", torch.float64).numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- the statistics file


@dataclass
class FIDStats:
    """The Gaussian fitted to a feature set: ``mu`` (d,), ``sigma`` (d, d), from ``n`` images
    through extractor ``extractor_id``; ``source`` says what the images were, ``data_id`` which
    pixels exactly (:func:`images_id`; "" if unknown)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor_id: str
    source: str = ""
    image_shape: tuple = ()   # (C, H, W) of the images, () if unknown
    data_id: str = ""

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
        """The mean and (unbiased) covariance of (n, d) feature vectors, in float64
        (:func:`common.fid.feature_stats`)."""
        from ..fid import feature_stats  # the maths, written in notebook 05
        x = _as_float64(features)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need (n, d) features with n >= 2, got shape {x.shape}")
        return cls(*feature_stats(x), len(x), extractor_id, source, image_shape)

    def distance(self, other: "FIDStats") -> float:
        """The Fréchet distance between this Gaussian and ``other``'s (same extractor only)."""
        from ..fid import frechet_distance  # the maths, written in notebook 05
        if self.extractor_id and other.extractor_id and self.extractor_id != other.extractor_id:
            raise ValueError(f"statistics of {self.source or 'a set'} come from extractor {self.extractor_id}, "
                             f"those of {other.source or 'the other'} from {other.extractor_id}: FIDs from "
                             "different extractors are not comparable")
        if self.mu.shape != other.mu.shape:
            raise ValueError(f"shapes do not match: mu {self.mu.shape} / {other.mu.shape}; both sets need the "
                             "same feature extractor")
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)

    def save(self, path: str | Path) -> Path:
        """Atomically write an ``.npz`` (plain arrays and strings, loaded without pickle), through
        :func:`common.machinery.storage.atomic_write`."""
        with storage.atomic_write(path) as f:
            np.savez(f, mu=self.mu, sigma=self.sigma, n=self.n, extractor_id=self.extractor_id,
                     source=self.source, image_shape=np.asarray(self.image_shape, dtype=np.int64),
                     data_id=self.data_id)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "FIDStats":
        """Read a file written by :meth:`save`; a damaged one raises ValueError naming it."""
        try:
            with np.load(path, allow_pickle=False) as f:
                shape = tuple(f["image_shape"]) if "image_shape" in f.files else ()
                data_id = str(f["data_id"]) if "data_id" in f.files else ""   # older files: unknown
                return cls(f["mu"], f["sigma"], int(f["n"]), str(f["extractor_id"]), str(f["source"]), shape,
                           data_id)
        except Exception as err:  # noqa: BLE001 - truncated, empty, not a zip, missing keys, NaN
            why = f"{type(err).__name__}: {str(err)[:150]}"
            raise ValueError(f"{path} is not readable FID statistics ({why})") from None


# --------------------------------------------------------------------------- features of image sets


def describe(source) -> str:
    """A short name for a source, never its contents."""
    if _is_generator(source):
        return f"samples of {type(source).__name__}"
    if torch.is_tensor(source):
        return f"a tensor of {len(source):,} images" if source.ndim else "a scalar tensor"
    if isinstance(getattr(source, "name", None), str) and isinstance(getattr(source, "split", None), str):
        return f"{source.name}/{source.split}"
    return type(source).__name__


def image_shape_of(source) -> tuple:
    """(C, H, W) of a source's images, or () if it cannot be known without computing them."""
    if isinstance(source, FIDStats):
        return source.image_shape
    if torch.is_tensor(source):
        return tuple(source.shape[1:]) if source.ndim == 4 else ()
    shape = getattr(source, "image_shape", ())
    return tuple(shape) if isinstance(shape, (tuple, list)) else ()


SAMPLE_CHUNK = 500   # a generator's samples for FID are drawn this many at a time


def _batches(source, n: int, batch_size: int, seed: int):
    """Yield image batches in [0, 1]: n samples of a generator (class labels balanced for a
    conditional one) or n images of a tensor / dataset (a seeded random subset if it has more)."""
    if _is_generator(source):
        # drawn in chunks of a fixed size, then cut to the extractor's batches: the samples (and so
        # the FID) do not depend on the extractor's batch size, which differs between CPU and GPU
        labels = torch.arange(n) % source.n_classes if source.conditional else None
        for i in range(0, n, SAMPLE_CHUNK):
            b = min(SAMPLE_CHUNK, n - i)
            yield from source.sample(b, None if labels is None else labels[i:i + b]).split(batch_size)
        return
    total = len(source)
    if n > total:
        raise ValueError(f"asked for N = {n:,} images but {describe(source)} has only {total:,}")
    order = subset_order(total, n, seed)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size].to(source.device)
        yield source[idx][0] if hasattr(source, "labels") else source[idx]


def _device(source) -> torch.device:
    if _is_generator(source):
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
                           desc=f"{extractor.name} features of {name or describe(source)}, N={n:,}")
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
        raise ValueError(f"{extractor.name} features of {name or describe(source)} contain NaN or infinite "
                         "values; check the images (a model with NaN weights?) and the extractor's weights")
    return feats


def compute_stats(source, n: int, extractor: FeatureExtractor, *, seed: int = 0,
                  progress: bool = True, name: str | None = None) -> FIDStats:
    """Mean and covariance of the features of ``n`` images of ``source`` (see :func:`extract_features`)."""
    feats = extract_features(source, n, extractor, seed=seed, progress=progress, name=name)
    return FIDStats.from_features(feats, extractor.id, name or describe(source), image_shape_of(source))


# --------------------------------------------------------------------------- reference statistics


def reference_stats(data, n: int, extractor: FeatureExtractor, *, seed: int = 0, cache: bool = True,
                    progress: bool = True) -> FIDStats:
    """Statistics of ``n`` real images of a dataset split (an :class:`~common.machinery.data.ImageData`;
    all of it, or a seeded random subset), cached in
    ``data/fid_stats/<tag>-<split>-of<size>-n<N>-seed<seed>-<extractor id>.npz``.
    A change of dataset, image size, N, seed or extractor (weights included) is another file; a
    change of the images themselves (the same names, other pixels) is noticed by the hash the file
    records (:func:`images_id`) and recomputes it, with a warning. Where the cache cannot be written
    the statistics are returned all the same, with a warning naming the folder."""
    n = check_count(n, "N (images per set)")
    name = cache_name(data, n, seed, extractor.id)
    data_id = images_id(data, n, seed) if cache else ""
    stats = cached(name, n, extractor.id, data_id, FIDStats.load) if cache else None
    if stats is not None:
        return stats
    stats = compute_stats(data, n, extractor, seed=seed, progress=progress)
    stats.source, stats.data_id = f"{data.name}/{data.split}", data_id
    if cache:
        save_or_warn(stats, name)
    return stats


# --------------------------------------------------------------------------- the door and the result


def check_fid_call(source, reference, extractor: "str | FeatureExtractor") -> FeatureExtractor:
    """fid()'s door: refuse a source it cannot measure, images of another shape than the
    reference's, and statistics from another extractor. Returns the extractor to use: ``extractor``
    itself, or for ``"auto"`` / ``"domain"`` / ``"inception"`` the one for the reference dataset."""
    if not (_is_generator(source) or isinstance(source, FIDStats) or torch.is_tensor(source)
            or hasattr(source, "labels")):
        raise TypeError(f"fid() measures a generator, an image tensor (N, C, H, W), a dataset or FIDStats; "
                        f"got {type(source).__name__}")
    src_shape, ref_shape = image_shape_of(source), image_shape_of(reference)
    if src_shape and ref_shape and src_shape != ref_shape:
        raise ValueError(f"{describe(source)} has images of {'x'.join(map(str, src_shape))} but the reference "
                         f"{describe(reference)} has {'x'.join(map(str, ref_shape))}: FID compares like with like. "
                         "Load the reference with image_size=... (and the same channels), or sample at its size")
    if isinstance(extractor, FeatureExtractor):
        ext = extractor
    elif isinstance(reference, FIDStats):
        raise ValueError("with FIDStats as the reference, pass the FeatureExtractor that computed them")
    else:
        ext = extractor_for(reference, extractor, _device(reference))
    for stats in (source, reference):
        if isinstance(stats, FIDStats) and stats.extractor_id and stats.extractor_id != ext.id:
            raise ValueError(f"statistics of {stats.source or 'a set'} come from extractor {stats.extractor_id}, "
                             f"not {ext.id}: FIDs from different extractors are not comparable")
    return ext


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

    def __post_init__(self):
        self.source = self.source or "FIDStats"           # statistics given without a name
        self.reference = self.reference or "reference"

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        return (f"FID {self.value:.2f} ({self.extractor} features; N = {self.n:,} {self.source} vs "
                f"{self.n_reference:,} {self.reference}; {self.seconds:.1f} s)")
