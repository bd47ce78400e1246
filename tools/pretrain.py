"""Train the course's generative models for ``data/pretrained/`` (see ``common/pretrained.py``).

    .venv/bin/python -m tools.pretrain [--budget long-cpu|gpu] [--only NAME ...] [--epochs-of KEY=N ...]

Every model of notebook 05's leaderboard, trained on Fashion-MNIST with the repository's own code
and its notebook's recipe (the same classes, losses, optimiser settings and seed as the
notebook's config), only longer:

- ``--budget gpu``: the notebooks' ``gpu`` profile (its epochs and widths), for one GPU.
- ``--budget long-cpu``: the ``cpu`` profile's widths (the very architecture a learner trains in
  the notebook, so notebooks can show "your model" beside "the same model, trained longer") and
  more epochs (about 4 hours on a 2-core CPU, resumable: run the command again after a stop).

**Resumable.** Every ``--save-every`` steps and at each epoch's end, each run saves its models,
optimisers, EMA, position in the data and random state to ``<runs>/<budget>/<model>.pt``
(:mod:`common.machinery.resume`, written atomically). Run the same command again after a kill and
it goes on from the last save: at most ``--save-every`` steps are lost, and on the CPU the weights
end bitwise those of a run never stopped. Asking for more epochs (``--epochs-of dcgan=60``)
continues a finished run. ``--fresh`` starts over.

Each epoch the domain FID of 2,000 samples is recorded (``fid``), so the manifest holds each
model's FID-over-training curve. After training, each model is measured (domain FID of 5,000
samples against the test set; for conditional models the per-class accuracy of the course's
classifier and of the independent one), stored in half precision where that changes no pixel of
its samples by more than 1/255, and written with its manifest entry (file hash, budget, epochs,
steps, device, training time, metrics, curve, the command that reproduces it). Each model is
written as soon as it is trained, atomically.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from common import classifiers, dcgan, fid, layers, priors, recipes, training, vae, vqvae
from common.ema import recalibrate_batch_norm
from common.machinery import data, distributed, features, pretrained, resume, runtime

# Epochs per model and budget; widths: the cpu profile's (None) or the gpu profile's.
BUDGETS = {
    "long-cpu": dict(vae_mlp=150, vae_conv=60, vqvae=40, latent_vae=200, dcgan=100, cdcgan=60, cwgan=60,
                     dsprites=80, wide=False),
    "gpu": dict(vae_mlp=50, vae_conv=50, vqvae=20, latent_vae=50, dcgan=25, cdcgan=50, cwgan=50, dsprites=80,
                wide=True),
}
MODELS = ("vae_mlp", "vae_conv", "vqvae_priors", "dcgan_generator", "cdcgan_generator", "cwgan_gp_generator",
          "vae_dsprites")
# dSprites: Burgess et al. (2018)'s capacity-annealed beta-VAE, recon + gamma * |KL - C|, C from 0 to
# 25 nats over 100,000 steps of 64 images (their schedule), on notebook 01's 98,304 training images
SPRITES = dict(train=98_304, latent=10, gamma=1000.0, capacity=25.0, anneal_steps=100_000, lr=5e-4, batch_size=64)
FID_N = 5_000
CURVE_N = 2_000
PER_CLASS = 500
RECOGNISABLE_N = 2_000
SEED = 0


class Run:
    """What every model's training shares: data, device, budget, the FID extractor and where the
    resume files go."""

    def __init__(self, args, train, test, extractor, ctx):
        self.args, self.train, self.test, self.extractor, self.ctx = args, train, test, extractor, ctx
        self.device = ctx.device
        self.budget = dict(BUDGETS[args.budget])
        if args.epochs:
            self.budget.update({k: args.epochs for k in self.budget if k != "wide"})
        self.budget.update(args.epochs_of)
        self.folder = Path(args.runs) / args.budget
        self.paths = []                 # the resume files of the model being trained
        self.curve_ref = fid.reference_stats(test, min(CURVE_N, len(test)), extractor) if args.curve else None

    def fit(self, key, step, batches, epochs, models, optimizers, emas=(), *, config, callbacks=(), sampler=None,
            check=None, desc=""):
        """Train ``epochs`` epochs in all with a resume file ``<key>.pt`` (matching ``config`` less its
        epochs, so more epochs continue it); the FID curve of ``sampler()``.
        Under torchrun: the same initial weights everywhere, each process its share of each batch
        and its own noise, gradients averaged, weights re-shared after each epoch, process 0 writes."""
        ctx = self.ctx
        state = resume.Resume(self.folder / f"{key}.pt", dict(resume.without_epochs(config), limit=self.args.limit,
                                                              seed=SEED), models,
                              dict(optimizers), dict(emas), every=self.args.save_every, write=ctx.main)
        self.paths.append(state.path)
        if self.args.fresh and state.path.exists() and ctx.main:
            state.path.unlink()
        distributed.broadcast_weights(ctx, *models.values())
        distributed.average_gradients(ctx, *dict(optimizers).values())
        callbacks = list(callbacks)
        if ctx.parallel:
            callbacks.append(lambda epoch, history: distributed.broadcast_weights(ctx, *models.values()))
            step = _own_noise(step, ctx)
        if sampler is not None and self.curve_ref is not None and ctx.main:
            n = min(CURVE_N, len(self.test))
            callbacks.append(lambda epoch, history: {"fid": fid.fid(sampler(), self.curve_ref, n, self.extractor,
                                                                   seed=SEED, progress=False).value})
        return resume.train(step, distributed.shard(batches, ctx), epochs, state, check=check, callbacks=callbacks,
                            desc=desc or key)


def _own_noise(step, ctx):
    """``step``, with this process's own random stream from its first call on (after a resume
    file, which holds process 0's random state, is loaded)."""
    started = [False]

    def wrapped(x, y):
        if not started[0]:
            distributed.noise_seed(ctx, int(torch.randint(0, 2**31, ())))
            started[0] = True
        return step(x, y)

    return wrapped


def _vae(name, run):
    """Notebook 01: the PyTorch example's MLP VAE, or the conv VAE (Bernoulli likelihood)."""
    train, test, budget = run.train, run.test, run.budget
    shape, epochs = train.image_shape, budget[name]
    torch.manual_seed(SEED)
    model = (vae.MLPVAE(shape, 20, 400, "bernoulli", None) if name == "vae_mlp" else
             vae.ConvVAE(shape, 20, 64 if budget["wide"] else 32, likelihood="bernoulli", sigma2=None)).to(run.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    test_loss = lambda epoch, history: {"test_loss": training.evaluate(
        lambda x, y: model.loss(x), test.batches(1000, shuffle=False), model)["loss"]}
    config = dict(model.hparams, epochs=epochs, lr=1e-3, batch_size=128, notebook="01_vae")
    history = run.fit(name, vae.vae_step(model, opt), train.batches(128, seed=SEED), epochs, {"model": model},
                      {"opt": opt}, config=config, callbacks=[test_loss], sampler=lambda: model,
                      check=model)
    return {name: (model, config)}, history, {"test_nll_bound": history.epochs[-1]["test_loss"]}


def _vqvae_priors(run):
    """Notebook 02: VQ-VAE with K = 256 and dead-code re-initialisation, then its two priors."""
    train, test, budget, device = run.train, run.test, run.budget, run.device
    epochs = budget["vqvae"]
    torch.manual_seed(SEED)
    model = vqvae.VQVAE(train.image_shape, 256, 16, 64 if budget["wide"] else 32, 0.25).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe, _ = train[:5_000]
    recon = lambda: training.evaluate(lambda x, y: {"mse": F.mse_loss(model(x)[0], x)},
                                      test.batches(1000, shuffle=False), model)["mse"]
    vq = dict(model.hparams, epochs=epochs, reinit=True, lr=1e-3, batch_size=128, notebook="02_vq_vae")
    history = run.fit("vqvae", training.minimize(lambda x, y: model.loss(x), opt), train.batches(128, seed=SEED), epochs,
                      {"model": model}, {"opt": opt}, config=vq, check=model,
                      callbacks=[vqvae.dead_code_callback(model, probe, True, last_epoch=epochs),
                                 lambda epoch, history: {"test_recon_mse": recon()}])
    model.eval()
    with torch.no_grad():
        z = torch.cat([model.encode(x).flatten(1) for x, _ in train.batches(1000, shuffle=False)])
    points = 20_000 if budget["wide"] else 5_000
    gmm = priors.GMMPriorSampler.fit(model, z[:points], 32, 16, seed=SEED)
    mean, std = z.mean(0), z.std(0) + 1e-5
    latents = data.TensorData((z - mean) / std, train.labels)
    torch.manual_seed(SEED)
    # sigma2 = 10 (notebook 02 since issue 28): measured on the shipped VQ-VAE, 50 epochs, the share of samples the
    # independent classifier recognises went 25.9 % -> 46.3 % (domain FID at N = 2,000: 13.41 -> 13.03)
    latent_vae = vae.MLPVAE((z.shape[1],), 32, 256, likelihood="gaussian", sigma2=10.0, bounded=False).to(device)
    opt = torch.optim.Adam(latent_vae.parameters(), lr=1e-3)
    sampler = lambda: priors.VAEPriorSampler.from_parts(model, latent_vae, mean, std)
    latent_config = dict(latent_vae.hparams, epochs=budget["latent_vae"])
    # the latents depend on the VQ-VAE's epochs: another VQ-VAE is another resume file
    latent_history = run.fit(f"vqvae_vae_prior-after-vq{epochs}", vae.vae_step(latent_vae, opt),
                             latents.batches(128, seed=SEED), budget["latent_vae"], {"model": latent_vae}, {"opt": opt},
                             config=dict(latent_config, vqvae=vq), sampler=sampler, check=latent_vae,
                             desc="latent VAE")
    history.seconds += latent_history.seconds
    models = {"vqvae_gmm_prior": (gmm, dict(vqvae=vq, n_pca=32, n_components=16, points=points)),
              "vqvae_vae_prior": (sampler(), dict(vqvae=vq, latent_vae=latent_config))}
    curves = {"vqvae_gmm_prior": history, "vqvae_vae_prior": latent_history}
    return models, history, {"vqvae_test_recon_mse": recon()}, curves


def _dcgan(run):
    """Notebook 03: the DCGAN paper's recipe at 28 x 28."""
    train, budget = run.train, run.budget
    epochs, width = budget["dcgan"], 64 if budget["wide"] else 32
    torch.manual_seed(SEED)
    G = dcgan.DCGANGenerator(train.image_shape, 100, width).to(run.device)
    D = dcgan.DCGANDiscriminator(train.image_shape, width).to(run.device)
    layers.channels_last_on_cpu(G, D)
    opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (G, D))
    config = dict(G.hparams, d=D.hparams, epochs=epochs, lr=2e-4, betas=(0.5, 0.999), batch_size=128, notebook="03_dcgan")
    history = run.fit("dcgan_generator", dcgan.dcgan_step(G, D, opt_G, opt_D), train.batches(128, seed=SEED), epochs,
                      {"G": G, "D": D}, {"G": opt_G, "D": opt_D}, config=config, sampler=lambda: G,
                      check=G, desc="DCGAN")
    return {"dcgan_generator": (G, config)}, history, {}


def _conditional(name, run):
    """Notebook 04's conditional DCGAN or WGAN-GP (its recipe, :mod:`common.recipes`), sampled from
    the EMA of G's weights (batch norm recalibrated)."""
    train, budget = run.train, run.budget
    wgan, width = name == "cwgan_gp_generator", 64 if budget["wide"] else 32
    epochs = budget["cwgan" if wgan else "cdcgan"]
    recipe = replace(recipes.WGANGP() if wgan else recipes.CDCGAN(), ema=True)
    torch.manual_seed(SEED)
    G, D, opt_G, opt_D, step, ema = recipes.build(recipe, train.image_shape, len(train.classes), 100, width, width,
                                                  run.device)
    config = dict(G.hparams, d=D.hparams, gan=type(recipe).__name__, **asdict(recipe), epochs=epochs,
                  ema_decay=ema.decay, notebook="04_conditional_gan")
    history = run.fit(name, step, train.batches(recipe.batch_size, seed=SEED), epochs, {"G": G, "D": D},
                      {"G": opt_G, "D": opt_D}, {"G": ema}, config=config,
                      sampler=lambda: recalibrate_batch_norm(ema.model), check=G)
    return {name: (recalibrate_batch_norm(ema.model), config)}, history, {}


def capacity_step(model, optimizer, gamma: float, capacity: float, anneal_steps: int):
    """One update on recon + gamma * |KL - C|, C = capacity * min(1, t / anneal_steps) nats: the KL
    is held near a budget that grows, so the latent dimensions open one at a time, the factor that
    explains most pixels first (Burgess et al., 2018). ``t`` is the optimizer's own step count,
    so a resumed run goes on with the same C."""
    first = next(iter(model.parameters()))

    def step(x, y):
        state = optimizer.state.get(first, {})
        t = float(state["step"]) if "step" in state else 0.0
        c = capacity * min(1.0, t / anneal_steps)
        losses = model.loss(x)
        loss = losses["recon"] + gamma * (losses["kl"] - c).abs()
        training.update(optimizer, loss)
        return {**losses, "loss": loss, "C": torch.tensor(c, device=x.device)}

    return step


def factor_scores(model, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Notebook 01's KL per dimension and eta^2 (:func:`common.vae.factor_scores`), a collapsed
    dimension's eta^2 read as 0, and the model left in training mode."""
    kl, eta2 = vae.factor_scores(model, dataset)
    model.train()
    return kl, torch.nan_to_num(eta2, nan=0.0)


def factors_found(kl, eta2, names) -> dict:
    """For each factor, the active dimension (KL > 0.1 nat) that explains it best and its eta^2."""
    active = [i for i in range(len(kl)) if kl[i] > 0.1]
    found = {}
    for j, name in enumerate(names):
        best = max(active, key=lambda i: eta2[i, j].item(), default=None)
        found[name] = {"dim": best, "eta2": round(eta2[best, j].item(), 4) if best is not None else 0.0}
    return found


def _dsprites(run):
    """Notebook 01's dSprites conv VAE (its cpu width at 64 x 64), as a capacity-annealed beta-VAE."""
    budget, device, epochs = run.budget, run.device, run.budget["dsprites"]
    train = data.load_dataset("dsprites", "train", device=device, limit=run.args.limit or SPRITES["train"])
    test = data.load_dataset("dsprites", "test", device=device, limit=10_000 if run.args.limit is None else 1_000)
    torch.manual_seed(SEED)
    model = vae.ConvVAE(train.image_shape, SPRITES["latent"], 32 if budget["wide"] else 8).to(device)
    layers.channels_last_on_cpu(model)
    opt = torch.optim.Adam(model.parameters(), lr=SPRITES["lr"])
    step = capacity_step(model, opt, SPRITES["gamma"], SPRITES["capacity"], SPRITES["anneal_steps"])
    names = test.attribute_names

    def measure_factors(epoch, history):
        kl, eta2 = factor_scores(model, test)
        return {f"eta2_{k}": v["eta2"] for k, v in factors_found(kl, eta2, names).items()} | {"kl_total": kl.sum()}

    config = dict(model.hparams, **SPRITES, epochs=epochs, dataset=train.tag, notebook="01_vae")
    history = run.fit("vae_dsprites", step, train.batches(SPRITES["batch_size"], seed=SEED), epochs, {"model": model},
                      {"opt": opt}, config=config, callbacks=[measure_factors], check=model)
    model.eval()
    kl, eta2 = factor_scores(model, test)
    extra = {"kl_per_dim": [round(v, 4) for v in kl.tolist()], "eta2": [[round(v, 4) for v in row] for row in eta2.tolist()],
             "factors": list(names), "factors_found": factors_found(kl, eta2, names), "factor_n": len(test)}
    return {"vae_dsprites": (model, config)}, history, extra


def train_model(name: str, run: Run):
    """``({model name: (model, config)}, history, extra metrics, {model name: history of its curve})``."""
    if name in ("vae_mlp", "vae_conv"):
        out = _vae(name, run)
    elif name == "vqvae_priors":
        return _vqvae_priors(run)
    elif name == "dcgan_generator":
        out = _dcgan(run)
    elif name == "vae_dsprites":
        out = _dsprites(run)
    else:
        out = _conditional(name, run)
    return (*out, {k: out[1] for k in out[0]})


def measure(model, extractor, reference, fid_n: int = FID_N, per_class: int = PER_CLASS, judges=None) -> dict:
    """Domain FID (``fid_n`` samples vs the test set) and, for conditional models, the share of
    ``per_class`` samples per class that each classifier of ``judges`` ({name: classifier}; the
    domain classifier by default) assigns to the class asked for; for the others, the share of
    samples the independent classifier gives one class a probability of 0.9 or more, and the
    share in each class (:func:`common.classifiers.recognisable`)."""
    metrics = {"fid_domain": fid.fid(model, reference, fid_n, extractor, seed=SEED, progress=False).value,
               "fid_n": fid_n, "fid_extractor": extractor.name}
    if getattr(model, "conditional", False):
        judges = judges or {"domain": extractor.model}
        for i, (judge, classifier) in enumerate(judges.items()):
            acc = classifiers.class_accuracy(model, classifier, per_class)
            suffix = "" if i == 0 else f"_{judge}"
            metrics.update({f"class_accuracy{suffix}": sum(acc) / len(acc), f"worst_class_accuracy{suffix}": min(acc),
                            f"class_accuracy_per_class{suffix}": acc})
        metrics["class_accuracy_n"] = per_class
    elif judges and "independent" in judges:     # unconditional: how many samples a judge recognises
        share, classes = classifiers.recognisable(model, judges["independent"], RECOGNISABLE_N)
        metrics.update(recognisable_independent=share, class_shares_independent=classes,
                       recognisable_n=RECOGNISABLE_N, recognisable_threshold=0.9)
    return metrics


def _epochs_of(text: str) -> tuple[str, int]:
    key, _, value = text.partition("=")
    if key not in BUDGETS["long-cpu"] or key == "wide" or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--epochs-of takes KEY=N with KEY one of "
                                         f"{', '.join(k for k in BUDGETS['long-cpu'] if k != 'wide')}, got {text!r}")
    return key, int(value)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="gpu" if torch.cuda.is_available() else "long-cpu")
    parser.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs-of", nargs="+", type=_epochs_of, default=[], metavar="KEY=N",
                        help="epochs of one training (e.g. dcgan=60 latent_vae=150), over the budget's")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--out", default=str(pretrained.DIR))
    parser.add_argument("--runs", default=str(runtime.data_dir() / "pretrain_runs"), help="folder of resume files")
    parser.add_argument("--save-every", type=int, default=500, help="steps between resume saves")
    parser.add_argument("--fresh", action="store_true", help="delete the resume files of these models first")
    parser.add_argument("--no-curve", dest="curve", action="store_false", help="skip the per-epoch FID")
    parser.add_argument("--epochs", type=int, default=None, help="every model this many epochs (tests)")
    parser.add_argument("--limit", type=int, default=None, help="training images (tests; default all)")
    parser.add_argument("--fid-n", type=int, default=FID_N, help="samples for the domain FID")
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="samples per class for class accuracy")
    args = parser.parse_args(argv)
    args.epochs_of = dict(args.epochs_of)
    return args


def write(run, name, model_name, model, config, history, extra, curve_history, start) -> None:
    """Measure one trained model (FID and class accuracy; for dSprites its factors only) and write
    it, with its manifest entry, to ``--out``."""
    args, ctx, device = run.args, run.ctx, run.device
    sprites = model_name == "vae_dsprites"
    metrics = dict(extra) if sprites else {**measure(model, run.extractor, run.reference, args.fid_n, args.per_class,
                                                     run.judges), **extra}
    keys = [k for k in ("fid", *(f"eta2_{f}" for f in extra.get("factors", ()))) if args.curve]
    curve = {k: curve_history.series(k) for k in keys if curve_history.series(k)[0]}
    labels = torch.arange(len(run.test.classes)).repeat(10) if getattr(model, "conditional", False) else None
    epochs = config.get("epochs", config.get("vqvae", {}).get("epochs"))
    batch = config.get("batch_size", config.get("vqvae", {}).get("batch_size", 128))
    n_train = (args.limit or SPRITES["train"]) if sprites else len(run.train)
    command = ["python", "-m", "tools.pretrain", "--budget", args.budget, "--only", name]
    if run.budget != BUDGETS[args.budget]:
        command += ["--epochs-of"] + [f"{k}={v}" for k, v in run.budget.items() if BUDGETS[args.budget][k] != v]
    sessions = {path.stem: resume.sessions(path) for path in run.paths if path.exists()}
    devices = sorted({s["device"].split(":")[0] for runs in sessions.values() for s in runs} or {device.type})
    record = dict(
        model=model_name, budget=args.budget, dataset=config["dataset"] if sprites else run.test.tag, epochs=epochs,
        steps=epochs * -(-n_train // batch), device="+".join(devices), sessions=sessions,
        device_name=(torch.cuda.get_device_name() if device.type == "cuda" else
                     f"{platform.machine()} CPU, {os.cpu_count()} cores"),
        threads=torch.get_num_threads(), train_seconds=round(history.seconds, 1), processes=ctx.world,
        images_per_s=round(ctx.world * history.images_seen / history.seconds), torch=torch.__version__,
        date=time.strftime("%Y-%m-%d"), command=shlex.join(command), recipe=config, metrics=metrics,
        curve={k: dict(epochs=e, values=[round(v, 4) for v in vals]) for k, (e, vals) in curve.items()}
        | ({"fid_n": CURVE_N} if "fid" in curve else {}))
    result = pretrained.save(model, f"{model_name}-{record['dataset']}", record,
                             sample=lambda m, y=labels: m.sample(100, None if y is None else y.to(m.device)),
                             directory=args.out, config=config)
    said = (", ".join(f"{f} z{v['dim']} eta2 {v['eta2']:.2f}" for f, v in metrics["factors_found"].items())
            if sprites else f"FID {metrics['fid_domain']:.2f}")
    if "class_accuracy" in metrics:
        said += (f", class accuracy {metrics['class_accuracy']:.1%} (worst {metrics['worst_class_accuracy']:.0%}),"
                 f" independent {metrics['class_accuracy_independent']:.1%} "
                 f"(worst {metrics['worst_class_accuracy_independent']:.0%})")
    print(f"{model_name}: {epochs} epochs, {history.seconds:.0f} s training ({time.time() - start:.0f} s with "
          f"measurements), {said}; {result['storage']}, {result['bytes'] / 1e6:.1f} MB, max pixel change "
          f"{result['max_pixel_change']:.4f}", flush=True)


def main(argv=None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = distributed.setup(runtime.get_device())
    device = ctx.device
    train = data.load_dataset("fashion_mnist", "train", device=device, limit=args.limit)
    test = data.load_dataset("fashion_mnist", "test", device=device)
    extractor = features.extractor_for(test, "auto", device)
    reference = fid.reference_stats(test, args.fid_n, extractor)
    run = Run(args, train, test, extractor, ctx)
    run.reference, run.judges = reference, {"domain": extractor.model,
                                            "independent": classifiers.load_independent(device)}
    for name in args.only:
        start, run.paths = time.time(), []
        models, history, extra, curves = train_model(name, run)
        if history.interrupted:
            print(f"{name}: interrupted; its resume file keeps what was trained, run the command again to go on")
            return
        if not ctx.main:
            continue                    # process 0 measures and writes
        for model_name, (model, config) in models.items():
            write(run, name, model_name, model, config, history, extra, curves[model_name], start)
    distributed.finish(ctx)


if __name__ == "__main__":
    main()
