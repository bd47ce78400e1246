"""Training that survives being killed: a resume file saved every few steps, and a run that
continues from it when started again.

:func:`train` is :func:`common.training.train` plus a :class:`Resume`. Every ``every`` steps (and
at the end) it writes, atomically (:func:`~common.machinery.storage.atomic_write`), one file
holding the models' and optimizers' ``state_dict`` s, each EMA's average and update count, the
position (epochs done, steps into the current epoch), the batches' shuffling generator as it was
when the current epoch drew its order, the global random state (CPU, and CUDA's if any) and the
history so far. Run again with the same arguments, it loads that file and goes on from the saved
step: on the CPU, with the same seed, the final weights are bitwise those of a run never stopped.
A run killed at any moment loses at most ``every`` steps. Each epoch's end is saved after the
epoch's callbacks, so their records (a test loss, an FID) are in the file.

The file is read with ``torch.load(weights_only=True)`` (no pickled code runs) after its zip
directory is checked, and holds the run's config: a file written by a run with another config is
refused (:class:`~common.machinery.checkpoint_checks.CheckpointError` naming the file and the fix),
never silently continued.

The epoch in progress when the run was stopped is recorded in the history from its resumed part
only (its mean losses average the steps after the resume).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from . import storage
from .checkpoint_checks import CheckpointError, _tensor_records, torch_load
from .checkpoints import differing_keys
from .history import History

FORMAT = "dgm-resume-1"


@dataclass
class Resume:
    """What :func:`train` saves to ``path`` every ``every`` steps, and checks ``config`` against.

    ``models``, ``optimizers`` and ``emas`` are dicts of names to the run's objects (an EMA is
    :class:`common.ema.EMA`); ``config`` holds what makes the run what it is (plain values).
    ``write``: False on every process but one (data-parallel ranks other than 0). ``restart``:
    a resume file of another config is renamed aside and the run starts afresh, as a notebook's
    :func:`~common.training.fit_or_load` does with a checkpoint (see :func:`beside`)."""

    path: str | Path
    config: Mapping[str, Any]
    models: Mapping[str, torch.nn.Module]
    optimizers: Mapping[str, torch.optim.Optimizer] = field(default_factory=dict)
    emas: Mapping[str, Any] = field(default_factory=dict)
    every: int = 500
    write: bool = True
    restart: bool = False       # a file of another config (or of more epochs) is set aside, not refused

    def __post_init__(self):
        from .checkpoints import config_dict
        self.path, self.config = Path(self.path), config_dict(self.config)
        if not (isinstance(self.every, int) and self.every > 0):
            raise ValueError(f"Resume(every=...) is a number of steps >= 1, got {self.every!r}")


class _Position:
    """Where the run stands, and the batch iterable that skips the batches already trained on."""

    def __init__(self, batches, epochs_done: int = 0, step_in_epoch: int = 0, epoch_rng=None):
        self.batches, self.epochs_done, self.step_in_epoch = batches, epochs_done, step_in_epoch
        self.skip, self.restore = step_in_epoch, epoch_rng   # applied to the next epoch only
        self.epoch_rng = None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        gen = getattr(self.batches, "generator", None)
        if self.restore is not None and gen is not None:
            gen.set_state(self.restore)
        self.restore = None
        self.epoch_rng = gen.get_state() if gen is not None else None
        self.step_in_epoch, skip, self.skip = 0, self.skip, 0
        for i, batch in enumerate(self.batches):
            if i < skip:
                self.step_in_epoch += 1
                continue
            yield batch
        self.epochs_done += 1
        self.step_in_epoch = 0


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(resume: Resume, position: _Position, history: History, steps: int, sessions: list) -> None:
    """Write ``resume.path`` all or nothing (nothing on a process with ``write=False``);
    ``sessions``: the runs that trained it, this one included."""
    if not resume.write:
        return
    done, into = position.epochs_done, position.step_in_epoch
    if into >= len(position):     # the epoch's last step: saved as the next epoch's start
        done, into = done + 1, 0
    gen = getattr(position.batches, "generator", None)
    # mid-epoch: the order generator as the epoch drew its batches; at an epoch's start: as it is now
    epoch_rng = position.epoch_rng if into else (gen.get_state() if gen is not None else None)
    payload = {
        "format": FORMAT, "config": resume.config, "steps": steps,
        "epochs_done": done, "step_in_epoch": into, "epoch_rng": epoch_rng, "rng": _rng_state(), "history": history.state_dict(),
        "models": {k: m.state_dict() for k, m in resume.models.items()},
        "optimizers": {k: o.state_dict() for k, o in resume.optimizers.items()},
        "emas": {k: {"model": e.model.state_dict(), "updates": e.updates} for k, e in resume.emas.items()},
        "sessions": sessions,
    }
    with storage.signals_deferred(), storage.atomic_write(resume.path) as f:
        torch.save(payload, f)


def load(resume: Resume, epochs: int | None = None) -> dict | None:
    """The payload of ``resume.path`` (None when there is none), checked: a resume file of this
    very config; every model, optimizer and EMA of the run is restored from it."""
    path = resume.path
    if not path.exists():
        return None
    _tensor_records(path)                        # the zip directory, before any tensor is read
    payload = torch_load(path, "cpu")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resume file of this course ({FORMAT}). Delete it, or pass "
                              "another resume path, to start the run afresh.", "not a resume file")
    saved = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    diff = differing_keys(saved, resume.config)     # as checkpoints compare them (NaN equals NaN)
    if diff:
        if resume.restart:
            return _set_aside(resume, f"it was saved by a run with another config (differs in: {', '.join(diff)})")
        raise CheckpointError(
            f"{path} was saved by a run with another config (differs in: {', '.join(diff)}), so continuing "
            "from it would mix two runs. Re-run with the config it was saved with, or delete the file (or "
            "pass another resume path) to start afresh.", "another config")
    if resume.restart and epochs is not None and payload.get("epochs_done", 0) > epochs:
        return _set_aside(resume, f"it holds {payload['epochs_done']} epochs, more than the {epochs} asked")
    for group, objects in (("models", resume.models), ("optimizers", resume.optimizers), ("emas", resume.emas)):
        if set(payload[group]) != set(objects):
            raise CheckpointError(f"{path} holds {group} {sorted(payload[group])}, this run has {sorted(objects)}. "
                                  "Delete it to start afresh.", f"other {group}")
    for k, m in resume.models.items():
        m.load_state_dict(payload["models"][k])
    for k, o in resume.optimizers.items():
        o.load_state_dict(payload["optimizers"][k])
    for k, e in resume.emas.items():
        e.model.load_state_dict(payload["emas"][k]["model"])
        e.updates = int(payload["emas"][k]["updates"])
    _set_rng_state(payload["rng"])
    return payload


def sessions(path: str | Path) -> list[dict]:
    """Each run that trained the resume file ``path``: its device and the steps it trained (from, to)."""
    _tensor_records(Path(path))
    return list(torch_load(Path(path), "cpu").get("sessions", []))


def _set_aside(resume: Resume, why: str) -> None:
    from .checkpoints import keep_aside
    aside = keep_aside(resume.path, "replaced")
    print(f"{resume.path.name}: {why}, so it was kept as {aside.name} and training starts afresh.")
    return None


def beside(name: str, config: Mapping[str, Any], models: Mapping[str, torch.nn.Module],
           optimizers: Mapping[str, torch.optim.Optimizer] = {}, emas: Mapping[str, Any] = {},
           every: int = 500) -> Resume:
    """The resume file of a notebook's checkpoint ``name``: ``<name>.resume.pt`` beside it, for
    the run's ``config`` without its ``epochs``. Train with :func:`train` in ``fit_or_load``'s
    ``run``: raising ``epochs`` and running the cell again trains only the epochs added. A file
    of another config (or of more epochs than asked) is set aside and the run starts afresh."""
    from .checkpoints import checkpoint_path
    path = checkpoint_path(name).with_suffix(".resume.pt")
    return Resume(path, without_epochs(config), models, optimizers, emas, every=every, restart=True)


def without_epochs(config: Mapping[str, Any]) -> dict:
    """``config`` less its ``epochs``: what a resume file must match (more epochs continue it)."""
    return {k: v for k, v in config.items() if k != "epochs"}


def train(step, batches: Iterable, epochs: int, resume: Resume, **kwargs) -> History:
    """:func:`common.training.train` for ``epochs`` epochs in all, continued from ``resume.path``
    when it exists (then the epochs already done are not run again) and saved to it every
    ``resume.every`` steps and at the end. ``kwargs`` go to :func:`~common.training.train`
    (``history`` excepted: the resume file holds it)."""
    from .. import training
    payload = load(resume, epochs)
    device = next((str(p.device) for m in resume.models.values() for p in m.parameters()), "cpu")
    earlier = [] if not payload else payload.get("sessions") or [   # a file from before sessions were kept
        {"device": "not recorded", "from_step": 0, "to_step": int(payload["steps"])}]
    this_run = {"device": device, "from_step": int(payload["steps"]) if payload else 0}
    if payload is None:
        position, history, steps = _Position(batches), History(), 0
    else:
        position = _Position(batches, payload["epochs_done"], payload["step_in_epoch"], payload["epoch_rng"])
        history, steps = History.from_state_dict(payload["history"]), int(payload["steps"])
        print(f"Resumed from {resume.path}: {position.epochs_done} epochs and {position.step_in_epoch} "
              f"steps done ({steps} steps in all).")
    left = epochs - position.epochs_done
    if left <= 0:
        return history
    count = [steps]

    def saving_step(x, y):
        losses = step(x, y)
        count[0] += 1
        position.step_in_epoch += 1
        if count[0] % resume.every == 0 and position.step_in_epoch < len(position):
            save_now(history)
        return losses

    def save_now(history):
        save(resume, position, history, count[0], [*earlier, dict(this_run, to_step=count[0])])

    def save_after_epoch(epoch, history):      # after the other callbacks: their records are saved too
        save_now(history)

    kwargs["callbacks"] = [*kwargs.get("callbacks", ()), save_after_epoch]
    return training.train(saving_step, position, left, history=history, **kwargs)
