"""One training loop for every model in the course.

The loop knows nothing about VAEs or GANs. A notebook writes a *step*: a function that takes one
batch ``(x, y)``, does its own forward pass, backward pass and optimizer update(s), and returns
its named losses as a dict. A VAE step returns ``{"loss", "recon", "kl"}``; a GAN step updates D
then G and returns ``{"loss_D", "loss_G", "D(x)", "D(G(z))"}``. The loop adds what every run
needs: a progress bar, per-step and per-epoch history, images/s, a guard against NaN/inf losses,
per-epoch callbacks (test metrics, sample snapshots) and a clean stop on Ctrl-C.

A step guards each optimizer update with :func:`require_finite`: a NaN or infinite loss stops the
run *before* the update, so no parameter is updated with it.

Introduced in notebooks/01_vae.ipynb.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Callable, Iterable, Mapping

import torch

from .layers import check_count, eval_mode
from .runtime import progress

Step = Callable[[torch.Tensor, torch.Tensor], Mapping[str, "torch.Tensor | float"]]
EpochCallback = Callable[[int, "History"], "Mapping[str, float] | None"]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; ``.history`` holds everything recorded up to that step.

    ``update_skipped`` is True when a step's :func:`require_finite` stopped it before the optimizer
    update (no parameter was updated with the bad loss), False when the loop found it after the
    step had returned (its updates had run).
    """

    def __init__(self, message: str, history: "History | None" = None, loss: str = "",
                 update_skipped: bool = False, value: float = float("nan")):
        super().__init__(message)
        self.history, self.loss, self.update_skipped, self.value = history, loss, update_skipped, value


def require_finite(loss: torch.Tensor, name: str = "loss") -> None:
    """Call between ``backward()`` and ``optimizer.step()``: raise :class:`NonFiniteLossError` if
    ``loss`` is NaN or infinite, so the update that would spread it into the weights never runs.
    (One host synchronisation per update, the price of never keeping NaN weights.)"""
    flat = loss.detach().reshape(-1)
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        value = float(flat[bad][0])
        raise NonFiniteLossError(f"loss {name!r} became {value}", loss=name, update_skipped=True, value=value)


@dataclass
class History:
    """What a run recorded: ``steps[name]`` per batch, and one record per epoch in ``epochs``.

    Each epoch record is a dict: ``{"epoch": 3, "loss": ..., "images_per_s": ..., "test_loss": ...}``
    holds the mean of each step loss over the batches that reported it, the throughput, and
    whatever the epoch callbacks returned. A metric measured only every k epochs (FID) is simply
    absent from the other records; :meth:`series` returns the epochs it has. ``snapshots`` keeps
    small uint8 image batches a callback stored (e.g. samples of fixed noise), keyed by epoch.
    """

    steps: dict[str, list[float]] = field(default_factory=dict)
    epochs: list[dict[str, float]] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    images_seen: int = 0
    interrupted: bool = False

    @property
    def n_epochs(self) -> int:
        return len(self.epochs)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of ``key`` over the epochs that recorded it."""
        pairs = [(r["epoch"], r[key]) for r in self.epochs if key in r]
        return [int(e) for e, _ in pairs], [v for _, v in pairs]

    def summary(self) -> str:
        last = ", ".join(f"{k} {v:.4g}" for k, v in (self.epochs[-1] if self.epochs else {}).items()
                         if k not in ("epoch", "images_per_s"))
        rate = self.images_seen / self.seconds if self.seconds else float("nan")
        state = " (interrupted)" if self.interrupted else ""
        return (f"{self.n_epochs} epochs, {self.images_seen:,} images in {self.seconds:.1f} s "
                f"({rate:,.0f} images/s){state}; last epoch: {last}")

    def state_dict(self) -> dict:
        """Plain containers only, so a checkpoint can hold it and load with weights_only=True."""
        return {"steps": self.steps, "epochs": self.epochs,
                "snapshots": {str(k): v.cpu() for k, v in self.snapshots.items()},
                "seconds": self.seconds, "images_seen": self.images_seen,
                "interrupted": self.interrupted}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "History":
        state = dict(state)
        state["snapshots"] = {int(k): v for k, v in state.get("snapshots", {}).items()}
        return cls(**state)


_NAN_FIXES = ("Usual fixes: lower the learning rate, check inputs are in [0, 1] and finite, clamp "
              "log-variances.")


def _scalar(v: "torch.Tensor | float") -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


class _Pending:
    """Step losses waiting to be read back to the host, where they stay (on a GPU) until
    :meth:`flush` reads all of them in one transfer: reading each value as it arrives would make
    the host wait for the device on every step."""

    def __init__(self):
        self.items: list[tuple[int, str, "torch.Tensor | float"]] = []   # (step number, name, value)

    def add(self, n_step: int, losses: Mapping[str, "torch.Tensor | float"]) -> None:
        for k, v in losses.items():
            if torch.is_tensor(v):
                if v.numel() != 1:
                    raise ValueError(f"the step returned {k!r} with shape {tuple(v.shape)}; a step returns "
                                     "one number per loss (use .mean() or .sum())")
                v = v.detach().reshape(())
            self.items.append((n_step, k, v))

    def flush(self) -> list[tuple[int, str, float]]:
        """All pending values as floats, in the order they came; one transfer per device."""
        values: list = [v for _, _, v in self.items]
        by_device: dict[torch.device, list[int]] = {}
        for i, v in enumerate(values):
            if torch.is_tensor(v):
                by_device.setdefault(v.device, []).append(i)
        for idx in by_device.values():
            host = torch.stack([values[i].to(torch.float64) for i in idx]).tolist()
            for i, x in zip(idx, host):
                values[i] = x
        out = [(n, k, float(x)) for (n, k, _), x in zip(self.items, values)]
        self.items = []
        return out


def minimize(loss_fn: Callable[[torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]],
             optimizer: torch.optim.Optimizer) -> Step:
    """The simplest step: one optimizer update on ``loss_fn(x, y)["loss"]``; returns all losses."""

    def step(x: torch.Tensor, y: torch.Tensor) -> Mapping[str, torch.Tensor]:
        losses = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        require_finite(losses["loss"])
        optimizer.step()
        return losses

    return step


def train(step: Step, batches: Iterable, epochs: int, *,
          callbacks: Iterable[EpochCallback] = (), history: History | None = None,
          desc: str = "training", postfix_every: int = 25) -> History:
    """Run ``step`` on every batch for ``epochs`` epochs and return the :class:`History`.

    - ``callbacks`` run after each epoch as ``cb(epoch, history)`` (epochs count from 1); a dict
      they return is added to that epoch's record. Their time is not counted in images/s.
    - Pass an existing ``history`` to continue a run; epochs then count on from where it stopped.
    - A NaN or infinite loss stops training with :class:`NonFiniteLossError`, naming the loss,
      epoch and step, and saying whether the bad loss reached the parameters (it does not when the
      step guards its updates with :func:`require_finite`, as every step of the course does).
      Ctrl-C (KeyboardInterrupt) stops cleanly: the model keeps the weights it has, and the
      history is returned with ``interrupted=True``.
    - Step losses stay on the device and are read back every ``postfix_every`` steps in one
      transfer (and at the end of each epoch): a loop that reads every loss on every step makes
      the host wait for a GPU that many times. ``history.steps`` still gets one value per step.
    - ``batches`` must be re-iterable (``data.batches(...)``, a list) and non-empty: an empty
      dataset, a one-shot iterator reused for a second epoch, or ``epochs < 1`` is an error.
    """
    epochs = check_count(epochs, "epochs")
    if epochs > 1 and isinstance(batches, Iterator):
        raise TypeError(f"batches is a one-shot iterator ({type(batches).__name__}), which is empty after the "
                        f"first of {epochs} epochs; pass something that can be iterated again, such as "
                        "data.batches(batch_size) or a list of batches")
    if hasattr(batches, "__len__") and len(batches) == 0:
        raise ValueError("batches is empty (a dataset with no images, or limit/subset 0?): nothing to train on")
    history = history if history is not None else History()
    first = history.n_epochs + 1
    per_epoch = len(batches) if hasattr(batches, "__len__") else None
    bar = progress(total=per_epoch * epochs if per_epoch else None, desc=desc, unit="batch")
    epoch, n_step = first, 0
    pending = _Pending()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # a loss reported on some batches only is averaged over those

    def record_pending() -> None:
        """Read the pending losses back (one transfer), check them, and add them to the history."""
        latest: dict[str, float] = {}
        values = pending.flush()
        bad = next(((n, k, v) for n, k, v in values if not math.isfinite(v)), None)
        for n, k, v in values:
            if bad is not None and n >= bad[0]:   # keep the steps before the bad one, whole
                n, k, v = bad
                raise NonFiniteLossError(
                    f"{k!r} became {v} at epoch {epoch}, step {n}. Training stopped, but after the step "
                    "had run: unless the step guards its optimizer updates with "
                    "training.require_finite(loss), the model may now hold non-finite weights (retrain or "
                    f"reload them); `err.history` holds what was recorded. {_NAN_FIXES}",
                    history, k, False, v)
            history.steps.setdefault(k, []).append(v)
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
            latest[k] = v
        if latest:
            bar.set_postfix({k: f"{v:.3g}" for k, v in latest.items()}, refresh=False)

    try:
        for epoch in range(first, first + epochs):
            sums.clear()
            counts.clear()
            n_images = 0
            start = time.perf_counter()
            for x, y in batches:
                n_step += 1
                try:
                    losses = step(x, y)
                except NonFiniteLossError as err:
                    record_pending()  # what the steps before this one reported
                    raise NonFiniteLossError(
                        f"Loss {err.loss!r} became {err.value} at epoch {epoch}, step {n_step}. "
                        "Training stopped before the optimizer update that would have used it, so no "
                        "parameter was updated with it (updates earlier in the step, such as D's before "
                        "G's, did run, and so did this step's batch-norm statistics); `err.history` "
                        f"holds what was recorded. {_NAN_FIXES}", history, err.loss, True, err.value) from None
                pending.add(n_step, losses)
                n_images += x.shape[0]
                bar.update()
                if n_step % postfix_every == 0:
                    record_pending()
            record_pending()
            if n_images == 0:
                raise ValueError(f"batches yielded nothing in epoch {epoch}: an empty dataset, or an "
                                 "iterator that was already used up; pass data.batches(batch_size)")
            busy = time.perf_counter() - start
            record = {"epoch": epoch, **{k: v / counts[k] for k, v in sums.items()},
                      "images_per_s": n_images / busy if busy > 0 else float("nan")}
            history.epochs.append(record)
            history.seconds += busy
            history.images_seen += n_images
            for cb in callbacks:
                record.update({k: float(v) for k, v in (cb(epoch, history) or {}).items()})
    except KeyboardInterrupt:
        history.interrupted = True
        try:
            record_pending()  # the steps that finished before the interrupt
        except NonFiniteLossError:
            pass
        print(f"Interrupted during epoch {epoch}: the model keeps its current weights and "
              f"`history` holds {history.n_epochs} complete epochs.")
    finally:
        bar.close()
    return history


@torch.no_grad()
def evaluate(loss_fn: Callable[[torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]],
             batches: Iterable, model: torch.nn.Module | None = None,
             seed: int | None = 0) -> dict[str, float]:
    """Mean of ``loss_fn(x, y)``'s values over all batches, weighted by batch size.

    ``model`` (if given) is put in eval mode for the pass and restored afterwards. A loss that
    samples (a VAE's one-sample ELBO) is evaluated with random numbers seeded by ``seed``, so the
    same model always gets the same number, and the caller's random state is left untouched.
    """
    sums: dict[str, float] = {}
    n = 0
    with eval_mode(model), torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for x, y in batches:
            for k, v in loss_fn(x, y).items():
                sums[k] = sums.get(k, 0.0) + _scalar(v) * x.shape[0]
            n += x.shape[0]
    if n == 0:
        raise ValueError("evaluate got no batches (an empty dataset?): there is nothing to average")
    return {k: v / n for k, v in sums.items()}


def fit_or_load(name: str, model: torch.nn.Module, config: Mapping, run: Callable[[], History],
                reuse: bool, device: torch.device | str = "cpu"
                ) -> tuple[torch.nn.Module, History]:
    """Train ``model`` with ``run()`` and checkpoint it as ``name``, or, when ``reuse`` is True and
    a checkpoint trained with exactly ``config`` exists, load that model and its history instead.

    ``config`` should hold everything that changes the trained weights (architecture, epochs,
    learning rate, data size, seed); a value a checkpoint cannot store is refused before training.
    A file under ``name`` that cannot be read is renamed aside (``<name>.pt.unreadable-<time>``) and
    said so, never overwritten; if saving fails, the trained model and history are still returned.
    The history is saved inside the checkpoint, so the figures of a reused run are the figures of
    the run that trained it. Either way the model comes back in eval mode (batch norm uses its
    running statistics), as a loaded checkpoint does.
    """
    from . import checkpoints  # local import: checkpoints does not need the training loop

    config = checkpoints.config_dict(config)        # refuses what a checkpoint cannot store, now
    payload = checkpoints.read_or_set_aside(name)   # None if absent or unreadable (then kept aside)
    if reuse and payload is not None and not checkpoints.config_differences(payload["config"], config):
        loaded = checkpoints.rebuild(payload, checkpoints.checkpoint_path(name), device)
        history = History.from_state_dict(payload["extra"]["history"])
        print(f"{name}: reused {checkpoints.checkpoint_path(name)} (trained {payload['saved_at']}); "
              f"{history.summary()}")
        return loaded, history
    history = run()
    model.eval()
    if history.interrupted:
        print(f"{name}: interrupted, so not checkpointed; the model is usable in this session.")
        return model, history
    try:
        path = checkpoints.save_checkpoint(model, name, config, history=history.state_dict())
    except (OSError, checkpoints.CheckpointError) as err:  # e.g. a full disk: keep what was trained
        print(f"{name}: {history.summary()}\n  NOT saved ({type(err).__name__}: {err}); the model is usable "
              "in this session")
        return model, history
    print(f"{name}: {history.summary()}\n  saved to {path}")
    return model, history
