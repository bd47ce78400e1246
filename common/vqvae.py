"""VQ-VAE: a discrete latent space learnt with a codebook and the straight-through estimator.

Introduced (and narrated) in notebooks/02_vq_vae.ipynb; notebook 05 measures its samplers.

The encoder maps an image to a grid of vectors z_e (B, D, H/4, W/4), e.g. 7x7 for 28x28 images.
Each vector is replaced by its nearest codebook row e_k (K rows of dimension D): that is the quantized code z_q. The decoder
sees z_q. ``argmin`` has no gradient, so the **straight-through estimator** copies the gradient
arriving at z_q onto z_e. The codebook learns through its own loss term:

    loss = recon(x, x_hat) + ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2

where sg[.] stops gradients: the *codebook loss* moves codes towards the encoder outputs, the
*commitment loss* (beta = 0.25) keeps the encoder close to the codes it picked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import register
from .layers import check_image_shape, check_input, eval_mode


def perplexity(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of the code-usage distribution: the 'effective number of codes' in use.

    K codes used equally often give K; one code used all the time gives 1.
    """
    p = torch.bincount(indices.flatten(), minlength=num_codes).float()
    p = p / p.sum()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantization of (B, D, H, W) vectors against a K x D codebook."""

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25):
        super().__init__()
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.codebook = nn.Embedding(num_codes, code_dim)
        self.codebook.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)  # as in the paper's code

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the closest code for each row of ``flat`` (N, D), by squared distance
        ||z||^2 - 2 z.e + ||e||^2 (no N x K x D tensor is built)."""
        e = self.codebook.weight
        d2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)
        return d2.argmin(1)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Return (z_q with straight-through gradient, indices (B, H, W), losses)."""
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)             # (B*H*W, D)
        idx = self.nearest(flat.detach())
        z_q = self.codebook(idx).view(b, h, w, d).permute(0, 3, 1, 2)
        losses = {"codebook": F.mse_loss(z_q, z_e.detach()),     # ||sg[z_e] - e||^2: moves codes
                  "commitment": F.mse_loss(z_e, z_q.detach())}   # ||z_e - sg[e]||^2: moves encoder
        # Straight-through: the value is exactly z_q (z_e - sg[z_e] is exactly 0), the gradient
        # w.r.t. z_e is the identity. Often written z_e + sg[z_q - z_e], equal up to rounding.
        z_q_st = z_q.detach() + (z_e - z_e.detach())
        return z_q_st, idx.view(b, h, w), losses

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code vectors for an index grid (B, H, W) -> (B, D, H, W)."""
        return self.codebook(idx).permute(0, 3, 1, 2)

    @torch.no_grad()
    def reinit_dead_codes(self, usage: torch.Tensor, z_e: torch.Tensor, noise: float = 0.01) -> int:
        """Move every code with zero ``usage`` onto a random encoder output (plus a little noise),
        so it lands where the data are and starts being picked. Returns how many were reset."""
        dead = torch.nonzero(usage == 0).flatten()
        if len(dead) == 0:
            return 0
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        pick = flat[torch.randint(len(flat), (len(dead),), device=flat.device)]
        self.codebook.weight.data[dead] = pick + noise * pick.std() * torch.randn_like(pick)
        return len(dead)


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2)]


@register
class VQVAE(nn.Module):
    """Conv encoder (two stride-2 convs with BN and LeakyReLU: 28 -> 14 -> 7, 64 -> 32 -> 16) ->
    quantizer -> transposed-conv decoder. The code grid is the image downsampled 4 times, as in
    the paper (its 128x128 ImageNet images become 32x32 grids)."""

    def __init__(self, image_shape: tuple, num_codes: int = 128, code_dim: int = 16,
                 channels: int = 32, beta: float = 0.25):
        super().__init__()
        c_img, h, w = check_image_shape(image_shape)
        if h % 4 or w % 4:
            raise ValueError(f"the VQ-VAE downsamples 4 times, so H and W must be divisible by 4; got "
                             f"{h}x{w} (load the dataset with image_size=...)")
        self.image_shape, self.latent_shape = (c_img, h, w), (code_dim, h // 4, w // 4)
        c = channels
        self.encoder = nn.Sequential(
            *_block(nn.Conv2d(c_img, c, 4, 2, 1), c),              # H -> H/2
            *_block(nn.Conv2d(c, 2 * c, 4, 2, 1), 2 * c),          # H/2 -> H/4
            nn.Conv2d(2 * c, code_dim, 1))                         # z_e: (B, D, H/4, W/4)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta)
        self.decoder = nn.Sequential(
            *_block(nn.Conv2d(code_dim, 2 * c, 3, 1, 1), 2 * c),
            *_block(nn.ConvTranspose2d(2 * c, c, 4, 2, 1), c),     # H/4 -> H/2
            nn.ConvTranspose2d(c, c_img, 4, 2, 1))                 # H/2 -> H logits

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e (B, D, H/4, W/4) of images ``x`` in [0, 1] shaped (B, *image_shape)."""
        check_input(x, self.image_shape, 0, 1, type(self).__name__, self)
        return self.encoder(x)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from quantized latents."""
        return torch.sigmoid(self.decoder(z_q))

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

    @torch.no_grad()
    def code_usage(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """How often each code is picked over the images ``x`` (K,), in eval mode."""
        counts = torch.zeros(self.quantizer.num_codes, dtype=torch.long, device=x.device)
        with eval_mode(self):
            for i in range(0, len(x), batch_size):
                idx = self.quantizer(self.encode(x[i:i + batch_size]))[1]
                counts += torch.bincount(idx.flatten(), minlength=self.quantizer.num_codes)
        return counts


def dead_code_callback(model: VQVAE, x_probe: torch.Tensor, reinit: bool, last_epoch: int):
    """Per-epoch callback: record codes used / dead on ``x_probe``; optionally re-initialise the
    dead ones from encoder outputs of that same probe batch. Nothing is reset after
    ``last_epoch``, so a finished model never holds codes that were moved but not trained."""

    def on_epoch(epoch: int, history) -> dict[str, float]:
        usage = model.code_usage(x_probe)
        dead = int((usage == 0).sum())
        reset = 0
        if reinit and dead and epoch < last_epoch:
            with torch.no_grad(), eval_mode(model):
                reset = model.quantizer.reinit_dead_codes(usage, model.encode(x_probe[:2000]))
        return {"dead_codes": dead, "codes_used": model.quantizer.num_codes - dead, "reset": reset}

    return on_epoch

