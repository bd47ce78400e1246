"""How fast is the course's training loop against a plain PyTorch loop of the same DCGAN?

    .venv/bin/python -m tools.benchmark_loop [--steps 200] [--repeats 3] [--device cpu|cuda|mps]

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
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from common import dcgan, training
from common.machinery import data, runtime


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
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
