"""Where the course runs: the smoke switch, the device, seeds and paths.

Every notebook calls :func:`setup` in its first code cell, which prints what it chose.

The smoke switch
----------------
``DGM_SMOKE=1`` runs every notebook in *smoke* mode: a tiny subset of the data and a few steps,
so the whole course executes in minutes on a laptop CPU. Smoke mode only shrinks sizes and
counts; every cell and every figure still runs. It is also on whenever ``CI`` is set (as CI
services set it), so ``CI=true pytest --nbval-lax notebooks/`` is quick. ``DGM_SMOKE=0`` forces
the normal mode even under CI.

Paths
-----
Datasets and checkpoints live under ``data/`` at the repository root; ``DGM_DATA_DIR`` moves
them. Smoke-mode checkpoints go to ``data/checkpoints/smoke/`` so that a quick test run never
overwrites the models a learner trained in normal mode.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SMOKE_VAR = "DGM_SMOKE"
DATA_VAR = "DGM_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]

_FALSE = {"", "0", "false", "no", "off"}


def smoke_mode() -> bool:
    """True if ``DGM_SMOKE`` says so, else if ``CI`` is set to anything but a false value."""
    explicit = os.environ.get(SMOKE_VAR)
    if explicit is not None:
        return explicit.strip().lower() not in _FALSE
    return os.environ.get("CI", "").strip().lower() not in _FALSE


def data_dir() -> Path:
    """``$DGM_DATA_DIR`` if set, else ``data/`` at the repository root."""
    return Path(os.environ.get(DATA_VAR) or REPO_ROOT / "data").expanduser().resolve()


def checkpoint_dir(smoke: bool | None = None) -> Path:
    """Where trained models are saved; smoke runs get their own sub-folder."""
    smoke = smoke_mode() if smoke is None else smoke
    root = data_dir() / "checkpoints"
    return root / "smoke" if smoke else root


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU; ``prefer`` (e.g. "cpu") overrides."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


@dataclass(frozen=True)
class Runtime:
    """What :func:`setup` chose; notebooks keep it as ``rt``."""

    smoke: bool
    device: torch.device
    seed: int
    data_dir: Path
    checkpoint_dir: Path

    def __str__(self) -> str:
        mode = "SMOKE (tiny subset, few steps)" if self.smoke else "normal"
        return (f"mode: {mode} | device: {self.device} | seed: {self.seed} | "
                f"torch {torch.__version__} | threads: {torch.get_num_threads()}\n"
                f"data: {self.data_dir}\ncheckpoints: {self.checkpoint_dir}")


def setup(seed: int = 0, device: str | None = None, verbose: bool = True) -> Runtime:
    """Choose the device, seed everything and report the mode, once per notebook."""
    rt = Runtime(smoke=smoke_mode(), device=get_device(device), seed=seed,
                 data_dir=data_dir(), checkpoint_dir=checkpoint_dir())
    seed_everything(seed)
    if verbose:
        print(rt)
    return rt
