"""What a training run records, and how its losses come back from the device without a wait per step.

:class:`History` is what :func:`common.training.train` returns and what a checkpoint stores with
its model; :class:`Pending` holds a run's step losses on the device until they are read back in
one transfer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch


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


class Pending:
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
