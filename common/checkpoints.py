"""Save trained models with what is needed to rebuild them; load them back safely.

A checkpoint is one ``.pt`` file in ``data/checkpoints/<profile>/`` (``smoke``, ``cpu`` or ``gpu``)
holding plain containers only: the model's class name and constructor arguments, its
``state_dict``, the notebook config that trained it, and optional extras (a training history).

- Writing is atomic: the file is written next to its target, flushed to disk, then renamed over
  it, so an interrupted save never leaves a half-written checkpoint behind.
- Loading uses ``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects:
  the class is looked up in :data:`MODELS`, a registry of the course's own model classes.
- A corrupt file, an unknown class, weights that do not fit, or a config that differs from the
  one expected raises :class:`CheckpointError` naming the file and the fix.

Model classes opt in with the :func:`register` decorator, which records the arguments each
instance was built with in ``model.hparams`` (so no class copies them by hand).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from . import runtime

FORMAT = "dgm-course-checkpoint/1"
MODELS: dict[str, type[torch.nn.Module]] = {}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match what the caller expects."""


def register(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """Class decorator: let checkpoints rebuild this model class by name.

    It wraps ``__init__`` so that every instance records the arguments it was built with,
    defaults included, as ``self.hparams``: exactly what ``cls(**hparams)`` needs to rebuild it.
    For a registered subclass of a registered class, the subclass's arguments win (its
    ``__init__`` returns last).
    """
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        hparams = copy.deepcopy(dict(list(bound.arguments.items())[1:]))  # without self; no aliasing
        self.hparams = {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items()}

    cls.__init__ = __init__
    MODELS[cls.__name__] = cls
    return cls


def _as_dict(config: Any) -> dict:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config)


def checkpoint_path(name: str | Path) -> Path:
    """``name`` as a path: a bare name like "vae_conv" goes to the checkpoint directory."""
    path = Path(name)
    if path.suffix != ".pt" and path.parent == Path("."):
        path = runtime.checkpoint_dir() / f"{name}.pt"
    return path


def save_checkpoint(model: torch.nn.Module, name: str | Path, config: Any = None,
                    **extra: Any) -> Path:
    """Atomically save ``model`` (and ``config``, ``extra``) and return the file's path."""
    if type(model).__name__ not in MODELS:
        raise CheckpointError(f"{type(model).__name__} is not registered; decorate the class "
                              "with @common.checkpoints.register so it can be rebuilt")
    path = checkpoint_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model_class": type(model).__name__,
        "model_kwargs": dict(model.hparams),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": _as_dict(config),
        "extra": extra,
        "torch_version": str(torch.__version__),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(name: str | Path) -> dict:
    """The raw payload of a checkpoint, checked for format; never unpickles arbitrary code."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Run the notebook that trains it "
                              "(its name is in the checkpoint's name) in the same mode first.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle error, wrong file...
        raise CheckpointError(f"{path} is corrupt or not a course checkpoint ({type(err).__name__}: "
                              f"{err}). Delete it and re-run the notebook that trains it.") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file. Delete it and re-run the notebook "
                              "that trains it.")
    return payload


def config_differences(saved: Mapping, expected: Mapping) -> list[str]:
    """Human-readable list of keys whose values differ between two config dicts."""
    keys = sorted(set(saved) | set(expected))
    return [f"{k}: checkpoint has {saved.get(k, '<missing>')!r}, expected {expected.get(k, '<missing>')!r}"
            for k in keys if saved.get(k, "<missing>") != expected.get(k, "<missing>")]


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
        diffs = config_differences(payload["config"], _as_dict(expect_config))
        if diffs:
            raise CheckpointError(f"{path} was trained with another config:\n  "
                                  + "\n  ".join(diffs) + "\nRetrain it, or change the config back.")
    cls = MODELS.get(payload["model_class"])
    if cls is None:
        raise CheckpointError(f"{path} holds a {payload['model_class']}, which no imported module "
                              f"registers (known: {', '.join(sorted(MODELS)) or 'none'}). Import the "
                              "module that defines it first.")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's
        model = cls(**payload["model_kwargs"])  # random numbers (training noise, shuffles) untouched
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the saved weights do not fit {cls.__name__}"
                              f"({payload['model_kwargs']}): {err}") from err
    return model.to(device).eval(), payload


def matching_checkpoint(name: str | Path, config: Any) -> bool:
    """True if a readable checkpoint exists under ``name`` and was trained with ``config``."""
    try:
        payload = read_checkpoint(name)
    except CheckpointError:
        return False
    return not config_differences(payload["config"], _as_dict(config))
