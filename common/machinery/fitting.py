"""``fit_or_load``: train a notebook's model and checkpoint it, or reuse the checkpoint of the same
run (machinery; notebooks call it as ``training.fit_or_load``). Moved out of
:mod:`common.training` so that the loop a learner reads stays apart from the file handling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch

from . import checkpoints
from .history import History


def fit_or_load(name: str, model: torch.nn.Module, config: Mapping, run: Callable[[], History], reuse: bool,
                device: torch.device | str = "cpu") -> tuple[torch.nn.Module, History]:
    """Train ``model`` with ``run()`` and checkpoint it as ``name``, or, when ``reuse`` is True and
    a checkpoint trained with exactly ``config`` exists, load that model and its history instead.

    ``config`` should hold everything that changes the trained weights (architecture, epochs,
    learning rate, data size, seed); a value a checkpoint cannot store is refused before training.
    The history is saved inside the checkpoint, so the figures of a reused run are the figures of
    the run that trained it. Either way the model comes back in eval mode (batch norm uses its
    running statistics), as a loaded checkpoint does.

    Asking for more ``epochs`` with nothing else changed replaces the checkpoint; with a ``run``
    that trains through :func:`common.machinery.resume.train` (a resume file from
    :func:`~common.machinery.resume.beside`), only the added epochs are trained.

    Otherwise a checkpoint is never lost: one that cannot be read is renamed aside before training
    (``<name>.pt.unreadable-<time>``); one trained with another config, or without a history (saved
    by hand), is renamed aside when the new one is saved (``<name>.pt.replaced-<time>``); each time
    this is said. If the file can neither be read nor renamed (a folder that is not writable), or
    if saving fails, the model is trained all the same and returned unsaved, with a message.
    """
    config = checkpoints.config_dict(config)        # refuses what a checkpoint cannot store, now
    path = checkpoints.checkpoint_path(name)
    unsaved = ""                                     # why the new model cannot be saved, if it cannot
    try:
        payload = checkpoints.read_or_set_aside(name)   # None if absent or unreadable (then kept aside)
    except OSError as err:
        payload, unsaved = None, f"{path} could not be read or renamed aside ({type(err).__name__}: {err})"
        print(f"{name}: {unsaved}; training anyway, but the model will NOT be saved.")
    saved = _saved_history(payload)
    differences = checkpoints.config_differences(payload["config"], config) if payload is not None else []
    if reuse and saved is not None and not differences:
        loaded = checkpoints.rebuild(payload, path, device)
        print(f"{name}: reused {path} (trained {payload['saved_at']}); {saved.summary()}")
        return loaded, saved
    history = run()
    model.eval()
    if history.interrupted:
        print(f"{name}: interrupted, so not checkpointed; the model is usable in this session.")
        return model, history
    if not unsaved:
        try:
            if payload is not None and (differences or saved is None):
                if _more_epochs(payload["config"], config):           # the same run, trained on: replace it
                    print(f"{name}: {config['epochs']} epochs replace the checkpoint of {payload['config']['epochs']}")
                else:
                    _keep_replaced(name, path, differences)           # a different run: keep it
            path = checkpoints.save_checkpoint(model, name, config, history=history.state_dict())
        except (OSError, checkpoints.CheckpointError) as err:  # e.g. a full disk: keep what was trained
            unsaved = f"{type(err).__name__}: {err}"
    said = f"NOT saved ({unsaved}); the model is usable in this session" if unsaved else f"saved to {path}"
    print(f"{name}: {history.summary()}\n  {said}")
    return model, history


def _more_epochs(saved: Mapping, config: Mapping) -> bool:
    """The same run, trained on for more epochs (the old checkpoint is then replaced, not kept)."""
    from .resume import without_epochs
    return (isinstance(saved, Mapping)
            and not checkpoints.config_differences(without_epochs(saved), without_epochs(config))
            and isinstance(saved.get("epochs"), int) and saved["epochs"] < config.get("epochs", 0))


def _keep_replaced(name: str, path: Path, differences: list[str]) -> None:
    """Rename the checkpoint a new run of ``name`` replaces aside, and say why and where."""
    aside = checkpoints.keep_aside(path, "replaced")
    why = (f"was trained with another config ({'; '.join(differences)})" if differences
           else "has no training history (saved by hand?)")
    print(f"{name}: {path} {why}, so it was kept as {aside.name} (rename it back to use it, or delete it).")


def _saved_history(payload: dict | None) -> History | None:
    """The training history a checkpoint of :func:`fit_or_load` holds; None for none or one that
    does not load (a checkpoint saved by hand, or by a course version whose History differs)."""
    extra = payload.get("extra") if payload is not None else None
    state = extra.get("history") if isinstance(extra, dict) else None
    try:
        return History.from_state_dict(state) if isinstance(state, Mapping) else None
    except (TypeError, ValueError, AttributeError):
        return None
