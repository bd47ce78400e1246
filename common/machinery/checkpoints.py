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
- A corrupt file, an unknown class, arguments or weights that do not fit, or a config that differs
  from the one expected raises :class:`CheckpointError` naming the file and the fix.

Every course model derives from :class:`common.layers.Module`, which records the arguments each
instance was built with in ``model.hparams`` (so no class copies them by hand).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import pickle
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import runtime, storage

FORMAT = "dgm-course-checkpoint/1"
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
    paths and torch dtypes/devices strings, dataclasses dicts; anything else is a
    :class:`CheckpointError` naming ``where`` (e.g. ``config['act']``)."""
    if isinstance(value, np.generic):  # first: np.float64 is also a float, but pickles as NumPy
        return to_plain(value.item(), where)
    if value is None:
        return None
    for base in (bool, int, float, str):  # subclasses (an IntEnum, a str Enum) as their base type
        if isinstance(value, base):
            return base(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist(), where)
    if isinstance(value, (os.PathLike, torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = to_plain(k, f"{where} key {k!r}")
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where} has the key {k!r} ({type(k).__name__}); use strings or ints as keys")
            out[key] = to_plain(v, f"{where}[{key!r}]")
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value), where)
    raise CheckpointError(f"{where} is of type {type(value).__name__} ({value!r:.60}), which a safe load "
                          "(weights_only=True) cannot read back; store a plain value instead (a number, a "
                          "string such as its name, or a list/dict of those)")


def config_dict(config: Any) -> dict:
    """A config (a dataclass, a mapping or None) as the plain dict a checkpoint stores."""
    if config is None:
        return {}
    return to_plain(config if dataclasses.is_dataclass(config) else dict(config), "config")


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
    """The raw payload of a checkpoint, checked for format; never unpickles arbitrary code."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Run the notebook that trains it "
                              "(its name is in the checkpoint's name) in the same mode first.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError):  # cannot read it here (permissions, memory): not the file's fault
        raise
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle error, wrong file...
        if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in str(err):
            why = ("it holds Python objects that a safe load refuses to rebuild (the course only writes "
                   "tensors and plain values, so this file was written by other code or altered)")
        else:  # torch's first line, without any advice to turn the safe load off
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            why = f"{type(err).__name__}: {first}" if "weights_only" not in first else type(err).__name__
        raise CheckpointError(f"{path} is corrupt or not a course checkpoint ({why}). Delete it and "
                              "re-run the notebook that trains it.", why) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file. Delete it and re-run the notebook "
                              "that trains it.", f"not a {FORMAT} file")
    return payload


def _same(a: Any, b: Any) -> bool:
    """Equality of plain values that also holds for tensors (where == gives a tensor)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
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
    Its constructor arguments are checked against the class's signature, and its shapes against
    the stored weights on the ``meta`` device, before any memory is allocated."""
    cls = model_class(str(payload["model_class"]))
    if cls is None:
        raise CheckpointError(f"{path} holds a {payload['model_class']!r:.60}, which is not one of the course's "
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
    model = _build_on_meta(path, cls, kwargs, weights)
    model.load_state_dict(weights, assign=True)  # the stored tensors become the model's: no second copy
    return model.to(device).eval()


def _build_on_meta(path: Path, cls: type, kwargs: dict, weights: dict) -> torch.nn.Module:
    """Build ``cls(**kwargs)`` on the ``meta`` device (shapes only, no memory, no random numbers
    drawn) and compare its parameters and buffers with the stored weights, so that a file can
    neither make the loader allocate a model larger than the weights it holds nor load weights
    that do not fit. Returns the empty model, for the weights to be assigned to."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = cls(**kwargs)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    except Exception as err:  # noqa: BLE001 - any constructor failure: bad values in the file
        raise CheckpointError(f"{path}: {cls.__name__}(**{kwargs!r:.200}) cannot be built "
                              f"({type(err).__name__}: {str(err)[:200]}); delete the file and retrain") from None
    stored = {k: tuple(v.shape) for k, v in weights.items() if torch.is_tensor(v)}
    if expected != stored:
        missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        wrong = [f"{k} {stored[k]} (model {expected[k]})" for k in expected if k in stored and stored[k] != expected[k]]
        parts = ([f"missing {', '.join(missing[:4])}"] if missing else []) + \
                ([f"unexpected {', '.join(unexpected[:4])}"] if unexpected else []) + \
                ([f"shapes {', '.join(wrong[:4])}"] if wrong else [])
        raise CheckpointError(f"{path}: the saved weights do not fit {cls.__name__}({kwargs!r:.200}): "
                              f"{'; '.join(parts)}. Delete the file and retrain")
    return model


def read_or_set_aside(name: str | Path) -> dict | None:
    """The payload under ``name``; None if there is no file, or if the file cannot be read as a
    checkpoint: then it is renamed to ``<name>.pt.unreadable-<UTC time>`` (never deleted, a learner
    may want to inspect it), so that a new checkpoint can take its place, and this is said."""
    path = checkpoint_path(name)
    if not path.exists():
        return None
    try:
        return read_checkpoint(path)
    except CheckpointError as err:
        aside = path.with_name(f"{path.name}.unreadable-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
        os.replace(path, aside)
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
