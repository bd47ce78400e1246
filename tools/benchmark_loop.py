"""How fast is the course's training loop against a plain PyTorch loop of the same DCGAN, and how
much faster does each model's step get in bfloat16 or with channels-last weights?

    .venv/bin/python -m tools.benchmark_loop [--steps 200] [--repeats 3] [--device cpu|cuda|mps]
    .venv/bin/python -m tools.benchmark_loop --variants [--models dcgan cwgan_gp ...] [--size 28|64]
    .venv/bin/python -m tools.benchmark_loop --quality [--models cdcgan cwgan_gp vae_conv] [--epochs 1] [--seeds 0 1]

Four loops train the same DCGAN (notebook 03's sizes, batch 128, Fashion-MNIST held on the
device and cut by indexing) from the same initial weights:

- ``plain``: a hand-written loop, D then G per batch, that never reads a number back to the host;
- ``plain+item``: the same, plus ``.item()`` of the two losses and the mean D(x), D(G(z)) on every
  step, as the PyTorch DCGAN tutorial does for its log;
- ``plain+freeze``: ``plain`` with D's weights frozen (``requires_grad_(False)``) during G's
  update, the one trick of the course's step: G's backward pass then skips the gradient of D's
  weights, which G's update does not use;
- ``course``: ``training.train(dcgan.dcgan_step(...), data.batches(128), 1)``, with its progress bar,
  history (losses read back every 25 steps in one transfer) and NaN guard before each update.

Each is timed ``--repeats`` times over ``--steps`` batches after a warm-up; the median images/s is
reported with the ratio to ``plain``. A benchmark, not a test: numbers vary with the machine.

``--variants`` times every model's training step (the course's own step functions, batches cut
from a device tensor) four ways, interleaved, and prints each as a ratio to the first:

- ``fp32``: float32 weights in the default (contiguous NCHW) memory order;
- ``channels_last``: the conv weights stored NHWC (:func:`common.layers.channels_last_on_cpu`
  does this on the CPU for the GANs of notebooks 03 and 04);
- ``bf16``: the step under ``torch.autocast(dtype=torch.bfloat16)`` (weights and optimiser stay
  float32; convolutions and matrix products run in bfloat16);
- ``bf16+channels_last``: both.

The models: notebook 01's MLP and conv VAE, notebook 02's VQ-VAE, notebook 03's DCGAN and notebook
04's conditional DCGAN and WGAN-GP, at the ``cpu`` profile's widths and batch sizes.

``--quality`` asks whether bfloat16 hurts what a step learns: each model trained on Fashion-MNIST
for ``--epochs`` epochs with channels_last weights, in fp32 and in bf16, from the same seed, for
each of ``--seeds``; then the domain FID of 5,000 samples (GANs) with the class accuracy of the
conditional ones, or the test loss (VAEs). The spread between seeds is the noise to compare with.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from common import dcgan, recipes, training, vae, vqvae
from common.machinery import data, features, runtime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def plain_loop(G, D, opt_G, opt_D, batches, item: bool, freeze: bool = False) -> list[float]:
    logged = []
    for x, _ in batches:
        real = dcgan.to_tanh_range(x)
        fake = G(torch.randn(x.shape[0], G.z_dim, device=x.device))
        d_real, d_fake = D(real), D(fake.detach())
        loss_D = dcgan.d_loss_bce(d_real, d_fake)
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        D.requires_grad_(not freeze)
        loss_G = dcgan.g_loss_nonsaturating(D(fake))
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        D.requires_grad_(True)
        opt_G.step()
        if item:
            logged.append((loss_D.item(), loss_G.item(), torch.sigmoid(d_real).mean().item(),
                           torch.sigmoid(d_fake).mean().item()))
    return logged


def run(kind: str, models, train: data.ImageData, steps: int, seed: int, device: torch.device) -> float:
    G, D = (copy.deepcopy(m) for m in models)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    batches = train.subset(steps * 128).batches(128, seed=seed, drop_last=True)
    torch.manual_seed(seed)
    _sync(device)
    start = time.perf_counter()
    if kind == "course":
        training.train(dcgan.dcgan_step(G, D, opt_G, opt_D), batches, 1, desc="course loop")
    else:
        plain_loop(G, D, opt_G, opt_D, batches, item=kind == "plain+item", freeze=kind == "plain+freeze")
    _sync(device)
    return steps * 128 / (time.perf_counter() - start)


# ---- every model's step, four ways

VARIANTS = ("fp32", "channels_last", "bf16", "bf16+channels_last")
MODELS = ("vae_mlp", "vae_conv", "vqvae", "dcgan", "cdcgan", "cwgan_gp")


def build_step(model: str, shape: tuple, n_classes: int, device: torch.device, seed: int = 0):
    """(modules, step, batch size) of one model as its notebook trains it (``cpu`` profile widths)."""
    torch.manual_seed(seed)
    if model in ("vae_mlp", "vae_conv"):
        m = (vae.MLPVAE(shape, 20, 400, "bernoulli", None) if model == "vae_mlp" else
             vae.ConvVAE(shape, 20, 32, likelihood="bernoulli", sigma2=None)).to(device)
        return [m], vae.vae_step(m, torch.optim.Adam(m.parameters(), lr=1e-3)), 128
    if model == "vqvae":
        m = vqvae.VQVAE(shape, 256, 16, 32, 0.25).to(device)
        return [m], training.minimize(lambda x, y: m.loss(x), torch.optim.Adam(m.parameters(), lr=1e-3)), 128
    if model == "dcgan":
        G, D = dcgan.DCGANGenerator(shape, 100, 32).to(device), dcgan.DCGANDiscriminator(shape, 32).to(device)
        opt_G, opt_D = (torch.optim.Adam(p.parameters(), lr=2e-4, betas=(0.5, 0.999)) for p in (G, D))
        return [G, D], dcgan.dcgan_step(G, D, opt_G, opt_D), 128
    recipe = recipes.WGANGP() if model == "cwgan_gp" else recipes.CDCGAN()
    parts = recipes.build(recipe, shape, n_classes, 100, 32, 32, device)
    for m in (parts.G, parts.D):  # build() stores CPU weights channels-last: start from the default here
        m.to(memory_format=torch.contiguous_format)
    return [parts.G, parts.D], parts.step, recipe.batch_size


def time_step(model: str, variant: str, x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int,
              device: torch.device, warmup: int = 3) -> float:
    """Images/s of ``steps`` training steps of ``model`` in ``variant`` on batches cut from (x, y)."""
    modules, step, batch = build_step(model, tuple(x.shape[1:]), n_classes, device)
    if "channels_last" in variant:
        for m in modules:
            m.to(memory_format=torch.channels_last)
    bf16 = "bf16" in variant

    def run(n: int, start: int) -> None:
        for i in range(n):
            j = ((start + i) * batch) % (len(x) - batch)
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                step(x[j:j + batch], y[j:j + batch])

    run(warmup, 0)
    _sync(device)
    t = time.perf_counter()
    run(steps, warmup)
    _sync(device)
    return steps * batch / (time.perf_counter() - t)


def variants_main(args) -> None:
    device = runtime.get_device(args.device)
    shape = (1, 28, 28) if args.size == 28 else (3, 64, 64)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4096, *shape, generator=g).to(device)   # the data is not what is timed: held on the device
    y = torch.randint(0, 10, (4096,), generator=g).to(device)
    print(f"training steps at {'x'.join(map(str, shape))} on {device} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; bfloat16 native here: {features.native_bf16(device)}), "
          f"{args.steps} steps x {args.repeats} interleaved repeats, median images/s")
    for model in args.models:
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for v in VARIANTS:
                rates[v].append(time_step(model, v, x, y, 10, args.steps, device))
        base = statistics.median(rates["fp32"])
        row = "  ".join(f"{v} {statistics.median(rates[v]):>7,.0f} ({statistics.median(rates[v]) / base:.2f}x)"
                        for v in VARIANTS)
        print(f"  {model:<9} {row}", flush=True)


def quality_main(args) -> None:
    from common import classifiers, fid
    device = runtime.get_device(args.device)
    train = data.load_dataset("fashion_mnist", "train", device=device)
    test = data.load_dataset("fashion_mnist", "test", device=device)
    extractor = features.get_extractor("domain", device, precision="fp32")
    reference = fid.reference_stats(test, 5_000, extractor, progress=False)
    print(f"{args.epochs} epoch(s) of Fashion-MNIST per run on {device}, channels_last weights; "
          f"domain FID of 5,000 samples / class accuracy (conditional) / test loss (VAEs)")
    for model in args.models:
        for seed in args.seeds:
            row = []
            for variant in ("channels_last", "bf16+channels_last"):
                modules, step, batch = build_step(model, train.image_shape, 10, device, seed)
                for m in modules:
                    m.to(memory_format=torch.channels_last)
                amp = torch.autocast(device.type, torch.bfloat16, enabled="bf16" in variant)

                def run_step(x, y, step=step, amp=amp):
                    with amp:
                        return step(x, y)

                history = training.train(run_step, train.batches(batch, seed=seed), args.epochs, desc=f"{model} {variant}")
                rate = history.images_seen / history.seconds
                if model.startswith("vae"):
                    m = modules[0]
                    score = training.evaluate(lambda x, y: m.loss(x), test.batches(1000, shuffle=False), m)["loss"]
                    row.append(f"{variant}: test loss {score:.2f} ({rate:,.0f} img/s)")
                    continue
                G = modules[0].eval()
                value = fid.fid(G, reference, 5_000, extractor, progress=False).value
                acc = (f", class accuracy {sum(classifiers.class_accuracy(G, extractor.model, 500)) / 10:.1%}"
                       if getattr(G, "conditional", False) else "")
                row.append(f"{variant}: FID {value:.2f}{acc} ({rate:,.0f} img/s)")
            print(f"  {model:<9} seed {seed}: " + " | ".join(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--variants", action="store_true", help="time every model's step in fp32/bf16/channels_last")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--size", type=int, choices=(28, 64), default=28)
    parser.add_argument("--quality", action="store_true", help="FID / accuracy / test loss after training, fp32 vs bf16")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    if args.quality:
        quality_main(args)
        return
    if args.variants:
        variants_main(args)
        return
    device = runtime.get_device(args.device)
    train = data.load_dataset("fashion_mnist", "train", device=device)
    torch.manual_seed(0)
    models = (dcgan.DCGANGenerator(train.image_shape, 100, 32).to(device),
              dcgan.DCGANDiscriminator(train.image_shape, 32).to(device))
    kinds = ("plain", "plain+item", "plain+freeze", "course")
    for kind in kinds:  # warm-up: allocator, kernels, caches
        run(kind, models, train, 10, 0, device)
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.repeats):  # interleaved, so a slow spell of the machine hits every loop
        for kind in kinds:
            rates[kind].append(run(kind, models, train, args.steps, r, device))
    base = statistics.median(rates["plain"])
    print(f"DCGAN 1x28x28, batch 128, {args.steps} steps x {args.repeats} repeats on {device} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for kind in kinds:
        med = statistics.median(rates[kind])
        spread = ", ".join(f"{v:,.0f}" for v in rates[kind])
        print(f"  {kind:<11} {med:>9,.0f} images/s   {med / base:.3f} x plain   (runs: {spread})")


if __name__ == "__main__":
    main()
