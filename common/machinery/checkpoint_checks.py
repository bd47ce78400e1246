"""Check a checkpoint file before any of its tensors is read, and the model it names before it is built.

:mod:`common.machinery.checkpoints` saves and loads; this module holds what it checks a file with:

- Nothing is read before it is checked: the zip's directory bounds the pickle (``PICKLE_BYTES``);
  the pickle, loaded on the ``meta`` device (names, shapes, dtypes, no data), must hold the weights
  of the model it names and at most ``EXTRA_BYTES`` of other tensors; the tensor records may
  declare no more bytes than those tensors take, and must be stored uncompressed, as torch.save
  writes them. So loading a file allocates no more than the file's size and the model it names.
- The model's class is looked up by name in :data:`MODELS`, the course's own model classes; its
  stored constructor arguments are checked against its signature, and it is built on the ``meta``
  device (no memory) to compare its shapes and dtypes with the stored weights.
- Every failure is a :class:`CheckpointError` naming the file and the fix; loading never advises
  turning the safe load (``weights_only=True``) off.
"""
from __future__ import annotations

import importlib
import inspect
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

FORMAT = "dgm-course-checkpoint/1"
PICKLE_BYTES = 64 << 20    # configs, extras and a history's step losses: 0.13 MB at most in the cpu profile
EXTRA_BYTES = 128 << 20    # tensors besides the weights, a history's snapshots: 78 kB in the cpu profile, and
                           # 40 MB for 50 epochs of 64 colour 64 x 64 images
# Every model class a checkpoint may name, and the module that defines it. Loading imports that
# module on demand, so ``pretrained.load("cdcgan_generator-...")`` works in a fresh kernel.
MODELS: dict[str, str] = {
    "MLPVAE": "common.vae", "ConvVAE": "common.vae", "VQVAE": "common.vqvae",
    "GMMPriorSampler": "common.priors", "VAEPriorSampler": "common.priors",
    "DCGANGenerator": "common.dcgan", "DCGANDiscriminator": "common.dcgan",
    "ConditionalGenerator": "common.cgan", "ConditionalDiscriminator": "common.cgan",
    "ProjectionDiscriminator": "common.cgan",
    "MLPClassifier": "common.classifiers", "ConvClassifier": "common.classifiers",
    "IndependentClassifier": "common.classifiers",
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match what the caller expects; ``reason`` is
    the cause in a few words, without the path and the fix."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def model_class(name: str) -> type[torch.nn.Module] | None:
    """The class a checkpoint names, imported from the module :data:`MODELS` lists for it (no
    module has to be imported first), or None for a name the course does not know."""
    module = MODELS.get(name)
    return None if module is None else getattr(importlib.import_module(module), name)


def check_file(path: Path) -> None:
    """Check the checkpoint file at ``path`` before any tensor data is read: its zip directory, then
    its pickle loaded on the ``meta`` device (see the module's docstring)."""
    records = _tensor_records(path)
    outline = torch_load(path, "meta")   # names, shapes and dtypes: no tensor data is read
    if not isinstance(outline, dict) or outline.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file. Delete it and re-run the notebook "
                              "that trains it.", f"not a {FORMAT} file")
    _check_tensors(path, outline, records)


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is corrupt or not a course checkpoint ({why}). Delete it and "
                           "re-run the notebook that trains it.", why)


def torch_load(path: Path, map_location: str) -> Any:
    """``torch.load(weights_only=True)``, its failures as a :class:`CheckpointError` that never
    advises turning the safe load off."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, MemoryError):  # cannot read it here (permissions, memory): not the file's fault
        raise
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle error, wrong file...
        if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in str(err):
            why = ("it holds Python objects that a safe load refuses to rebuild (the course only writes "
                   "tensors and plain values, so this file was written by other code or altered)")
        else:  # torch's first line, without any advice to turn the safe load off
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            why = f"{type(err).__name__}: {first}" if "weights_only" not in first else type(err).__name__
        raise _corrupt(path, why) from None


def _size(n: float) -> str:
    """A byte count in words: ``"83.9 MB"``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


_TENSOR_RECORD = re.compile(r"[^/]+/data/\d+")   # torch.save's record of one tensor storage


def _tensor_records(path: Path) -> list[zipfile.ZipInfo]:
    """The zip's tensor records as its central directory declares them, before any member is read.
    Any other member (the pickle, a few version records) over ``PICKLE_BYTES`` is refused here."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except OSError:  # cannot read it here (permissions): not the file's fault
        raise
    except Exception as err:  # noqa: BLE001 - a damaged directory raises BadZipFile, UnicodeDecodeError...
        raise _corrupt(path, f"not a readable zip archive: {type(err).__name__}: {str(err)[:200]}") from None
    for member in members:
        if not _TENSOR_RECORD.fullmatch(member.filename) and member.file_size > PICKLE_BYTES:
            raise _corrupt(path, f"its member {_inner(member)} declares {_size(member.file_size)}, where a course "
                                 f"checkpoint has at most {_size(PICKLE_BYTES)}")
    return [member for member in members if _TENSOR_RECORD.fullmatch(member.filename)]


def _inner(member: zipfile.ZipInfo) -> str:
    return member.filename.split("/", 1)[-1]    # without the archive's folder


def _tensors(value: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(where, tensor)`` for every tensor in nested lists, tuples and dicts."""
    if torch.is_tensor(value):
        yield where, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{where}[{k!r}]")


def storage_bytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


def extras_over_bound(payload: dict) -> str:
    """What the tensors of a payload besides its weights hold, if that is over ``EXTRA_BYTES``."""
    others = [(where, storage_bytes(t)) for key, value in payload.items() if key != "state_dict"
              for where, t in _tensors(value, key)]
    total = sum(n for _, n in others)
    if total <= EXTRA_BYTES:
        return ""
    where, n = max(others, key=lambda item: item[1])
    return (f"{_size(total)} of tensors besides the weights (the largest: {where}, {_size(n)}), where a checkpoint "
            f"holds at most {_size(EXTRA_BYTES)}")


def _check_tensors(path: Path, outline: dict, records: list[zipfile.ZipInfo]) -> None:
    """Check the tensors of a payload loaded on the ``meta`` device before their data is read: the
    weights against the model the payload names, everything else against ``EXTRA_BYTES``, and the
    tensor ``records`` against what all these tensors take (a record is read whole, at the size
    it declares, whatever its tensor needs)."""
    model = empty_model(path, outline)
    check_weights(path, model, outline["state_dict"])
    over = extras_over_bound(outline)
    if over:
        raise _corrupt(path, f"it holds {over}")
    needed = sum(storage_bytes(t) for _, t in _tensors(outline, "payload"))
    declared = sum(record.file_size for record in records)
    if declared > needed:
        raise _corrupt(path, f"its tensor records declare {_size(declared)} of tensor data, where its tensors "
                             f"need {_size(needed)}")
    packed = next((record for record in records if record.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        raise _corrupt(path, f"its tensor record {_inner(packed)} is compressed ({_size(packed.compress_size)} for "
                             f"{_size(packed.file_size)}), which torch.save never does")


def empty_model(path: Path, payload: dict) -> torch.nn.Module:
    """The model a payload names, built on the ``meta`` device (shapes only, no memory, no random
    numbers drawn) once its class and constructor arguments are checked."""
    cls = model_class(str(payload.get("model_class")))
    if cls is None:
        raise CheckpointError(f"{path} holds a {payload.get('model_class')!r:.60}, which is not one of the course's "
                              f"model classes ({', '.join(MODELS)}); the file was written by other code")
    kwargs, weights = payload.get("model_kwargs"), payload.get("state_dict")
    if not isinstance(kwargs, dict) or not isinstance(weights, dict):
        raise CheckpointError(f"{path} lacks its constructor arguments or weights; delete it and retrain")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise CheckpointError(f"{path}: its constructor arguments do not fit {cls.__name__}"
                              f"{inspect.signature(cls)}: {err}. The file is from another version of the "
                              "course or was altered; delete it and retrain") from None
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return cls(**kwargs)
    except Exception as err:  # noqa: BLE001 - any constructor failure: bad values in the file
        raise CheckpointError(f"{path}: {cls.__name__}(**{kwargs!r:.200}) cannot be built "
                              f"({type(err).__name__}: {str(err)[:200]}); delete the file and retrain") from None


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_weights(path: Path, model: torch.nn.Module, weights: dict) -> None:
    """Compare the stored weights with the (empty) model's parameters and buffers: the same names
    and shapes, a dtype of the same kind (any float where the model has floats, which
    :func:`checkpoints.rebuild` converts; anything else exactly), and no more storage than the shape takes. So
    a file can neither make the loader allocate a model larger than the weights it holds nor load
    weights that do not fit."""
    expected, stored = model.state_dict(), weights
    not_tensors = [k for k, v in stored.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise _corrupt(path, f"state_dict[{not_tensors[0]!r}] is not a tensor")
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != {k: tuple(v.shape) for k, v in stored.items()}:
        missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        wrong = [f"{k} {tuple(stored[k].shape)} (model {shapes[k]})" for k in expected
                 if k in stored and tuple(stored[k].shape) != shapes[k]]
        parts = ([f"missing {', '.join(missing[:4])}"] if missing else []) + \
                ([f"unexpected {', '.join(f'{k} ({_size(storage_bytes(stored[k]))})' for k in unexpected[:4])}"]
                 if unexpected else []) + \
                ([f"shapes {', '.join(wrong[:4])}"] if wrong else [])
        raise CheckpointError(f"{path}: the saved weights do not fit {type(model).__name__}({model.hparams!r:.200}): "
                              f"{'; '.join(parts)}. Delete the file and retrain")
    for k, v in stored.items():
        want = expected[k].dtype
        if v.dtype != want and not (v.is_floating_point() and want.is_floating_point):
            raise CheckpointError(f"{path}: state_dict[{k!r}] is {_dtype(v.dtype)}, but the model needs "
                                  f"{_dtype(want)}: the file was altered or written by other code. Delete the file and retrain")
        if storage_bytes(v) > v.numel() * v.element_size():
            raise _corrupt(path, f"state_dict[{k!r}] is a view of {_size(storage_bytes(v))} of storage, where its "
                                 f"shape takes {_size(v.numel() * v.element_size())}")
