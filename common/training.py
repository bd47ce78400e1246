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
import numbers
import time
from collections.abc import Iterator
from typing import Callable, Iterable, Mapping

import torch

from .layers import eval_mode
from .machinery.checks import check_batch, check_count, check_finite_floats
from .machinery.history import History, Pending
from .machinery.runtime import progress

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


_NAN_FIXES = "Usual fixes: lower the learning rate, check inputs are in [0, 1] and finite, clamp log-variances."


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, name: str = "loss") -> None:
    """One optimizer update on ``loss``: zero the gradients, backward, refuse a NaN or infinite loss
    before it reaches the weights (:func:`require_finite`), step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    require_finite(loss, name)
    optimizer.step()


def minimize(loss_fn: Callable[[torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]],
             optimizer: torch.optim.Optimizer) -> Step:
    """The simplest step: one optimizer update on ``loss_fn(x, y)["loss"]``; returns all losses."""

    def step(x: torch.Tensor, y: torch.Tensor) -> Mapping[str, torch.Tensor]:
        losses = loss_fn(x, y)
        update(optimizer, losses["loss"])
        return losses

    return step


def train(step: Step, batches: Iterable, epochs: int, *, check: torch.nn.Module | None = None,
          callbacks: Iterable[EpochCallback] = (), history: History | None = None,
          desc: str = "training", postfix_every: int = 25) -> History:
    """Run ``step`` on every batch for ``epochs`` epochs and return the :class:`History`.

    - ``check``: the model the batches feed; the first batch is checked against what it takes
      (shape, dtype, value range: :func:`~common.machinery.checks.check_batch`), once per run.
      Without it, the first batch must still be finite floats.
    - ``callbacks`` run after each epoch as ``cb(epoch, history)`` (epochs count from 1); a dict
      they return is added to that epoch's record. Their time is not counted in images/s.
    - Pass an existing ``history`` to continue a run; epochs then count on from where it stopped.
    - A NaN or infinite loss stops training with :class:`NonFiniteLossError`; Ctrl-C stops cleanly
      (the model keeps its weights, the history is returned with ``interrupted=True``).
    - Step losses stay on the device and are read back every ``postfix_every`` steps in one transfer.
    """
    _check_batches(batches, check_count(epochs, "epochs"))
    history = history if history is not None else History()
    per_epoch = len(batches) if hasattr(batches, "__len__") else None
    run = _Run(history, progress(total=per_epoch * epochs if per_epoch else None, desc=desc, unit="batch"),
               postfix_every)
    try:
        for epoch in range(history.n_epochs + 1, history.n_epochs + 1 + epochs):
            run.epoch(step, batches, epoch, check)
            for cb in callbacks:
                history.epochs[-1].update({k: float(v) for k, v in (cb(epoch, history) or {}).items()})
    except KeyboardInterrupt:
        run.interrupted()
    finally:
        run.bar.close()
    return history


def _check_batches(batches: Iterable, epochs: int) -> None:
    if epochs > 1 and isinstance(batches, Iterator):
        raise TypeError(f"batches is a one-shot iterator ({type(batches).__name__}), which is empty after the "
                        f"first of {epochs} epochs; pass something that can be iterated again, such as "
                        "data.batches(batch_size) or a list of batches")
    if hasattr(batches, "__len__") and len(batches) == 0:
        raise ValueError("batches is empty (a dataset with no images, or limit/subset 0?): nothing to train on")


def _check_losses(step: Step, losses: object) -> None:
    """The first result of a run's step, checked: a dict of loss names to numbers."""
    name = getattr(step, "__qualname__", type(step).__name__)
    fix = "a step returns a dict of loss names to scalar tensors or floats, such as {'loss': loss}"
    if not isinstance(losses, Mapping):
        raise TypeError(f"the step {name} returned a {type(losses).__name__}; {fix}")
    for k, v in losses.items():
        if not (torch.is_tensor(v) or isinstance(v, numbers.Real)):
            raise TypeError(f"the step {name} returned {k!r} as a {type(v).__name__}; {fix}")


class _Run:
    """The bookkeeping of one :func:`train` call: step counts, pending losses, epoch means."""

    def __init__(self, history: History, bar, postfix_every: int):
        self.history, self.bar, self.postfix_every = history, bar, postfix_every
        self.pending, self.n_step, self.current = Pending(), 0, history.n_epochs + 1
        self.sums, self.counts = {}, {}   # a loss reported on some batches only is averaged over those

    def epoch(self, step: Step, batches: Iterable, epoch: int, check: torch.nn.Module | None) -> None:
        self.current, n_images, start = epoch, 0, time.perf_counter()
        self.sums.clear()
        self.counts.clear()
        for x, y in batches:
            if self.n_step == 0:                          # the door: once per run
                check_batch(x, check) if check is not None else check_finite_floats(x)
            self.n_step += 1
            losses = self.call(step, x, y)
            if self.n_step == 1:
                _check_losses(step, losses)
            self.pending.add(self.n_step, losses)
            n_images += x.shape[0]
            self.bar.update()
            if self.n_step % self.postfix_every == 0:
                self.record()
        self.record()
        if n_images == 0:
            raise ValueError(f"batches yielded nothing in epoch {epoch}: an empty dataset, or an "
                             "iterator that was already used up; pass data.batches(batch_size)")
        busy = time.perf_counter() - start
        self.history.epochs.append({"epoch": epoch, **{k: v / self.counts[k] for k, v in self.sums.items()},
                                    "images_per_s": n_images / busy if busy > 0 else float("nan")})
        self.history.seconds += busy
        self.history.images_seen += n_images

    def call(self, step: Step, x: torch.Tensor, y: torch.Tensor) -> Mapping:
        try:
            return step(x, y)
        except NonFiniteLossError as err:
            self.record()  # what the steps before this one reported
            raise NonFiniteLossError(
                f"Loss {err.loss!r} became {err.value} at epoch {self.current}, step {self.n_step}. Training "
                "stopped before the optimizer update that would have used it, so no parameter was updated with "
                "it (updates earlier in the step, such as D's before G's, did run, and so did this step's "
                f"batch-norm statistics); `err.history` holds what was recorded. {_NAN_FIXES}",
                self.history, err.loss, True, err.value) from None

    def record(self) -> None:
        """Read the pending losses back (one transfer), check them, and add them to the history."""
        latest: dict[str, float] = {}
        values = self.pending.flush()
        bad = next(((n, k, v) for n, k, v in values if not math.isfinite(v)), None)
        for n, k, v in values:
            if bad is not None and n >= bad[0]:   # keep the steps before the bad one, whole
                raise NonFiniteLossError(
                    f"{bad[1]!r} became {bad[2]} at epoch {self.current}, step {bad[0]}. Training stopped, but "
                    "after the step had run: unless the step guards its optimizer updates with "
                    "training.require_finite(loss), the model may now hold non-finite weights (retrain or "
                    f"reload them); `err.history` holds what was recorded. {_NAN_FIXES}",
                    self.history, bad[1], False, bad[2])
            self.history.steps.setdefault(k, []).append(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
            latest[k] = v
        if latest:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in latest.items()}, refresh=False)

    def interrupted(self) -> None:
        self.history.interrupted = True
        try:
            self.record()  # the steps that finished before the interrupt
        except NonFiniteLossError:
            pass
        print(f"Interrupted during epoch {self.current}: the model keeps its current weights and "
              f"`history` holds {self.history.n_epochs} complete epochs.")


@torch.no_grad()
def evaluate(loss_fn: Callable[[torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]], batches: Iterable,
             model: torch.nn.Module | None = None, seed: int | None = 0) -> dict[str, float]:
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
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) * x.shape[0]
            n += x.shape[0]
    if n == 0:
        raise ValueError("evaluate got no batches (an empty dataset?): there is nothing to average")
    return {k: v / n for k, v in sums.items()}


# A notebook's checkpointed run (machinery, kept apart from the loop; imported here for notebooks).
from .machinery.fitting import fit_or_load  # noqa: E402,F401
