"""VQ-VAE: a discrete latent space learnt with a codebook and the straight-through estimator.

Introduced (and written, cell by cell) in notebooks/02_vq_vae.ipynb; notebook 05 measures its samplers.

The encoder maps an image to a grid of vectors z_e (B, D, H/4, W/4), e.g. 7x7 for 28x28 images.
Each vector is replaced by its nearest codebook row e_k (K rows of dimension D): that is the
quantized code z_q. The decoder sees z_q. ``argmin`` has no gradient, so the **straight-through
estimator** copies the gradient arriving at z_q onto z_e. The codebook learns through its own loss:

    loss = recon(x, x_hat) + ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2

where sg[.] stops gradients: the *codebook loss* moves codes towards the encoder outputs, the
*commitment loss* (beta = 0.25) keeps the encoder close to the codes it picked. Codes that no
encoder output picks ("dead codes") can be moved back onto the data after each epoch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Module, eval_mode
from .machinery.checks import check_image_shape
from .training import minimize


def nearest_code(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index k of the closest codebook row e_k (codebook: K x D) for each row z of ``flat`` (N, D).

    ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2: one (N, K) matrix product, no N x K x D tensor."""
    d2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)
    return d2.argmin(1)                                           # (N,)


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """The value of z_q with the gradient of z_e: dL/dz_e := dL/dz_q.

    z_e - sg[z_e] is exactly 0 going forward, and its gradient w.r.t. z_e is the identity. Often
    written z_e + sg[z_q - z_e], which is equal up to float rounding."""
    return z_q.detach() + (z_e - z_e.detach())


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantization of (B, D, H, W) vectors against a K x D codebook."""

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25):
        super().__init__()
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.codebook = nn.Embedding(num_codes, code_dim)
        self.codebook.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)  # as in the paper's code

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Return (z_q with straight-through gradient, indices (B, H, W), losses)."""
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)             # (B*H*W, D)
        idx = nearest_code(flat.detach(), self.codebook.weight)
        z_q = self.codebook(idx).view(b, h, w, d).permute(0, 3, 1, 2)
        losses = {"codebook": F.mse_loss(z_q, z_e.detach()),     # ||sg[z_e] - e||^2: moves codes
                  "commitment": F.mse_loss(z_e, z_q.detach())}   # ||z_e - sg[e]||^2: moves encoder
        return straight_through(z_e, z_q), idx.view(b, h, w), losses

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code vectors for an index grid (B, H, W) -> (B, D, H, W)."""
        return self.codebook(idx).permute(0, 3, 1, 2)


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2)]


def code_grid(image_shape: tuple, code_dim: int) -> tuple[tuple, tuple]:
    """Image shape (C, H, W) and the code grid (D, H/4, W/4): two stride-2 convs halve H twice."""
    c_img, h, w = check_image_shape(image_shape)
    if h % 4 or w % 4:
        raise ValueError(f"the VQ-VAE downsamples 4 times, so H and W must be divisible by 4; got "
                         f"{h}x{w} (load the dataset with image_size=...)")
    return (c_img, h, w), (code_dim, h // 4, w // 4)


def vqvae_encoder(c_img: int, c: int, code_dim: int) -> nn.Sequential:
    """Images (B, C, H, W) -> z_e (B, D, H/4, W/4): two stride-2 convs, then a 1x1 conv to D."""
    return nn.Sequential(
        *_block(nn.Conv2d(c_img, c, 4, 2, 1), c),              # H -> H/2
        *_block(nn.Conv2d(c, 2 * c, 4, 2, 1), 2 * c),          # H/2 -> H/4
        nn.Conv2d(2 * c, code_dim, 1))                         # z_e: (B, D, H/4, W/4)


def vqvae_decoder(code_dim: int, c: int, c_img: int) -> nn.Sequential:
    """z_q (B, D, H/4, W/4) -> pixel logits (B, C, H, W): a 3x3 conv, two stride-2 transposed convs."""
    return nn.Sequential(
        *_block(nn.Conv2d(code_dim, 2 * c, 3, 1, 1), 2 * c),
        *_block(nn.ConvTranspose2d(2 * c, c, 4, 2, 1), c),     # H/4 -> H/2
        nn.ConvTranspose2d(c, c_img, 4, 2, 1))                 # H/2 -> H logits


class VQVAE(Module):
    """Encoder -> quantizer -> decoder; the code grid is the image downsampled 4 times, as in the
    paper (its 128x128 ImageNet images become 32x32 grids)."""

    def __init__(self, image_shape: tuple, num_codes: int = 128, code_dim: int = 16,
                 channels: int = 32, beta: float = 0.25):
        super().__init__()
        self.image_shape, self.latent_shape = code_grid(image_shape, code_dim)  # (C, H, W), (D, H/4, W/4)
        self.encoder = vqvae_encoder(self.image_shape[0], channels, code_dim)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta)
        self.decoder = vqvae_decoder(code_dim, channels, self.image_shape[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)                                     # z_e: (B, D, H/4, W/4)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z_q))                    # images in [0, 1]

    def quantize_and_decode(self, z: torch.Tensor) -> torch.Tensor:
        """Snap any continuous latent (e.g. from a prior) to the codebook, then decode."""
        return self.decode(self.quantizer(z)[0])

    def forward(self, x: torch.Tensor):
        z_q, idx, losses = self.quantizer(self.encode(x))
        return self.decode(z_q), idx, losses

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """recon (pixel MSE) + codebook + beta * commitment, and the batch's code perplexity."""
        x_hat, idx, q = self(x)
        recon = F.mse_loss(x_hat, x)
        return {"loss": recon + q["codebook"] + self.quantizer.beta * q["commitment"], "recon": recon,
                "codebook": q["codebook"], "commitment": q["commitment"],
                "perplexity": perplexity(idx, self.quantizer.num_codes)}


def perplexity(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of the code-usage distribution: the 'effective number of codes' in use.

    K codes used equally often give K; one code used all the time gives 1.
    """
    p = torch.bincount(indices.flatten(), minlength=num_codes).float()
    p = p / p.sum()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def vqvae_step(model: VQVAE, optimizer: torch.optim.Optimizer):
    """The step :func:`common.training.train` calls per batch: minimise the VQ-VAE loss."""
    return minimize(lambda x, y: model.loss(x), optimizer)


@torch.no_grad()
def code_usage(model: VQVAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """How often each code is picked over the images ``x`` (K,), in eval mode."""
    counts = torch.zeros(model.quantizer.num_codes, dtype=torch.long, device=x.device)
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            idx = model.quantizer(model.encode(x[i:i + batch_size]))[1]
            counts += torch.bincount(idx.flatten(), minlength=model.quantizer.num_codes)
    return counts


def dead_code_callback(model: VQVAE, x_probe: torch.Tensor, reinit: bool, last_epoch: int):
    """Per-epoch callback: record codes used / dead on ``x_probe``; with ``reinit``, move the dead
    ones onto encoder outputs of that same probe (:func:`reinit_dead_codes`). Nothing is reset
    after ``last_epoch``, so a finished model never holds codes that were moved but not trained."""

    def on_epoch(epoch: int, history) -> dict[str, float]:
        usage = code_usage(model, x_probe)
        dead = int((usage == 0).sum())
        reset = 0
        if reinit and dead and epoch < last_epoch:
            with torch.no_grad(), eval_mode(model):
                reset = reinit_dead_codes(model.quantizer, usage, model.encode(x_probe[:2000]))
        return {"dead_codes": dead, "codes_used": model.quantizer.num_codes - dead, "reset": reset}

    return on_epoch


@torch.no_grad()
def reinit_dead_codes(quantizer: VectorQuantizer, usage: torch.Tensor, z_e: torch.Tensor,
                      noise: float = 0.01) -> int:
    """Move every code with zero ``usage`` onto a random encoder output (plus a little noise), so
    it lands where the data are and starts being picked. Returns how many were reset."""
    dead = torch.nonzero(usage == 0).flatten()
    if len(dead) == 0:
        return 0
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, quantizer.code_dim)   # all encoder outputs (N, D)
    pick = flat[torch.randint(len(flat), (len(dead),), device=flat.device)]
    quantizer.codebook.weight.data[dead] = pick + noise * pick.std() * torch.randn_like(pick)
    return len(dead)
