"""What the course's ``gpu`` profile needs from one CUDA GPU: measured rates, predicted notebook
times, then notebook 03's DCGAN trained in the time that is left.

    python -m tools.gpu_check [--budget-s 660] [--device cuda] [--out DIR] [--steps 50] [--repeats 3] [--no-train]

For a borrowed GPU with a hard time limit: each phase checks the clock first, and what would not
fit is skipped and recorded as skipped. In order:

1. **Training steps.** images/s of each notebook's own step (``vae.vae_step``, ``vqvae.vqvae_step``,
   ``dcgan.dcgan_step``, ``recipes.build``) at its ``gpu``-profile widths and batch sizes, on random
   images in [0, 1] held on the device and cut by slicing (the data pipeline is not what is timed):
   warm-up steps, then the median of ``--repeats`` runs of ``--steps`` steps, synchronising the
   device only around each run. First the shapes the notebooks' default runs train (1x28x28
   Fashion-MNIST, notebook 01's 1x64x64 dSprites, notebook 02's latent VAE), then 3x64x64 colour
   (CelebA's size), which no default run trains. With CUDA, the peak memory of each step.
2. **Feature extractors.** images/s of notebook 05's domain classifier and Inception-v3, on batches
   of their own batch size.
3. **Predictions.** Each notebook's ``gpu``-profile run (:data:`GPU_PROFILE`, :func:`workload`:
   images per training run, images per FID) divided by those rates: training steps and feature
   extraction only (no test evaluations, sampling, figures, data loading or CPU-side fits).
4. **Training.** With the time left, less a margin for the FID and the save, notebook 03's DCGAN
   at ``gpu`` size (64 channels) on Fashion-MNIST, trained as ``tools/pretrain.py`` trains it,
   epoch by epoch; its domain FID (``tools/pretrain.py``'s N = 5,000 against the test set); saved
   by :func:`common.machinery.pretrained.save` (atomic, with a manifest entry) into ``--out``,
   never into ``data/pretrained/``.

Everything goes to ``<out>/gpu_check.json`` (rewritten after each phase, atomically) and a
printed table. Without CUDA it runs on the CPU (or ``--device``) and both say that these are not
GPU numbers.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from common import classifiers, dcgan, fid, layers, recipes, training, vae, vqvae
from common.machinery import data, features, pretrained, runtime, storage
from tools import pretrain

NOTEBOOKS = ("01_vae", "02_vq_vae", "03_dcgan", "04_conditional_gan", "05_fid")

# The gpu profile's values that the measured steps and the workload are built from, as the
# notebooks' config cells set them. tests/test_gpu_check.py runs those cells with DGM_PROFILE=gpu
# and compares, so this table cannot drift from the notebooks unnoticed.
GPU_PROFILE = {
    "01_vae": {"dataset": "fashion_mnist", "train_limit": None, "batch_size": 128, "lr": 1e-3,
               "latent_dim": 20, "hidden": 400, "conv_channels": 64, "epochs": 50, "side_epochs": 30,
               "betas": (0.25, 0.5, 1.0, 2.0), "classifier_epochs": 10, "pretrain_epochs": 5,
               "sprites_train": None, "sprites_epochs": 10, "sprites_betas": (1.0, 4.0),
               "sprites_latent": 10, "sprites_channels": 32},
    "02_vq_vae": {"dataset": "fashion_mnist", "train_limit": None, "batch_size": 128, "lr": 1e-3,
                  "codebook_sizes": (64, 128, 256), "code_dim": 16, "channels": 64, "beta": 0.25,
                  "epochs": 20, "vae_latent": 32, "vae_hidden": 256, "vae_sigma2": 10.0, "vae_epochs": 50},
    "03_dcgan": {"dataset": "fashion_mnist", "train_limit": None, "batch_size": 128, "lr": 2e-4,
                 "betas": (0.5, 0.999), "z_dim": 100, "g_channels": 64, "d_channels": 64, "epochs": 25,
                 "fid_n": 10_000, "failure_steps": 300, "collapse_steps": 200},
    "04_conditional_gan": {"dataset": "fashion_mnist", "train_limit": None, "z_dim": 100,
                           "g_channels": 64, "d_channels": 64, "cdcgan": recipes.CDCGAN(),
                           "wgan_gp": recipes.WGANGP(), "dcgan_epochs": 50, "wgan_epochs": 50,
                           "fid_n": 10_000, "per_class": 1_000},
    "05_fid": {"dataset": "fashion_mnist", "domain_n": 10_000, "inception_n": 10_000,
               "noise_levels": (0.0, 0.02, 0.05, 0.1, 0.2, 0.3), "blur_sigmas": (0.0, 0.5, 0.75, 1.0, 1.5, 2.0),
               "class_per": 500},
}
FASHION_TRAIN, FASHION_TEST, CLASSES = 60_000, 10_000, 10
DSPRITES_TRAIN = 663_552      # dSprites' train split: 90 % of its 737,280 images (common/machinery/dsprites.py)
LEADERBOARD = 14              # notebook 05's table: the 7 models of notebooks 01-04, yours and pretrained
CONDITIONAL = 4               # of which conditional (class accuracy): both conditional GANs, both sources
FEATURES = ("domain", "inception")

FASHION, DSPRITES, COLOUR = (1, 28, 28), (1, 64, 64), (3, 64, 64)
LATENT = (GPU_PROFILE["02_vq_vae"]["code_dim"] * (28 // 4) ** 2,)    # notebook 02's flattened z_e: 16 x 7 x 7
DEFAULT_STEPS = [("vae_mlp", FASHION), ("vae_conv", FASHION), ("mlp_classifier", FASHION),
                 ("vae_conv_dsprites", DSPRITES), ("vqvae", FASHION), ("latent_vae", LATENT),
                 ("dcgan", FASHION), ("cdcgan", FASHION), ("cwgan_gp", FASHION)]
COLOUR_STEPS = [(m, COLOUR) for m in ("vae_mlp", "vae_conv", "vqvae", "dcgan", "cdcgan", "cwgan_gp")]
MEASURE_SHARE = 0.5           # with training, the measurements may use at most half the budget
SAVE_S = 5.0                  # seconds kept for pretrained.save and the JSON after the FID


def key(model: str, shape: tuple) -> str:
    return f"{model}@{'x'.join(map(str, shape))}"


def workload(p: dict = GPU_PROFILE) -> dict[str, list[tuple[str, str, int]]]:
    """Per notebook, ``(what, measured rate, images)`` of a ``gpu``-profile run on its default
    dataset: images through a training step (epochs x training images, per run) or through a
    feature extractor (FIDs, class accuracy). Not counted: test-set evaluations after each epoch
    (forward passes), sampling, figures, notebook 04's 2 x 80 steps of D alone, CPU-side fits."""
    n1, n2, n3, n4, n5 = (p[nb] for nb in NOTEBOOKS)
    n, mlp, gan = FASHION_TRAIN, key("vae_mlp", FASHION), key("dcgan", FASHION)
    sprites = n1["sprites_train"] or DSPRITES_TRAIN
    reused = 1.0 in n1["betas"] and n1["side_epochs"] == n1["epochs"]   # then beta = 1 is the MLP VAE itself
    beta_runs = len(n1["betas"]) - reused
    vqvaes = len(n2["codebook_sizes"]) + 1                    # K = 64, 128, 256, then 256 with re-initialisation
    return {
        "01_vae": [
            ("MLP VAE", mlp, n1["epochs"] * n),
            ("conv VAE", key("vae_conv", FASHION), n1["epochs"] * n),
            ("2 MLP VAEs, Gaussian likelihood", mlp, 2 * n1["side_epochs"] * n),
            ("MLP VAE, latent size 2", mlp, n1["side_epochs"] * n),
            (f"{beta_runs} MLP VAEs of the beta sweep", mlp, beta_runs * n1["side_epochs"] * n),
            ("MLP classifier", key("mlp_classifier", FASHION), n1["classifier_epochs"] * n),
            ("2 MLP VAEs, scratch vs pretrained trunk", mlp, 2 * n1["pretrain_epochs"] * n),
            (f"{len(n1['sprites_betas'])} dSprites conv VAEs", key("vae_conv_dsprites", DSPRITES),
             len(n1["sprites_betas"]) * n1["sprites_epochs"] * sprites)],
        "02_vq_vae": [
            (f"{vqvaes} VQ-VAEs", key("vqvae", FASHION), vqvaes * n2["epochs"] * n),
            ("latent VAE prior", key("latent_vae", LATENT), n2["vae_epochs"] * n)],
        "03_dcgan": [
            ("DCGAN", gan, n3["epochs"] * n),
            ("minimax and non-saturating short runs", gan, 2 * n3["failure_steps"] * n3["batch_size"]),
            ("G-only steps (timed as whole steps)", gan, n3["collapse_steps"] * n3["batch_size"]),
            ("FID after each epoch and of the short runs, test statistics", "domain",
             (n3["epochs"] + 2) * n3["fid_n"] + FASHION_TEST)],
        "04_conditional_gan": [
            ("conditional DCGAN", key("cdcgan", FASHION), n4["dcgan_epochs"] * n),
            ("conditional WGAN-GP", key("cwgan_gp", FASHION), n4["wgan_epochs"] * n),
            ("FID and class accuracy after each epoch, test statistics", "domain",
             (n4["dcgan_epochs"] + n4["wgan_epochs"]) * (n4["fid_n"] + CLASSES * n4["per_class"]) + FASHION_TEST)],
        "05_fid": [
            ("training and test sets, noise and blur sweeps, torchmetrics check", "domain",
             n + FASHION_TEST + (1 + len(n5["noise_levels"]) + len(n5["blur_sigmas"]) + 4) * n5["domain_n"]),
            (f"leaderboard: {LEADERBOARD} models and the training images, class accuracy", "domain",
             (LEADERBOARD + 1) * n5["domain_n"] + CONDITIONAL * CLASSES * n5["class_per"]),
            (f"Inception: test and training images, {LEADERBOARD} models", "inception",
             (2 + LEADERBOARD) * n5["inception_n"])],
    }


def batch_size(model: str) -> int:
    """The batch size ``model``'s notebook trains it with in the ``gpu`` profile."""
    if model in ("cdcgan", "cwgan_gp"):
        return GPU_PROFILE["04_conditional_gan"]["cdcgan" if model == "cdcgan" else "wgan_gp"].batch_size
    notebook = {"dcgan": "03_dcgan", "vqvae": "02_vq_vae", "latent_vae": "02_vq_vae"}.get(model, "01_vae")
    return GPU_PROFILE[notebook]["batch_size"]


def build_step(model: str, shape: tuple, device) -> tuple:
    """``(step, width)``: ``model``'s training step for inputs of ``shape`` as its notebook builds
    it in the ``gpu`` profile (seed the global generator first), and the width it was built with."""
    n1, n2, n3, n4 = (GPU_PROFILE[nb] for nb in NOTEBOOKS[:4])
    adam = lambda m, lr, betas=(0.9, 0.999): torch.optim.Adam(m.parameters(), lr=lr, betas=betas)  # noqa: E731
    if model in ("vae_mlp", "vae_conv"):
        # notebook 01's likelihood "auto": Bernoulli for grey images; Gaussian for colour, with sigma^2 the
        # pixel variance (1/12 for uniform noise; the value does not change the cost)
        lik, sigma2 = ("gaussian", 1 / 12) if shape[0] == 3 else ("bernoulli", None)
        m = (vae.MLPVAE(shape, n1["latent_dim"], n1["hidden"], lik, sigma2) if model == "vae_mlp" else
             vae.ConvVAE(shape, n1["latent_dim"], n1["conv_channels"], likelihood=lik, sigma2=sigma2)).to(device)
        return vae.vae_step(m, adam(m, n1["lr"])), n1["hidden" if model == "vae_mlp" else "conv_channels"]
    if model == "vae_conv_dsprites":
        m = vae.ConvVAE(shape, n1["sprites_latent"], n1["sprites_channels"]).to(device)
        return vae.vae_step(m, adam(m, n1["lr"])), n1["sprites_channels"]
    if model == "mlp_classifier":
        m = classifiers.MLPClassifier(shape, CLASSES, n1["hidden"]).to(device)
        return training.minimize(m.loss, adam(m, n1["lr"])), n1["hidden"]
    if model == "vqvae":
        m = vqvae.VQVAE(shape, max(n2["codebook_sizes"]), n2["code_dim"], n2["channels"], n2["beta"]).to(device)
        return vqvae.vqvae_step(m, adam(m, n2["lr"])), n2["channels"]
    if model == "latent_vae":              # notebook 02's prior: a VAE on the standardised VQ-VAE latents
        m = vae.MLPVAE(shape, n2["vae_latent"], n2["vae_hidden"], likelihood="gaussian",
                       sigma2=n2["vae_sigma2"], bounded=False).to(device)
        return vae.vae_step(m, adam(m, n2["lr"])), n2["vae_hidden"]
    if model == "dcgan":
        G = dcgan.DCGANGenerator(shape, n3["z_dim"], n3["g_channels"]).to(device)
        D = dcgan.DCGANDiscriminator(shape, n3["d_channels"]).to(device)
        step = dcgan.dcgan_step(G, D, adam(G, n3["lr"], n3["betas"]), adam(D, n3["lr"], n3["betas"]))
        return step, n3["g_channels"]
    recipe = n4["cdcgan" if model == "cdcgan" else "wgan_gp"]
    parts = recipes.build(recipe, shape, CLASSES, n4["z_dim"], n4["g_channels"], n4["d_channels"], device)
    return parts.step, n4["g_channels"]


# ---- measuring

class Clock:
    """Seconds used since the start, and left before a deadline (default: the whole budget)."""

    def __init__(self, budget_s: float):
        self.start, self.budget = time.monotonic(), budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self, deadline: float | None = None) -> float:
        return (self.budget if deadline is None else deadline) - self.elapsed()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: GPU calls return before the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(call, images_per_call: int, device, args, time_left) -> dict:
    """``args.warmup`` calls, one more timed alone (do the runs fit in ``time_left()``?), then the
    median images/s of ``args.repeats`` runs of ``args.steps`` calls, synchronised around each run."""
    for _ in range(args.warmup):
        if time_left() <= 0:       # a slow device can spend the budget in warm-up alone
            return {"skipped": f"the time ran out during the {args.warmup} warm-up steps"}
        call()
        sync(device)
    start = time.perf_counter()
    call()
    sync(device)
    need = (time.perf_counter() - start) * args.steps * args.repeats
    if need > time_left():
        return {"skipped": f"{args.repeats} x {args.steps} steps need about {need:.1f} s; "
                           f"{max(time_left(), 0):.1f} s were left"}
    rates = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            call()
        sync(device)
        rates.append(args.steps * images_per_call / (time.perf_counter() - start))
    rate = statistics.median(rates)
    return {"images_per_s": rate, "runs_images_per_s": rates, "ms_per_batch": 1000 * images_per_call / rate}


def with_memory(device, measure) -> dict:
    """``measure()``'s result plus, on CUDA, the peak memory it allocated above what was
    allocated before it (the data pool), in MiB; None elsewhere."""
    if device.type != "cuda":
        return {**measure(), "peak_mib": None}
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = measure()
    return {**result, "peak_mib": (torch.cuda.max_memory_allocated(device) - base) / 2**20}


def batches_of(fn, x: torch.Tensor, y: torch.Tensor, batch: int):
    """A call that runs ``fn`` on the next batch sliced from the device tensors (no copies)."""
    count, per_pool = itertools.count(), len(x) // batch

    def call():
        j = next(count) % per_pool * batch
        fn(x[j:j + batch], y[j:j + batch])
    return call


def pool(shape: tuple, batch: int, device, standardised: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """8 batches of random data on the device: images in [0, 1], or N(0, 1) for the latent VAE."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8 * batch, *shape, generator=g) if standardised else torch.rand(8 * batch, *shape, generator=g)
    return x.to(device), torch.randint(0, CLASSES, (8 * batch,), generator=g).to(device)


def measure_step(model: str, shape: tuple, device, args, time_left) -> dict:
    """One training step's images/s and peak memory (model, optimiser, activations; not the data
    pool, allocated first) on random data held on the device."""
    batch = batch_size(model)
    x, y = pool(shape, batch, device, standardised=model == "latent_vae")
    info = {"model": model, "image_shape": list(shape), "batch_size": batch}

    def measure():
        torch.manual_seed(0)
        step, info["width"] = build_step(model, shape, device)
        return timed(batches_of(step, x, y, batch), batch, device, args, time_left)

    result = with_memory(device, measure)   # fills in info as it builds
    return {**info, **result}


def measure_extractor(kind: str, device, args, time_left) -> dict:
    """A feature extractor's images/s (and peak memory, its weights and input pool included) on
    batches of its own batch size of random 1x28x28 images, the shape every notebook's FID sees."""
    info = {"model": kind, "image_shape": list(FASHION)}

    def measure():
        try:
            ext = (features.DomainExtractor(device) if kind == "domain" else
                   features.InceptionExtractor(device, batch_size=args.inception_batch))
        except (FileNotFoundError, ValueError) as err:        # weights missing or not the recorded ones
            return {"skipped": f"could not be loaded: {err}"}
        info.update(name=ext.name, batch_size=ext.batch_size)
        x, y = pool(FASHION, ext.batch_size, device)
        call = batches_of(lambda xb, yb: ext(xb), x, y, ext.batch_size)
        return timed(call, ext.batch_size, device, args, time_left)

    result = with_memory(device, measure)   # fills in info as it builds
    return {**info, **result}


def predict(rates: dict[str, float]) -> dict:
    """Each notebook's predicted ``gpu``-profile time: :func:`workload`'s images over the measured
    rates. A part whose rate was not measured is listed under ``missing`` and not counted."""
    out = {}
    for notebook, parts in workload().items():
        rows = [{"what": what, "measured": k, "images": images,
                 "seconds": images / rates[k] if rates.get(k) else None} for what, k, images in parts]
        add = lambda pick: sum(r["seconds"] or 0 for r in rows if pick(r["measured"]))  # noqa: E731
        train_s, features_s = add(lambda k: k not in FEATURES), add(lambda k: k in FEATURES)
        missing = sorted({r["measured"] for r in rows if r["seconds"] is None})
        out[notebook] = {"seconds": train_s + features_s, "training_s": train_s, "features_s": features_s,
                         "complete": not missing, "missing": missing, "parts": rows}
    return out


# ---- training with the time that is left

def train_dcgan(device, clock: Clock, out: Path, args, rates: dict) -> dict:
    """Notebook 03's DCGAN at ``gpu`` size on Fashion-MNIST, as ``tools/pretrain.py`` trains it,
    one epoch at a time while the next (timed as the last one) and the FID and save still fit."""
    p = GPU_PROFILE["03_dcgan"]
    try:
        train = data.load_dataset("fashion_mnist", "train", device=device, limit=args.train_limit)
        test = data.load_dataset("fashion_mnist", "test", device=device)
    except (FileNotFoundError, ValueError) as err:             # DatasetNotFoundError, CorruptDatasetError
        return {"skipped": f"Fashion-MNIST could not be loaded, so nothing was trained: {err}"}
    step_rate = rates.get(key("dcgan", train.image_shape))
    if not step_rate:
        return {"skipped": "the DCGAN step was not measured, so an epoch's time could not be planned"}
    extractor = features.extractor_for(test, "auto", device)
    fid_n = min(args.fid_n, len(test))
    start = time.perf_counter()
    reference = fid.reference_stats(test, fid_n, extractor, progress=False)   # cached on disk after the first run
    feature_rate = rates.get("domain" if isinstance(extractor, features.DomainExtractor) else "inception")
    features_s = fid_n / feature_rate if feature_rate else time.perf_counter() - start
    finish_s = fid_n / step_rate + features_s + SAVE_S          # sampling (cheaper than a step), features, save
    torch.manual_seed(pretrain.SEED)
    G = dcgan.DCGANGenerator(train.image_shape, p["z_dim"], p["g_channels"]).to(device)
    D = dcgan.DCGANDiscriminator(train.image_shape, p["d_channels"]).to(device)
    layers.channels_last_on_cpu(G, D)
    opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=p["lr"], betas=p["betas"]) for m in (G, D))
    step, batches = dcgan.dcgan_step(G, D, opt_G, opt_D), train.batches(p["batch_size"], seed=pretrain.SEED)
    epoch_s, history = 1.25 * len(train) / step_rate, None     # the first epoch: the measured step plus the loop's
    while args.max_epochs is None or (history.n_epochs if history else 0) < args.max_epochs:
        if epoch_s + finish_s + margin(args) > clock.left():
            break
        t = time.perf_counter()
        history = training.train(step, batches, 1, check=G, history=history, desc="DCGAN")
        epoch_s = time.perf_counter() - t
    if history is None:
        return {"skipped": f"no time for one epoch: it needs about {epoch_s:.0f} s and the FID and save "
                           f"{finish_s:.0f} s, with {max(clock.left(), 0):.0f} s left"}
    metrics = pretrain.measure(G, extractor, reference, fid_n)
    config = dict(G.hparams, d=D.hparams, epochs=history.n_epochs, lr=p["lr"], betas=p["betas"],
                  batch_size=p["batch_size"], notebook="03_dcgan")
    record = dict(model="dcgan_generator", budget=f"gpu_check, {args.budget_s:.0f} s", dataset=test.tag,
                  epochs=history.n_epochs, n_train=len(train), device=str(device), device_name=device_name(device),
                  threads=torch.get_num_threads(), train_seconds=round(history.seconds, 1),
                  images_per_s=round(history.images_seen / history.seconds), torch=torch.__version__,
                  date=time.strftime("%Y-%m-%d"), command="python -m tools.gpu_check", recipe=config,
                  metrics=metrics)
    saved = pretrained.save(G, f"dcgan_generator-{test.tag}", record, directory=out, config=config)
    return {**record, "file": str(out / saved["file"]), "storage": saved["storage"], "bytes": saved["bytes"]}


def margin(args) -> float:
    """Seconds kept unused at the end: 3 % of the budget, at least 2 s."""
    return max(2.0, 0.03 * args.budget_s)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} {device.type.upper()}, {os.cpu_count()} cores"


# ---- report

def render(report: dict) -> str:
    """The JSON's numbers as a table for people."""
    lines = [f"tools.gpu_check on {report['device_name']} ({report['device']}), torch {report['torch']}, "
             f"{report['settings']['steps']} steps x {report['settings']['repeats']} repeats (median) after "
             f"{report['settings']['warmup']} warm-up steps"]
    if not report["gpu"]:
        lines.append(f"*** {report['note']} ***")
    header = f"{'batch':>6}{'width':>7}{'images/s':>12}{'ms/batch':>10}{'peak MiB':>10}"
    for title, rows in [("training steps", report["steps"]), ("feature extractors", report["features"])]:
        lines += ["", f"{title:<28}{header}"]
        for k, r in rows.items():
            if "skipped" in r:
                lines.append(f"  {k:<26}skipped: {r['skipped']}")
                continue
            peak = "-" if r.get("peak_mib") is None else f"{r['peak_mib']:,.0f}"
            lines.append(f"  {r.get('name', k):<26}{r['batch_size']:>6}{r.get('width', '-'):>7}"
                         f"{r['images_per_s']:>12,.0f}{r['ms_per_batch']:>10.2f}{peak:>10}")
    lines += ["", f"predicted time of each notebook's gpu profile on this device ({report['prediction_note']}):"]
    for notebook, p in report["predictions"].items():
        lines.append(f"  {notebook:<20}{'' if p['complete'] else 'over '}{p['seconds'] / 60:.1f} min (training "
                     f"{p['training_s'] / 60:.1f}, features {p['features_s'] / 60:.1f})"
                     + ("" if p["complete"] else f"; not measured: {', '.join(p['missing'])}"))
    t = report.get("training")
    if t is not None:
        lines.append("")
        lines.append(f"training: skipped: {t['skipped']}" if "skipped" in t else
                     f"training: DCGAN ({t['recipe']['channels']} channels) on {t['dataset']}, "
                     f"{t['epochs']} epochs "
                     f"of {t['n_train']:,} images in {t['train_seconds']:.0f} s ({t['images_per_s']:,} images/s); "
                     f"{t['metrics']['fid_extractor']} FID {t['metrics']['fid_domain']:.2f} "
                     f"(N = {t['metrics']['fid_n']:,}); saved {t['file']} ({t['storage']})")
    lines.append(f"\n{report['elapsed_s']:.0f} s of the {report['budget_s']:.0f} s budget; wrote {report['json']}")
    return "\n".join(lines)


def write(report: dict, path: Path) -> None:
    with storage.atomic_write(path) as f:
        f.write((json.dumps(report, indent=1) + "\n").encode())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=660, help="seconds for everything (default 660)")
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then the CPU")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out",
                        help="folder for gpu_check.json and the trained DCGAN (default $OUT, else gpu_check_out)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps (or extractor batches) per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--no-train", action="store_true", help="measure and predict only")
    parser.add_argument("--no-colour", action="store_true", help="skip the 3x64x64 steps (no default run has them)")
    parser.add_argument("--no-inception", action="store_true", help="skip Inception-v3 (slow on a CPU)")
    parser.add_argument("--inception-batch", type=int, default=None, help="default: the extractor's (200 on CUDA)")
    parser.add_argument("--fid-n", type=int, default=pretrain.FID_N, help="samples for the trained DCGAN's FID")
    parser.add_argument("--max-epochs", type=int, default=pretrain.BUDGETS["gpu"]["dcgan"],
                        help="stop training after this many epochs (default: the gpu budget of tools.pretrain, 25)")
    parser.add_argument("--train-limit", type=int, default=None, help="training images (tests; default all)")
    args = parser.parse_args(argv)
    clock = Clock(args.budget_s)
    device = runtime.get_device(args.device)
    out = Path(args.out)
    gpu = device.type == "cuda"
    report = {
        "tool": "tools.gpu_check", "argv": list(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": str(device), "device_name": device_name(device),
        "gpu": gpu, "note": "CUDA GPU numbers" if gpu else (
            f"NOT GPU NUMBERS: measured on {device.type} ({device_name(device)}), not a CUDA GPU; "
            "the predictions are for this device"),
        "torch": torch.__version__, "torch_built_for_cuda": torch.version.cuda, "threads": torch.get_num_threads(),
        "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if gpu else None,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "budget_s": args.budget_s,
        "settings": {"steps": args.steps, "repeats": args.repeats, "warmup": args.warmup},
        "steps": {}, "features": {}, "json": str(out / "gpu_check.json"),
        "prediction_note": "training steps and feature extraction only, from the rates above",
    }
    measure_end = args.budget_s * (1.0 if args.no_train else MEASURE_SHARE) - margin(args)
    time_left = lambda: clock.left(measure_end)  # noqa: E731
    plan = ([("steps", key(m, s), lambda m=m, s=s: measure_step(m, s, device, args, time_left), None)
             for m, s in DEFAULT_STEPS]
            + [("features", kind, lambda kind=kind: measure_extractor(kind, device, args, time_left),
                "--no-inception" if kind == "inception" and args.no_inception else None) for kind in FEATURES]
            + [("steps", key(m, s), lambda m=m, s=s: measure_step(m, s, device, args, time_left),
                "--no-colour" if args.no_colour else None) for m, s in COLOUR_STEPS])
    for section, name, measure, unwanted in plan:   # cheapest and most needed first: what is cut is the end
        if unwanted or time_left() <= 0:
            report[section][name] = {"skipped": unwanted or "no time left for measurements"}
            continue
        print(f"{clock.elapsed():5.0f} s: measuring {name}", file=sys.stderr, flush=True)
        report[section][name] = measure()
    measured = {**report["steps"], **report["features"]}
    rates = {k: r["images_per_s"] for k, r in measured.items() if "images_per_s" in r}
    report["workload"] = {nb: [dict(zip(("what", "measured", "images"), part)) for part in parts]
                          for nb, parts in workload().items()}
    report["predictions"] = predict(rates)
    report["elapsed_s"] = clock.elapsed()
    write(report, out / "gpu_check.json")   # what was measured survives a failure in training
    if not args.no_train:
        report["training"] = train_dcgan(device, clock, out, args, rates)
    report["elapsed_s"] = clock.elapsed()
    report["budget_respected"] = report["elapsed_s"] <= args.budget_s
    write(report, out / "gpu_check.json")
    print(render(report), flush=True)
    return report


if __name__ == "__main__":
    main()
