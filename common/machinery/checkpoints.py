"""Save trained models with what is needed to rebuild them; load them back safely.

A checkpoint is one ``.pt`` file in ``data/checkpoints/<profile>/`` (``smoke``, ``cpu`` or ``gpu``)
holding plain containers only: the model's class name and constructor arguments, its
``state_dict``, the notebook config that trained it, and optional extras (a training history).

- Writing is atomic: the file is written to a uniquely named temporary file next to its target,
  flushed to disk, read back, then renamed over it, so an interrupted save never leaves a
  half-written checkpoint behind. Ctrl-C during the write ends as ``KeyboardInterrupt`` after the
  temporary file is removed; temporary files of killed processes are removed by the next save.
- Configs and extras are stored as plain values (NumPy scalars become numbers, paths strings);
  anything a safe load could not read back is refused at save time, naming its key.
- Loading uses ``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects:
  the class is looked up by name in :data:`MODELS`, the course's own model classes, and the
  stored constructor arguments are checked against its signature and, on the ``meta`` device
  (no memory), against the stored weights' shapes before the model is built.
- Nothing is read before it is checked: the zip's directory bounds the pickle (``PICKLE_BYTES``);
  the pickle, loaded on the ``meta`` device (names, shapes, dtypes, no data), must hold the weights
  of the model it names and at most ``EXTRA_BYTES`` of other tensors; the tensor records may
  declare no more bytes than those tensors take, and must be stored uncompressed, as torch.save
  writes them. So loading a file allocates no more than the file's size and the model it names.
- Weights are loaded in the model's dtype (a float16 or float64 file's floats are converted; an
  integer where the model has floats is refused) and in their own contiguous storage.
- A corrupt file, an unknown class, arguments or weights that do not fit, or a config that differs
  from the one expected raises :class:`CheckpointError` naming the file and the fix.

Every course model derives from :class:`common.layers.Module`, which records the arguments each
instance was built with in ``model.hparams`` (so no class copies them by hand).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import pickle
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from . import runtime, storage

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


def to_plain(value: Any, where: str = "value") -> Any:
    """``value`` as what ``torch.load(weights_only=True)`` reads back: numbers, strings, None,
    tensors, and lists, tuples and dicts of them. NumPy scalars become numbers, NumPy arrays lists,
    paths and torch dtypes/devices strings, dataclasses dicts; anything else, and a container that
    contains itself, is a :class:`CheckpointError` naming ``where`` (e.g. ``config['act']``)."""
    return _plain(value, where, set())


def _plain(value: Any, where: str, inside: set[int]) -> Any:
    """:func:`to_plain`; ``inside`` holds the ids of the containers that ``value`` is in."""
    if isinstance(value, np.generic):  # first: np.float64 is also a float, but pickles as NumPy
        return _plain(value.item(), where, inside)
    if value is None:
        return None
    for base in (bool, int, float, str):  # subclasses (an IntEnum, a str Enum) as their base type
        if isinstance(value, base):
            return base(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where, inside)
    if isinstance(value, (os.PathLike, torch.dtype, torch.device)):
        return str(value)
    is_dataclass = dataclasses.is_dataclass(value) and not isinstance(value, type)
    if not (is_dataclass or isinstance(value, (list, tuple, dict))):
        raise CheckpointError(f"{where} is of type {type(value).__name__} ({value!r:.60}), which a safe load "
                              "(weights_only=True) cannot read back; store a plain value instead (a number, a "
                              "string such as its name, or a list/dict of those)")
    if id(value) in inside:
        raise CheckpointError(f"{where} contains itself (a {type(value).__name__} that holds a reference to "
                              "itself or to a container it is in), which a checkpoint cannot store; store a plain "
                              "value instead (a number, a string, or a list/dict of those)")
    inside.add(id(value))
    try:
        if is_dataclass:
            return _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where, inside)
        if isinstance(value, (list, tuple)):
            items = [_plain(v, f"{where}[{i}]", inside) for i, v in enumerate(value)]
            return items if isinstance(value, list) else tuple(items)
        out = {}
        for k, v in value.items():
            key = _plain(k, f"{where} key {k!r}", inside)
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where} has the key {k!r} ({type(k).__name__}); use strings or ints as keys")
            out[key] = _plain(v, f"{where}[{key!r}]", inside)
        return out
    finally:
        inside.discard(id(value))


def config_dict(config: Any) -> dict:
    """A config (a dataclass, a mapping or None) as the plain dict a checkpoint stores."""
    if config is None:
        return {}
    plain = dataclasses.is_dataclass(config) or isinstance(config, dict)   # as it is: a copy hides a cycle's start
    return to_plain(config if plain else dict(config), "config")


def checkpoint_path(name: str | Path) -> Path:
    """``name`` as a path: a bare name like "vae_conv" goes to the checkpoint directory."""
    path = Path(name)
    if path.suffix != ".pt" and path.parent == Path("."):
        path = runtime.checkpoint_dir() / f"{name}.pt"
    return path


def save_checkpoint(model: torch.nn.Module, name: str | Path, config: Any = None,
                    **extra: Any) -> Path:
    """Atomically save ``model`` (and ``config``, ``extra``) and return the file's path."""
    if type(model).__name__ not in MODELS or not hasattr(model, "hparams"):
        raise CheckpointError(f"{type(model).__name__} is not one of the course's model classes "
                              f"({', '.join(MODELS)}), so a checkpoint could not rebuild it")
    path = checkpoint_path(name)
    payload = {
        "format": FORMAT,
        "model_class": type(model).__name__,
        "model_kwargs": to_plain(dict(model.hparams), "model_kwargs"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config_dict(config),
        "extra": to_plain(extra, "extra"),
        "torch_version": str(torch.__version__),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    over = _extras_over_bound(payload)
    if over:   # a file that loading would refuse is never written
        raise CheckpointError(f"{path} was not saved: its config and extras hold {over}; keep fewer or smaller "
                              "snapshots")
    with storage.signals_deferred():  # a Ctrl-C now ends as KeyboardInterrupt after the save, never inside it
        with storage.atomic_write(path, check=lambda tmp: _loads_back(tmp, path)) as f:
            torch.save(payload, f)
    return path


def _loads_back(tmp: Path, path: Path) -> None:
    """What was written must load back safely, or it is not saved."""
    try:
        torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{path} was not saved: the file written cannot be loaded back safely "
                              f"({type(err).__name__}); a config or extra value is not plain") from None


def read_checkpoint(name: str | Path) -> dict:
    """The raw payload of a checkpoint, checked before any tensor is read (see the module's
    docstring); never unpickles arbitrary code."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Run the notebook that trains it "
                              "(its name is in the checkpoint's name) in the same mode first.")
    records = _tensor_records(path)
    outline = _torch_load(path, "meta")   # names, shapes and dtypes: no tensor data is read
    if not isinstance(outline, dict) or outline.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file. Delete it and re-run the notebook "
                              "that trains it.", f"not a {FORMAT} file")
    _check_tensors(path, outline, records)
    return _torch_load(path, "cpu")


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is corrupt or not a course checkpoint ({why}). Delete it and "
                           "re-run the notebook that trains it.", why)


def _torch_load(path: Path, map_location: str) -> Any:
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


def _storage_bytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


def _extras_over_bound(payload: dict) -> str:
    """What the tensors of a payload besides its weights hold, if that is over ``EXTRA_BYTES``."""
    others = [(where, _storage_bytes(t)) for key, value in payload.items() if key != "state_dict"
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
    model = _empty_model(path, outline)
    _weights_fit(path, model, outline["state_dict"])
    over = _extras_over_bound(outline)
    if over:
        raise _corrupt(path, f"it holds {over}")
    needed = sum(_storage_bytes(t) for _, t in _tensors(outline, "payload"))
    declared = sum(record.file_size for record in records)
    if declared > needed:
        raise _corrupt(path, f"its tensor records declare {_size(declared)} of tensor data, where its tensors "
                             f"need {_size(needed)}")
    packed = next((record for record in records if record.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        raise _corrupt(path, f"its tensor record {_inner(packed)} is compressed ({_size(packed.compress_size)} for "
                             f"{_size(packed.file_size)}), which torch.save never does")


def _same(a: Any, b: Any) -> bool:
    """Equality of plain values that also holds for tensors (where == gives a tensor) and for NaN
    (which a config may hold, and which == never equals)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool(
            torch.equal(a, b) or (a.dtype == b.dtype and a.is_floating_point()
                                  and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def config_differences(saved: Mapping, expected: Any) -> list[str]:
    """Human-readable list of keys whose values differ between two configs (both compared as
    stored: see :func:`config_dict`)."""
    saved, expected = config_dict(saved), config_dict(expected)
    keys = sorted(set(saved) | set(expected), key=str)
    missing = "<missing>"
    return [f"{k}: checkpoint has {saved.get(k, missing)!r}, expected {expected.get(k, missing)!r}"
            for k in keys if not _same(saved.get(k, missing), expected.get(k, missing))]


def load_checkpoint(name: str | Path, device: torch.device | str = "cpu",
                    expect_config: Any = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model saved under ``name`` on ``device``; return ``(model, payload)``.

    ``payload["config"]`` is the training config and ``payload["extra"]`` the extras. With
    ``expect_config``, a checkpoint trained with a different config raises :class:`CheckpointError`.
    The model is returned in eval mode.
    """
    payload = read_checkpoint(name)
    path = checkpoint_path(name)
    if expect_config is not None:
        diffs = config_differences(payload["config"], expect_config)
        if diffs:
            raise CheckpointError(f"{path} was trained with another config:\n  "
                                  + "\n  ".join(diffs) + "\nRetrain it, or change the config back.")
    return rebuild(payload, path, device), payload


def rebuild(payload: dict, path: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model a payload of :func:`read_checkpoint` describes, on ``device`` and in eval mode.
    Its constructor arguments are checked against the class's signature, and its shapes and dtypes
    against the stored weights on the ``meta`` device, before any memory is allocated. Floating
    weights are converted to the model's dtype, and each gets its own contiguous storage."""
    model = _empty_model(path, payload)
    _weights_fit(path, model, payload["state_dict"])
    wanted = model.state_dict()
    weights = {k: _own(v.to(wanted[k].dtype)) for k, v in payload["state_dict"].items()}
    model.load_state_dict(weights, assign=True)  # the stored tensors become the model's: no second copy
    return model.to(device).eval()


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in contiguous storage of its own: an expanded (stride-0) or sliced tensor from a
    file would share memory between elements, which an optimizer's in-place update refuses."""
    if tensor.is_contiguous() and tensor.storage_offset() == 0 and \
            _storage_bytes(tensor) == tensor.numel() * tensor.element_size():
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _empty_model(path: Path, payload: dict) -> torch.nn.Module:
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


def _weights_fit(path: Path, model: torch.nn.Module, weights: dict) -> None:
    """Compare the stored weights with the (empty) model's parameters and buffers: the same names
    and shapes, a dtype of the same kind (any float where the model has floats, which
    :func:`rebuild` converts; anything else exactly), and no more storage than the shape takes. So
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
                ([f"unexpected {', '.join(f'{k} ({_size(_storage_bytes(stored[k]))})' for k in unexpected[:4])}"]
                 if unexpected else []) + \
                ([f"shapes {', '.join(wrong[:4])}"] if wrong else [])
        raise CheckpointError(f"{path}: the saved weights do not fit {type(model).__name__}({model.hparams!r:.200}): "
                              f"{'; '.join(parts)}. Delete the file and retrain")
    for k, v in stored.items():
        want = expected[k].dtype
        if v.dtype != want and not (v.is_floating_point() and want.is_floating_point):
            raise CheckpointError(f"{path}: state_dict[{k!r}] is {_dtype(v.dtype)}, but the model needs "
                                  f"{_dtype(want)}: the file was altered or written by other code. Delete the file and retrain")
        if _storage_bytes(v) > v.numel() * v.element_size():
            raise _corrupt(path, f"state_dict[{k!r}] is a view of {_size(_storage_bytes(v))} of storage, where its "
                                 f"shape takes {_size(v.numel() * v.element_size())}")


def keep_aside(path: Path, label: str) -> Path:
    """Rename the checkpoint ``path`` to ``<name>.pt.<label>-<UTC time>`` and return the new path:
    a checkpoint is never deleted (a learner may want it back), only moved out of the way."""
    aside = path.with_name(f"{path.name}.{label}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
    os.replace(path, aside)
    return aside


def read_or_set_aside(name: str | Path) -> dict | None:
    """The payload under ``name``; None if there is no file, or if the file cannot be read as a
    checkpoint: then it is renamed to ``<name>.pt.unreadable-<UTC time>`` (:func:`keep_aside`), so
    that a new checkpoint can take its place, and this is said. An ``OSError`` means the file could
    not be read nor renamed (a folder that is not writable): it is left as it is."""
    path = checkpoint_path(name)
    if not path.exists():
        return None
    try:
        return read_checkpoint(path)
    except CheckpointError as err:
        aside = keep_aside(path, "unreadable")
        print(f"{path} cannot be read as a checkpoint ({err.reason}), so it was kept as {aside.name} "
              "(inspect or delete it) and a new one will be written.")
        return None


def matching_checkpoint(name: str | Path, config: Any) -> bool:
    """True if a readable checkpoint exists under ``name`` and was trained with ``config``."""
    try:
        payload = read_checkpoint(name)
    except CheckpointError:
        return False
    return not config_differences(payload["config"], config)
