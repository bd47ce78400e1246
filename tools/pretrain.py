"""Train the course's generative models for ``data/pretrained/`` (see ``common/pretrained.py``).

    .venv/bin/python -m tools.pretrain [--budget long-cpu|gpu] [--only NAME ...] [--threads N]

Every model of notebook 05's leaderboard, trained on Fashion-MNIST with the repository's own code
and its notebook's recipe (the same classes, losses, optimiser settings and seed as the
notebook's config), only longer:

- ``--budget gpu``: the notebooks' ``gpu`` profile (its epochs and widths), for one GPU.
- ``--budget long-cpu``: the ``cpu`` profile's widths (the very architecture a learner trains in
  the notebook, so notebooks can show "your model" beside "the same model, trained longer") and
  more epochs (about an hour on a 2-core CPU).

After training, each model is measured (domain FID of 5,000 samples against the test set, and the
per-class accuracy of the course's classifier for conditional models), stored in half precision
where that changes no pixel of its samples by more than 1/255, and written with its manifest
entry (file hash, budget, epochs, device, training time, metrics). Each model is written as soon
as it is trained, atomically: an interrupted run keeps the models already done.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict, replace

import torch
import torch.nn.functional as F

from common import classifiers, dcgan, fid, layers, priors, recipes, training, vae, vqvae
from common.ema import recalibrate_batch_norm
from common.machinery import data, features, pretrained, runtime

# Epochs per model and budget; widths: the cpu profile's (None) or the gpu profile's.
BUDGETS = {
    "long-cpu": dict(vae_mlp=50, vae_conv=15, vqvae=12, latent_vae=50, dcgan=15, cdcgan=6, cwgan=10,
                     wide=False),
    "gpu": dict(vae_mlp=50, vae_conv=50, vqvae=20, latent_vae=50, dcgan=25, cdcgan=50, cwgan=50, wide=True),
}
MODELS = ("vae_mlp", "vae_conv", "vqvae_priors", "dcgan_generator", "cdcgan_generator", "cwgan_gp_generator")
FID_N = 5_000
PER_CLASS = 500
SEED = 0


def _vae(name, train, test, budget, device):
    """Notebook 01: the PyTorch example's MLP VAE, or the conv VAE (Bernoulli likelihood)."""
    shape, epochs = train.image_shape, budget[name]
    torch.manual_seed(SEED)
    model = (vae.MLPVAE(shape, 20, 400, "bernoulli", None) if name == "vae_mlp" else
             vae.ConvVAE(shape, 20, 64 if budget["wide"] else 32, likelihood="bernoulli", sigma2=None)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    test_loss = lambda epoch, history: {"test_loss": training.evaluate(
        lambda x, y: model.loss(x), test.batches(1000, shuffle=False), model)["loss"]}
    history = training.train(vae.vae_step(model, opt), train.batches(128, seed=SEED), epochs,
                             check=model, callbacks=[test_loss], desc=name)
    config = dict(model.hparams, epochs=epochs, lr=1e-3, batch_size=128, notebook="01_vae")
    return {name: (model, config)}, history, {"test_nll_bound": history.epochs[-1]["test_loss"]}


def _vqvae_priors(train, test, budget, device):
    """Notebook 02: VQ-VAE with K = 256 and dead-code re-initialisation, then its two priors."""
    epochs = budget["vqvae"]
    torch.manual_seed(SEED)
    model = vqvae.VQVAE(train.image_shape, 256, 16, 64 if budget["wide"] else 32, 0.25).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe, _ = train[:5_000]
    history = training.train(training.minimize(lambda x, y: model.loss(x), opt), train.batches(128, seed=SEED), epochs,
                             check=model, callbacks=[vqvae.dead_code_callback(model, probe, True, last_epoch=epochs)],
                             desc="vqvae")
    model.eval()
    with torch.no_grad():
        z = torch.cat([model.encode(x).flatten(1) for x, _ in train.batches(1000, shuffle=False)])
    points = 20_000 if budget["wide"] else 5_000
    gmm = priors.GMMPriorSampler.fit(model, z[:points], 32, 16, seed=SEED)
    mean, std = z.mean(0), z.std(0) + 1e-5
    latents = data.TensorData((z - mean) / std, train.labels)
    torch.manual_seed(SEED)
    latent_vae = vae.MLPVAE((z.shape[1],), 32, 256, likelihood="gaussian", sigma2=1.0, bounded=False).to(device)
    opt = torch.optim.Adam(latent_vae.parameters(), lr=1e-3)
    latent_history = training.train(vae.vae_step(latent_vae, opt), latents.batches(128, seed=SEED),
                                    budget["latent_vae"], check=latent_vae, desc="latent VAE")
    history.seconds += latent_history.seconds
    vq = dict(model.hparams, epochs=epochs, reinit=True, lr=1e-3, batch_size=128, notebook="02_vq_vae")
    models = {"vqvae_gmm_prior": (gmm, dict(vqvae=vq, n_pca=32, n_components=16, points=points)),
              "vqvae_vae_prior": (priors.VAEPriorSampler.from_parts(model, latent_vae, mean, std),
                                  dict(vqvae=vq, latent_vae=dict(latent_vae.hparams, epochs=budget["latent_vae"])))}
    recon = training.evaluate(lambda x, y: {"mse": F.mse_loss(model(x)[0], x)}, test.batches(1000, shuffle=False), model)
    return models, history, {"vqvae_test_recon_mse": recon["mse"]}


def _dcgan(train, test, budget, device):
    """Notebook 03: the DCGAN paper's recipe at 28 x 28."""
    epochs, width = budget["dcgan"], 64 if budget["wide"] else 32
    torch.manual_seed(SEED)
    G = dcgan.DCGANGenerator(train.image_shape, 100, width).to(device)
    D = dcgan.DCGANDiscriminator(train.image_shape, width).to(device)
    layers.channels_last_on_cpu(G, D)
    opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (G, D))
    history = training.train(dcgan.dcgan_step(G, D, opt_G, opt_D), train.batches(128, seed=SEED), epochs, check=G, desc="DCGAN")
    config = dict(G.hparams, d=D.hparams, epochs=epochs, lr=2e-4, betas=(0.5, 0.999), batch_size=128, notebook="03_dcgan")
    return {"dcgan_generator": (G, config)}, history, {}


def _conditional(name, train, test, budget, device):
    """Notebook 04's conditional DCGAN or WGAN-GP (its recipe, :mod:`common.recipes`), sampled from
    the EMA of G's weights (batch norm recalibrated)."""
    wgan, width = name == "cwgan_gp_generator", 64 if budget["wide"] else 32
    epochs = budget["cwgan" if wgan else "cdcgan"]
    recipe = replace(recipes.WGANGP() if wgan else recipes.CDCGAN(), ema=True)
    torch.manual_seed(SEED)
    G, D, _, _, step, ema = recipes.build(recipe, train.image_shape, len(train.classes), 100, width, width, device)
    history = training.train(step, train.batches(recipe.batch_size, seed=SEED), epochs, check=G, desc=name)
    config = dict(G.hparams, d=D.hparams, gan=type(recipe).__name__, **asdict(recipe), epochs=epochs,
                  ema_decay=ema.decay, notebook="04_conditional_gan")
    return {name: (recalibrate_batch_norm(ema.model), config)}, history, {}


def train_model(name: str, train, test, budget: dict, device):
    if name in ("vae_mlp", "vae_conv"):
        return _vae(name, train, test, budget, device)
    if name == "vqvae_priors":
        return _vqvae_priors(train, test, budget, device)
    if name == "dcgan_generator":
        return _dcgan(train, test, budget, device)
    return _conditional(name, train, test, budget, device)


def measure(model, extractor, reference, fid_n: int = FID_N, per_class: int = PER_CLASS) -> dict:
    """Domain FID (``fid_n`` samples vs the test set) and, for conditional models, the share of
    ``per_class`` samples per class that the domain classifier assigns to the class asked for."""
    metrics = {"fid_domain": fid.fid(model, reference, fid_n, extractor, seed=SEED, progress=False).value,
               "fid_n": fid_n, "fid_extractor": extractor.name}
    if getattr(model, "conditional", False):
        acc = classifiers.class_accuracy(model, extractor.model, per_class)
        metrics.update(class_accuracy=sum(acc) / len(acc), worst_class_accuracy=min(acc),
                       class_accuracy_per_class=acc, class_accuracy_n=per_class)
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="gpu" if torch.cuda.is_available() else "long-cpu")
    parser.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--out", default=str(pretrained.DIR))
    parser.add_argument("--epochs", type=int, default=None, help="every model this many epochs (tests)")
    parser.add_argument("--limit", type=int, default=None, help="training images (tests; default all)")
    parser.add_argument("--fid-n", type=int, default=FID_N, help="samples for the domain FID")
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="samples per class for class accuracy")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.get_device()
    budget = dict(BUDGETS[args.budget])
    if args.epochs:
        budget.update({k: args.epochs for k, v in budget.items() if k != "wide"})
    train = data.load_dataset("fashion_mnist", "train", device=device, limit=args.limit)
    test = data.load_dataset("fashion_mnist", "test", device=device)
    extractor = features.extractor_for(test, "auto", device)
    reference = fid.reference_stats(test, args.fid_n, extractor)
    for name in args.only:
        start = time.time()
        models, history, extra = train_model(name, train, test, budget, device)
        for model_name, (model, config) in models.items():
            metrics = {**measure(model, extractor, reference, args.fid_n, args.per_class), **extra}
            labels = torch.arange(len(test.classes)).repeat(10) if getattr(model, "conditional", False) else None
            record = dict(
                model=model_name, budget=args.budget, dataset=test.tag, epochs=config.get("epochs", config.get("vqvae", {}).get("epochs")),
                device=str(device), device_name=(torch.cuda.get_device_name() if device.type == "cuda" else
                                                 f"{platform.machine()} CPU, {os.cpu_count()} cores"),
                threads=torch.get_num_threads(), train_seconds=round(history.seconds, 1),
                images_per_s=round(history.images_seen / history.seconds), torch=torch.__version__,
                date=time.strftime("%Y-%m-%d"), command=f"python -m tools.pretrain --budget {args.budget}",
                recipe=config, metrics=metrics)
            result = pretrained.save(model, f"{model_name}-{test.tag}", record,
                                     sample=lambda m, y=labels: m.sample(100, None if y is None else y.to(m.device)),
                                     directory=args.out, config=config)
            print(f"{model_name}: {history.n_epochs} epochs, {history.seconds:.0f} s training "
                  f"({time.time() - start:.0f} s with measurements), FID {metrics['fid_domain']:.2f}"
                  + (f", class accuracy {metrics['class_accuracy']:.1%} (worst {metrics['worst_class_accuracy']:.0%})"
                     if "class_accuracy" in metrics else "")
                  + f"; {result['storage']}, {result['bytes'] / 1e6:.1f} MB, max pixel change {result['max_pixel_change']:.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
