"""Where the course runs: the run profile, the dataset override, the device, seeds and paths.

Every notebook calls :func:`setup` in its first code cell, which prints what it chose, and
:func:`configure` in its config cell, which applies the profile to the notebook's config.

Profiles: one switch, ``DGM_PROFILE``
-------------------------------------
- ``smoke``: a tiny subset and a few steps, every cell and figure still runs (seconds on a
  2-core CPU). What CI and ``pytest --nbval-lax`` run.
- ``cpu``: what a learner runs on a laptop; each notebook at most 15 minutes on 2 cores.
- ``gpu``: the published-scale budget (converged GANs, Inception FID at N = 10,000, 64x64
  datasets at full size) for one datacenter GPU.

Default: ``smoke`` when ``CI`` is set (and under pytest, see ``conftest.py``), else ``gpu`` when
CUDA is available, else ``cpu``. ``DGM_SMOKE=1`` is an alias of ``DGM_PROFILE=smoke``
(``DGM_SMOKE=0``: not smoke, even under CI). A profile only changes sizes and counts.

``DGM_DATASET=name`` runs a notebook on another dataset without editing it (see
:func:`common.machinery.data.load_dataset` for the names). ``DGM_CONFIG='{"epochs": 1}'`` (a JSON
object) sets config fields on top of the profile, in every notebook whose config has them; the
tests use it to run the 64x64 and colour paths at the smallest size that still executes them.

Paths: datasets and checkpoints live under ``data/`` at the repository root; ``DGM_DATA_DIR``
moves them (a file there is refused, a folder that cannot be written is reported by
:func:`setup`). Checkpoints go to ``data/checkpoints/<profile>/``, so a smoke run never overwrites
the models of a real run.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

PROFILE_VAR, SMOKE_VAR, DATASET_VAR, DATA_VAR = "DGM_PROFILE", "DGM_SMOKE", "DGM_DATASET", "DGM_DATA_DIR"
CONFIG_VAR = "DGM_CONFIG"
PROFILES = ("smoke", "cpu", "gpu")
REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = REPO_ROOT / "data"   # what git ships, read-only: pretrained models, the FID domain classifier

_FALSE = {"", "0", "false", "no", "off"}


def _truthy(value: str) -> bool:
    return value.strip().lower() not in _FALSE


def profile() -> str:
    """The run profile: ``DGM_PROFILE``, else the ``DGM_SMOKE`` alias, else ``smoke`` under CI,
    else ``gpu`` with CUDA, else ``cpu``."""
    explicit = os.environ.get(PROFILE_VAR, "").strip().lower()
    if explicit:
        if explicit not in PROFILES:
            raise ValueError(f"{PROFILE_VAR}={explicit!r} is not a profile; use one of {', '.join(PROFILES)}")
        return explicit
    smoke = os.environ.get(SMOKE_VAR)
    if smoke is not None and _truthy(smoke):
        return "smoke"
    if smoke is None and _truthy(os.environ.get("CI", "")):
        return "smoke"
    return "gpu" if torch.cuda.is_available() else "cpu"


def dataset_override() -> str | None:
    """``DGM_DATASET`` if set (a teacher running a notebook on another dataset), else None."""
    return os.environ.get(DATASET_VAR, "").strip() or None


def data_dir() -> Path:
    """Where datasets, caches and your checkpoints go: ``$DGM_DATA_DIR`` if set, else ``data/`` at
    the repository root. The one place that reads the variable; files the repository ships are in
    :data:`SHIPPED_DIR`, wherever ``DGM_DATA_DIR`` points. A path that is (or is under) a file can
    hold nothing: a NotADirectoryError naming it and the fix. It need not exist yet."""
    value = os.environ.get(DATA_VAR)
    path = Path(value or REPO_ROOT / "data").expanduser().resolve()
    existing = _nearest_existing(path)
    if not existing.is_dir():
        what = f"{DATA_VAR}={value}" if value else f"the data folder {path}"
        where = "is" if existing == path else f"is under {existing}, which is"
        unset = ", or unset it to use data/ in the repository" if value else ""
        raise NotADirectoryError(f"{what} {where} a file, not a folder; set {DATA_VAR} to a folder "
                                 f"(it is created if missing){unset}")
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the root at worst)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def unwritable(folder: Path) -> str | None:
    """Why files cannot be created under ``folder`` (it, or the closest ancestor that exists, is
    read-only to this user or on a read-only disk), or None where they can."""
    existing = _nearest_existing(folder)
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    return f"{folder} cannot be written ({existing} is read-only here)"


def checkpoint_dir(profile_name: str | None = None) -> Path:
    """Where trained models are saved: one sub-folder per profile."""
    return data_dir() / "checkpoints" / (profile_name or profile())


def progress(total: int | None = None, desc: str | None = None, unit: str = "it", disable: bool = False, **kwargs):
    """The course's progress bar: tqdm's widget form in a notebook kernel, its text form elsewhere.

    In a notebook, a saved output keeps a widget's *text* form for viewers without widgets
    (GitHub, nbconvert, CI), and tqdm's widget writes that text once, when the bar appears: every
    committed bar would read "0%". This bar re-displays itself when it closes, so the saved text
    is its final state (e.g. "100%| 4690/4690 [07:47, 10.0 batch/s]"); in a live notebook the
    widget simply stays. Use it as a context manager, or call ``close()``.
    """
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm as notebook_tqdm

    if disable or not issubclass(tqdm, notebook_tqdm):
        return tqdm(total=total, desc=desc, unit=unit, disable=disable, **kwargs)
    return _final_state_bar()(total=total, desc=desc, unit=unit, **kwargs)


def _final_state_bar():
    """The notebook bar class (built on first use, so importing ``common`` needs no widgets)."""
    global _FinalStateBar
    if _FinalStateBar is None:
        from IPython.display import display
        from tqdm.notebook import tqdm as notebook_tqdm

        class FinalStateBar(notebook_tqdm):
            def __init__(self, *args, **kwargs):
                self._handle = None
                super().__init__(*args, display=False, **kwargs)
                if not self.disable:
                    self._handle = display(self.container, display_id=True)
                    self.displayed = True

            def close(self):
                super().close()
                handle, self._handle = getattr(self, "_handle", None), None
                if handle is not None:   # replaces the saved "0%" text with the final state
                    handle.update(self.container)

        _FinalStateBar = FinalStateBar
    return _FinalStateBar


_FinalStateBar = None


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU; ``prefer`` (e.g. "cpu") overrides."""
    if prefer:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} was asked for, but this PyTorch sees no CUDA GPU; "
                               "use get_device() to pick what is there")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


SEED_MAX = 2 ** 32 - 1   # NumPy's legacy seed is a 32-bit unsigned int


def check_seed(seed) -> int:
    """``seed`` as an int in 0..2**32 - 1 (what Python, NumPy and PyTorch all take), or a
    TypeError/ValueError naming ``seed`` and the range. True/False are not seeds."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a whole number from 0 to {SEED_MAX:,}, got {seed!r} ({type(seed).__name__})")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX:,}, got {seed!r}")
    return int(seed)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated; ``seed`` is an int
    in 0..2**32 - 1 (:func:`check_seed`)."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


@dataclass(frozen=True)
class Runtime:
    """What :func:`setup` chose; notebooks keep it as ``rt``."""

    profile: str
    device: torch.device
    seed: int
    data_dir: Path
    checkpoint_dir: Path
    dataset: str | None = None  # the DGM_DATASET override, if any

    @property
    def smoke(self) -> bool:
        return self.profile == "smoke"

    def __str__(self) -> str:
        override = f" | dataset override: {self.dataset}" if self.dataset else ""
        return (f"profile: {self.profile} | device: {self.device} | seed: {self.seed} | "
                f"torch {torch.__version__} | threads: {torch.get_num_threads()}{override}\n"
                f"data: {self.data_dir}\ncheckpoints: {self.checkpoint_dir}")


def setup(seed: int = 0, device: str | None = None, verbose: bool = True) -> Runtime:
    """Choose the profile and device, seed everything and report, once per notebook. A seed out
    of range and a ``DGM_DATA_DIR`` that is a file are refused here; a data folder that cannot be
    written is warned about (nothing could be saved or cached there)."""
    seed, name = check_seed(seed), profile()
    rt = Runtime(profile=name, device=get_device(device), seed=seed, data_dir=data_dir(),
                 checkpoint_dir=checkpoint_dir(name), dataset=dataset_override())
    problem = unwritable(rt.data_dir)
    if problem:
        warnings.warn(f"{problem}: checkpoints and caches cannot be saved there; set {DATA_VAR} to a writable folder")
    seed_everything(seed)
    if verbose:
        print(rt)
    return rt


def configure(config_cls: type, profiles: Mapping[str, Mapping[str, Any]], rt: Runtime, show: bool = True):
    """The notebook's config for ``rt``'s profile: ``config_cls()`` with ``profiles[rt.profile]``'s
    values applied, then the ``DGM_DATASET`` override (ignored, with a warning, by a config
    without a ``dataset`` field). With ``show``, print every field that a profile changes, the
    profiles side by side, so a learner sees what each one trains."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for name, values in profiles.items():
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r} in the config; use {', '.join(PROFILES)}")
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"profile {name!r} sets {sorted(unknown)}, which {config_cls.__name__} does not have")
    cfg = dataclasses.replace(config_cls(), **profiles.get(rt.profile, {}))
    dataset = rt.dataset if "dataset" in fields else None
    if dataset:
        cfg = dataclasses.replace(cfg, dataset=dataset)
    elif rt.dataset:   # a notebook that is not about a dataset: the course-wide override does not apply
        warnings.warn(f"{DATASET_VAR}={rt.dataset} is ignored here: {config_cls.__name__} has no `dataset` field, "
                      "so this notebook runs as written")
    overrides, ignored = config_overrides(fields)
    cfg = dataclasses.replace(cfg, **overrides)
    if show:
        print(profile_table(config_cls, profiles, rt.profile))
        if dataset:
            print(f"dataset: {cfg.dataset} (from {DATASET_VAR})")
        if overrides or ignored:
            print(f"from {CONFIG_VAR}: " + ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                  + (f" (not in this notebook's config: {', '.join(ignored)})" if ignored else ""))
    return cfg


def config_overrides(fields: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The ``DGM_CONFIG`` fields this config has (lists become tuples, as configs hold them) and
    the names of those it does not have. Not JSON, or not an object: a ValueError naming the fix."""
    text = os.environ.get(CONFIG_VAR, "").strip()
    if not text:
        return {}, []
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{CONFIG_VAR} must be a JSON object such as '{{\"epochs\": 1}}', got {text!r} "
                         f"({err.msg})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{CONFIG_VAR} must be a JSON object such as '{{\"epochs\": 1}}', got {text!r}")
    nested = sorted(k for k, v in values.items() if isinstance(v, dict))
    if nested:
        raise ValueError(f"{CONFIG_VAR} sets {nested} to a JSON object; a nested config (a recipe) is set in the "
                         "notebook's config cell, not from the environment")
    tupled = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return ({k: v for k, v in tupled.items() if k in fields}, sorted(k for k in tupled if k not in fields))


def profile_table(config_cls: type, profiles: Mapping[str, Mapping[str, Any]], active: str) -> str:
    """The fields that some profile changes, one row each, a column per profile; the active one
    is marked with *. Fields no profile changes are left out (they are the same everywhere)."""
    base = config_cls()
    changed = [f.name for f in dataclasses.fields(config_cls) if any(f.name in v for v in profiles.values())]
    value = lambda p, k: repr(profiles.get(p, {}).get(k, getattr(base, k)))  # noqa: E731
    header = ["field"] + [p + (" *" if p == active else "") for p in PROFILES]
    rows = [header] + [[k] + [value(p, k) for p in PROFILES] for k in changed]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"profiles (* = this run: {active}); other fields are the same in every profile:\n" + "\n".join(lines)
