"""The course's pretrained models: ``data/pretrained/``, tracked by git, with a manifest.

Each model is one checkpoint file in the course's format (:mod:`common.machinery.checkpoints`: plain
containers, loaded with ``weights_only=True``), named like the notebooks' checkpoints
(``<model>-<dataset>-<C>x<H>x<W>.pt``). ``manifest.json`` lists, for every file: its SHA-256,
the budget that trained it (profile, epochs, device, training seconds, date), its metrics, and how
its weights are stored.

- **Half precision.** A model's float32 weights are stored as float16 when that moves no pixel
  of its samples by more than 1/255 (measured when the file is written, on a fixed batch of
  samples, and recorded as ``max_pixel_change``); otherwise they stay float32. Loading (here or
  with ``checkpoints.load_checkpoint``) gives float32 weights back either way.
- **Manifest and hash check.** A model's file is ``<name>.pt`` in the manifest's folder: an entry
  naming any other file (``../x.pt``, an absolute path, another model's file) is refused before
  anything is opened. :func:`load` compares the file's SHA-256 with the manifest's before reading
  it, and the model's class and parameter count with the entry's after; a file that differs
  (damaged, half downloaded, edited, swapped) is refused with the fix.

``python -m tools.pretrain`` trains and writes them (see its docstring for the budgets).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checkpoints, features, runtime, storage

DIR = runtime.SHIPPED_DIR / "pretrained"
MANIFEST = "manifest.json"
TOLERANCE = 1 / 255


class PretrainedError(RuntimeError):
    """A pretrained model that is not listed, missing, or does not match its manifest."""


def manifest(directory: str | Path = DIR) -> dict:
    """The manifest: ``{"models": {name: entry}}`` (empty when there is none yet)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {"models": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PretrainedError(f"{path} is not valid JSON ({err}); restore it with "
                              f"`git checkout -- {path.name}` in {path.parent}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise PretrainedError(f"{path} has no 'models' table; restore it from git")
    return data


def names(directory: str | Path = DIR) -> list[str]:
    """The pretrained models the manifest lists."""
    return sorted(manifest(directory)["models"])


def entry(name: str, directory: str | Path = DIR) -> dict:
    """The manifest's record of ``name`` (hash, budget, metrics, storage)."""
    models = manifest(directory)["models"]
    if name not in models:
        listed = ", ".join(sorted(models)) or "none"
        raise PretrainedError(f"no pretrained model {name!r} in {Path(directory) / MANIFEST} (listed: {listed}); "
                              "`python -m tools.pretrain` trains them")
    return models[name]


LOAD_KEYS = ("file", "sha256", "parameters")                  # what :func:`load` checks the file by
BUDGET_KEYS = ("budget", "epochs", "train_seconds", "device")    # what :func:`compare` prints


def _require(name: str, record: object, keys: tuple, directory: str | Path) -> None:
    """Refuse a manifest entry that is not a table or lacks one of ``keys``, naming both."""
    where = f"entry {name!r} in {Path(directory) / MANIFEST}"
    fix = (f"restore the manifest with `git checkout -- {MANIFEST}` in {directory}, or retrain the model with "
           "`python -m tools.pretrain`")
    if not isinstance(record, dict):
        raise PretrainedError(f"{where} is a {type(record).__name__}, not a table of the model's file, hash and "
                              f"budget; {fix}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise PretrainedError(f"{where} has no {missing[0]!r}; {fix}")


def _file(name: str, record: dict, directory: str | Path) -> Path:
    """The entry's file, which must be ``<name>.pt`` inside ``directory`` (checked before anything
    opens it: a manifest may not make :func:`load` read, or hash, a file from elsewhere)."""
    folder, file = Path(directory), record["file"]
    restore = f"restore the manifest with `git checkout -- {MANIFEST}` in {folder}"
    if not isinstance(file, str) or Path(file).name != file or "\\" in file or \
            (folder / file).resolve().parent != folder.resolve():
        raise PretrainedError(f"entry {name!r} in {folder / MANIFEST} names the file {file!r}; only a plain file name "
                              f"inside {folder} is accepted (the entry was edited): {restore}")
    if file != f"{name}.pt":
        raise PretrainedError(f"entry {name!r} in {folder / MANIFEST} names the file {file!r}, but the file of a model "
                              f"is its name, {name + '.pt'!r}: entries were swapped or edited; {restore}")
    return folder / file


def _check_model(path: Path, model: torch.nn.Module, record: dict) -> None:
    """The model in ``path`` must be what its manifest entry says: its class (recorded by
    :func:`save` since entries have a ``class``) and its parameter count."""
    cls, n = type(model).__name__, sum(p.numel() for p in model.parameters())
    fix = "the file or the manifest was swapped or edited; restore both with `git checkout -- data/pretrained/`"
    if record.get("class", cls) != cls:
        raise PretrainedError(f"{path} holds a {cls}, but its manifest entry says {record['class']}: {fix}")
    if n != record["parameters"]:
        raise PretrainedError(f"{path} holds a {cls} with {n:,} parameters, but its manifest entry says "
                              f"{record['parameters']}: {fix}")


def load(name: str, device: torch.device | str = "cpu",
         directory: str | Path = DIR) -> tuple[torch.nn.Module, dict]:
    """The pretrained model ``name`` on ``device`` (eval mode, float32) and its manifest entry.
    The entry must name the file ``<name>.pt``, whose SHA-256 and parameter count (and class,
    where the entry records it) must match the entry's."""
    record = entry(name, directory)
    _require(name, record, LOAD_KEYS, directory)
    path = _file(name, record, directory)
    if not path.is_file():
        raise PretrainedError(f"{path} is listed in the manifest but missing; restore it with "
                              "`git checkout -- data/pretrained/` (or `git lfs pull` on a fork that moved it to LFS)")
    digest = storage.file_hash(path)
    if digest != record["sha256"]:
        raise PretrainedError(f"{path} does not match its manifest (SHA-256 {digest[:12]}..., expected "
                              f"{record['sha256'][:12]}...): the file is damaged or was changed. Restore it with "
                              "`git checkout -- data/pretrained/`, or retrain it with `python -m tools.pretrain`")
    model, _ = checkpoints.load_checkpoint(path, device)
    _check_model(path, model, record)
    return model, record


def _half_copy(model: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """A copy of ``model`` whose float32 parameters and buffers are float16 (others untouched)."""
    twin = copy.deepcopy(model).cpu()
    keys = []
    for key, tensor in twin.state_dict(keep_vars=True).items():
        if tensor.dtype == torch.float32:
            tensor.data = tensor.data.half()
            keys.append(key)
    return twin, keys


@torch.no_grad()
def _samples(model: torch.nn.Module, sample: Callable[[torch.nn.Module], torch.Tensor], seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sample(model.eval()).float().cpu()


def save(model: torch.nn.Module, name: str, record: dict,
         sample: Callable[[torch.nn.Module], torch.Tensor] | None = None,
         directory: str | Path = DIR, config: dict | None = None, seed: int = 0) -> dict:
    """Write ``model`` as ``<directory>/<name>.pt`` and its manifest entry (``record`` plus the
    file, hash and storage); return the entry. ``sample(model)`` -> images in [0, 1] (default
    ``model.sample(64)``) decides the storage: float16 if no pixel moves by more than 1/255."""
    directory = Path(directory)
    sample = sample or (lambda m: m.sample(64))
    model = model.cpu().eval()
    reference = _samples(model, sample, seed)
    path = directory / f"{name}.pt"
    twin, keys = _half_copy(model)
    checkpoints.save_checkpoint(twin, path, config, half_precision_keys=keys)
    change = (_samples(checkpoints.load_checkpoint(path)[0], sample, seed) - reference).abs().max().item()
    precision = "float16"
    if change > TOLERANCE:                  # half precision would change the samples: keep float32
        checkpoints.save_checkpoint(model, path, config, half_precision_keys=[])
        change = (_samples(checkpoints.load_checkpoint(path)[0], sample, seed) - reference).abs().max().item()
        precision = "float32"
    result = {**record, "file": path.name, "class": type(model).__name__, "sha256": storage.file_hash(path),
              "bytes": path.stat().st_size, "parameters": sum(p.numel() for p in model.parameters()),
              "storage": precision, "max_pixel_change": change}
    table = manifest(directory)
    table["models"][name] = result
    table["models"] = dict(sorted(table["models"].items()))
    with storage.atomic_write(directory / MANIFEST) as f:
        f.write((json.dumps(table, indent=1) + "\n").encode())
    return result


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def budget_text(epochs: int, seconds: float, device: str) -> str:
    """``"10 epochs, 4.7 min on cpu"``: a training budget in words."""
    return f"{epochs} epochs, {_minutes(seconds)} on {device}"


@dataclass
class Comparison:
    """What :func:`compare` measured: sample rows for :func:`common.plots.image_rows`, the
    printed table, and per model ``{"yours": metrics, "pretrained": metrics}``."""
    samples: dict
    table: str
    metrics: dict


def _history_budget(timed: list[str], tag: str, device: torch.device | str) -> tuple[int, str]:
    """Epochs and budget text of your checkpoints ``timed`` (their training seconds add up)."""
    histories = [checkpoints.read_checkpoint(f"{t}-{tag}")["extra"]["history"] for t in timed]
    epochs = len(histories[0]["epochs"])
    seconds = sum(h["seconds"] for h in histories)
    return epochs, f"{runtime.profile()} profile: " + budget_text(epochs, seconds, torch.device(device).type)


@torch.no_grad()
def compare(models, test, n: int = 5_000, per_class: int = 500, seed: int = 0,
            device: torch.device | str = "cpu", directory: str | Path = DIR, n_samples: int = 10) -> Comparison:
    """Your checkpoints beside the course's pretrained models: what more training buys.

    ``models``: ``(label, checkpoint, timed)`` triples: the checkpoint name without the dataset tag
    (``"vae_conv"``), and the checkpoints whose training time counts (a VQ-VAE sampler's time is
    its VQ-VAE's plus its prior's). Yours are read from this profile's checkpoint directory, the
    pretrained ones (hash-checked) from ``directory``. Both are measured the same way: FID
    (N = ``n``, seed ``seed``; the dataset's domain classifier) against ``test`` and, for
    conditional models, class accuracy (``per_class`` samples per class) by the independent
    classifier (Fashion-MNIST; no loss ever trained against it) and by the domain classifier. The samples share their noise (and labels), so each pair of rows shows what the
    longer training changed. A model missing on either side is named, with the reason, instead."""
    from .. import classifiers, fid     # measured with the teaching code, imported when measuring
    table = manifest(directory)["models"]
    for key, record in table.items():
        _require(key, record, ("dataset",), directory)
    shipped_for = {record["dataset"] for record in table.values()}
    pairs, notes = [], []
    for label, ckpt, timed in models:
        name = f"{ckpt}-{test.tag}"
        if test.tag not in shipped_for:
            notes.append(f"{label}: the course ships pretrained models for {', '.join(sorted(shipped_for)) or 'no dataset'}, "
                         f"not {test.tag} (`python -m tools.pretrain` trains them)")
            continue
        try:
            mine, _ = checkpoints.load_checkpoint(name, device)
            epochs, budget = _history_budget(timed, test.tag, device)
            shipped, record = load(name, device, directory)
            _require(name, record, BUDGET_KEYS, directory)
        except (checkpoints.CheckpointError, PretrainedError) as err:
            notes.append(f"{label}: not compared ({err})")
            continue
        pairs.append((label, {"yours": (mine, epochs, budget),
                              "pretrained": (shipped, record["epochs"], f"{record['budget']}: " + budget_text(
                                  record["epochs"], record["train_seconds"], record["device"]))}))
    samples, metrics = {}, {}
    if pairs:     # no feature extractor (or its reference statistics) when there is nothing to measure
        n = min(n, len(test))
        extractor = features.extractor_for(test, "auto", device)
        reference = fid.reference_stats(test, n, extractor)
        domain = extractor.name.startswith("domain")
        judges = {"domain classifier": extractor.model} if domain else {}
        if domain and test.tag == classifiers.INDEPENDENT_DATASET:
            judges = {"independent classifier": classifiers.load_independent(device), **judges}
    for label, sides in pairs:
        metrics[label] = {}
        for who, (model, epochs, budget) in sides.items():
            model.eval()
            row = {"budget": budget, "epochs": epochs,
                   "fid": fid.fid(model, reference, n, extractor, seed=seed, progress=False).value}
            if getattr(model, "conditional", False) and domain:
                for key, judge in judges.items():      # the independent classifier's first, where there is one
                    acc = classifiers.class_accuracy(model, judge, per_class)
                    row.setdefault("class_accuracy", {})[key] = dict(
                        mean=sum(acc) / len(acc), worst=min(acc), worst_class=test.classes[acc.index(min(acc))])
            metrics[label][who] = row
            dev = torch.device(device)
            with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
                torch.manual_seed(seed)
                k = getattr(model, "n_classes", 0)
                labels = torch.arange(n_samples, device=model.device) % k if k else None
                samples[f"{label}\n{who}, {epochs} epochs"] = (model.sample(n_samples, labels) if k
                                                               else model.sample(n_samples)).cpu()
    lines = []
    if metrics:
        fid_name = f"{'domain' if domain else 'Inception'} FID (N = {n:,})"
        judged = " | ".join(judges) if any("class_accuracy" in r for m in metrics.values() for r in m.values()) else ""
        lines = [f"{'model':<22}{'trained by':<48}{fid_name:>24}   class accuracy (worst class): {judged or '-'}"]
        lines.append("-" * len(lines[0]))
        for label, sides in metrics.items():
            for who, row in sides.items():
                acc = (" | ".join(f"{a['mean']:.1%} ({a['worst']:.0%} {a['worst_class']})"
                                  for a in row["class_accuracy"].values()) if "class_accuracy" in row else "-")
                first = label if who == "yours" else ""
                lines.append(f"{first:<22}{who + ', ' + row['budget']:<48}{row['fid']:>24.2f}   {acc}")
    return Comparison(samples, "\n".join(lines + notes), metrics)
