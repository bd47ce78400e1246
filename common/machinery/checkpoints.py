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
- Loading uses ``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects,
  and reads no tensor before the file and the model it names are checked
  (:mod:`common.machinery.checkpoint_checks`): so loading allocates no more than the file's size
  and the model it names.
- Weights are loaded in the model's dtype (a float16 or float64 file's floats are converted; an
  integer where the model has floats is refused) and in their own contiguous storage.
- A corrupt file, an unknown class, arguments or weights that do not fit, or a config that differs
  from the one expected raises :class:`CheckpointError` naming the file and the fix.

Every course model derives from :class:`common.layers.Module`, which records the arguments each
instance was built with in ``model.hparams`` (so no class copies them by hand).
"""
from __future__ import annotations

import dataclasses
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import runtime, storage
from .checkpoint_checks import (EXTRA_BYTES, FORMAT, MODELS, PICKLE_BYTES, CheckpointError,  # noqa: F401 - re-exported
                                check_file, check_weights, empty_model, extras_over_bound, model_class,
                                storage_bytes, torch_load)


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
    over = extras_over_bound(payload)
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
    """The raw payload of a checkpoint, checked before any tensor is read
    (:func:`common.machinery.checkpoint_checks.check_file`); never unpickles arbitrary code."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Run the notebook that trains it "
                              "(its name is in the checkpoint's name) in the same mode first.")
    check_file(path)
    return torch_load(path, "cpu")


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
    missing = "<missing>"
    return [f"{k}: checkpoint has {saved.get(k, missing)!r}, expected {expected.get(k, missing)!r}"
            for k in differing_keys(saved, expected)]


def differing_keys(saved: Mapping, expected: Mapping) -> list:
    """The keys whose values differ between two stored configs (NaN equals NaN), sorted."""
    missing = "<missing>"
    return [k for k in sorted(set(saved) | set(expected), key=str)
            if not _same(saved.get(k, missing), expected.get(k, missing))]


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
    model = empty_model(path, payload)
    check_weights(path, model, payload["state_dict"])
    wanted = model.state_dict()
    weights = {k: _own(v.to(wanted[k].dtype)) for k, v in payload["state_dict"].items()}
    model.load_state_dict(weights, assign=True)  # the stored tensors become the model's: no second copy
    return model.to(device).eval()


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in contiguous storage of its own: an expanded (stride-0) or sliced tensor from a
    file would share memory between elements, which an optimizer's in-place update refuses."""
    if tensor.is_contiguous() and tensor.storage_offset() == 0 and \
            storage_bytes(tensor) == tensor.numel() * tensor.element_size():
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


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
