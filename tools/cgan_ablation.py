"""What does each change to the conditional GAN buy? Train every recipe of notebook 04's table.

    .venv/bin/python -m tools.cgan_ablation [--only NAME ...] [--epochs 4] [--threads N]
                                           [--out data/results/cgan_ablation]

Each recipe (a :mod:`common.recipes` recipe, built by ``recipes.build`` as notebook 04 builds its
two) trains a conditional generator on Fashion-MNIST from one seed (``--seed``) with ``training.train``,
and after every epoch records, per class, how often the course's conv classifier (the domain-FID network) assigns
``--per-class`` samples to the class they were asked for, and the domain FID of ``--fid-n``
class-balanced samples against the test set. One JSON file per recipe is written to ``--out``
(atomically, so an interrupted run leaves the others intact), with a PNG of the last epoch's
samples (rows: classes; columns: the same 8 noise vectors); notebook 04 reads them and prints the
table. Training time and images/s exclude the evaluations. Two recipes can run side by side
on a 2-core CPU with ``--threads 1`` each (``--only`` picks them).

The recipes differ from the first one ("label channels", the DCGAN/WGAN-GP reports' conditioning:
the label as one extra channel in G and D) in one or two things each, so the table says what each
change buys. The generator is the same in every recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torchvision

from common import classifiers, dcgan, fid, layers, recipes, training
from common.ema import recalibrate_batch_norm
from common.machinery import data, features, runtime

# name -> (what changed, recipe). The first is the reports' conditional DCGAN: label channels in
# G and D, no extra term, batch 128; the others change one or two things each.
REPORTS = recipes.CDCGAN(discriminator="channels", class_weight=0.0, matching_weight=0.0, batch_size=128)
HEADS_AC = replace(REPORTS, discriminator="heads", class_weight=1.0)
RECIPES = {
    "label channels": ("the reports' recipe: the label as an extra channel in G and D", REPORTS),
    "+ matching-aware": ("real images with a wrong label count as fakes (weight 0.5)",
                         replace(REPORTS, matching_weight=0.5)),
    "projection D (Miyato)": ("D reads the label at the end: psi(h) + <w_y, h>",
                              replace(REPORTS, discriminator="projection")),
    "per-class heads D": ("D reads the label at the end: <w_y, h>, one head per class",
                          replace(REPORTS, discriminator="heads")),
    "heads + aux. classifier": ("+ an auxiliary classifier on D's features (AC-GAN), weight 1", HEADS_AC),
    "heads + AC + matching-aware": ("both terms", replace(HEADS_AC, matching_weight=0.5)),
    "heads + AC + m.-a., batch 64": ("twice the updates per epoch: notebook 04's conditional DCGAN",
                                     recipes.CDCGAN(ema=True)),
    "WGAN-GP, label channels": ("the WGAN-GP paper's settings: n_critic 5, lr 1e-4",
                                recipes.WGANGP(discriminator="channels", class_weight=0.0, lr=1e-4, n_critic=5)),
    "WGAN-GP, heads + AC, n_critic 2": ("the critic reads the label at the end, + classifier; lr 2e-4, "
                                        "2.5x the generator updates", recipes.WGANGP(n_critic=2, ema=True)),
    "WGAN-GP, heads + AC, n_critic 1": ("one critic step per generator step", recipes.WGANGP(ema=True)),
    "WGAN-GP, heads + AC, n_critic 5": ("as n_critic 2, with the paper's 5", recipes.WGANGP(n_critic=5)),
}
CHANNELS = 32                                   # G's and D's width in every recipe


def run(name: str, recipe: recipes.Recipe, epochs: int, per_class: int, fid_n: int, device, out: Path,
        limit: int | None = None, seed: int = 0) -> dict:
    train = data.load_dataset("fashion_mnist", "train", device=device, limit=limit)
    test = data.load_dataset("fashion_mnist", "test", device=device)
    k = len(train.classes)
    extractor = features.extractor_for(test, "auto", device)
    reference = fid.reference_stats(test, fid_n, extractor)
    clf = extractor.model
    torch.manual_seed(seed)                     # the seed sets G's and D's weights and the batch order
    G, _, _, _, step, ema = recipes.build(recipe, train.image_shape, k, 100, CHANNELS, CHANNELS, device)
    batches = train.batches(recipe.batch_size, seed=seed)
    grid_z = torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(1)).to(device).repeat(k, 1)
    grid_y = torch.arange(k, device=device).repeat_interleave(8)       # rows = classes, same 8 z

    def measure(model, epoch, history) -> dict:
        acc = classifiers.class_accuracy(model, clf, per_class)
        value = fid.fid(model, reference, fid_n, extractor, seed=0, progress=False).value
        g_updates = epoch * len(batches) // getattr(recipe, "n_critic", 1)
        row = dict(epoch=epoch, accuracy=acc, mean_accuracy=sum(acc) / k, min_accuracy=min(acc), fid=value,
                   g_updates=g_updates, train_seconds=history.seconds,
                   images_per_s=history.images_seen / history.seconds)
        print(f"{name}{' (EMA)' if model is not G else ''} | epoch {epoch}: accuracy {row['mean_accuracy']:.1%} "
              f"(min {min(acc):.0%}), FID {value:.2f}, {g_updates} G updates, {history.seconds:.0f} s, "
              f"{row['images_per_s']:.0f} img/s", flush=True)
        return row

    def evaluate(epoch, history):
        result["epochs"].append(measure(G, epoch, history))
        if ema is not None:                     # the same run, sampled from the average of G's weights
            result["ema_epochs"].append(measure(recalibrate_batch_norm(ema.model), epoch, history))
        with torch.no_grad(), layers.eval_mode(G):             # the table's sample grid, fixed noise
            grid = dcgan.from_tanh_range(G(grid_z, grid_y)).clamp(0, 1)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (stem(name, seed) + ".tmp.png")
        torchvision.utils.save_image(grid, tmp, nrow=8, padding=1, pad_value=1.0)
        os.replace(tmp, out / result["grid"])
        save(out, name, seed, result)           # after the PNG it names

    settings = dict(loss="wgan-gp" if isinstance(recipe, recipes.WGANGP) else "dcgan", **asdict(recipe),
                    z_dim=100, channels=CHANNELS)
    result = dict(name=name, order=list(RECIPES).index(name), change=RECIPES[name][0], recipe=settings, seed=seed,
                  epochs=[], ema_epochs=[], classes=list(train.classes), grid=stem(name, seed) + ".png",
                  fid_n=fid_n, per_class=per_class, train_images=len(train),
                  classifier=extractor.name, real_accuracy=_real_accuracy(clf, test),
                  device=str(device), threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                  torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    training.train(step, batches, epochs, check=G, callbacks=[evaluate], desc=name)
    return result


def _real_accuracy(clf, test) -> list[float]:
    return classifiers.per_class_accuracy(clf.predict(test[:][0]), test.labels, len(test.classes))


def stem(name: str, seed: int = 0) -> str:
    """'heads + AC + matching-aware' -> 'heads-ac-matching-aware' (its .json and .png); seed 1 adds '.seed-1'."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return base if seed == 0 else f"{base}.seed-{seed}"


def save(out: Path, name: str, seed: int, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (stem(name, seed) + ".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / (stem(name, seed) + ".json"))


#: settings recorded under their names before the recipes were renamed (files from 2026-11)
OLD_KEYS = {"aux": "class_weight", "mismatch": "matching_weight", "batch": "batch_size"}


def load(out: "str | Path") -> dict[str, list[dict]]:
    """The recorded results in ``out``: recipe name -> one result per seed (seed order), recipes in
    the order of :data:`RECIPES`. Only files this tool names are read; settings recorded under
    their old names (:data:`OLD_KEYS`) are read under today's, and a file without a seed is seed 0."""
    out = Path(out)
    found = {}
    for name in RECIPES:
        runs = []
        for path in sorted(out.glob(stem(name) + "*.json")):
            suffix = path.name[len(stem(name)):-len(".json")]
            if suffix == "" or re.fullmatch(r"\.seed-\d+", suffix):
                r = json.loads(path.read_text())
                r["recipe"] = {OLD_KEYS.get(k, k): v for k, v in r["recipe"].items() if k != "aux_g"}
                r.setdefault("seed", 0)
                runs.append(r)
        if runs:
            found[name] = sorted(runs, key=lambda r: r.get("seed", 0))
    return found


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", choices=list(RECIPES), help="recipes to run (default: all)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--fid-n", type=int, default=5_000)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--device", default=None)
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (tests)")
    p.add_argument("--seed", type=int, default=0, help="weights and batch order (seed 0 writes NAME.json, "
                   "seed N NAME.seed-N.json)")
    p.add_argument("--out", default="data/results/cgan_ablation")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else runtime.get_device()
    for name in args.only or list(RECIPES):
        run(name, RECIPES[name][1], args.epochs, args.per_class, args.fid_n, device, Path(args.out), args.limit,
            args.seed)


if __name__ == "__main__":
    main()
