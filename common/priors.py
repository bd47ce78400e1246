"""Priors over a VQ-VAE's latent space, composed with its decoder into samplers.

Introduced in notebooks/02_vq_vae.ipynb. A VQ-VAE has no prior of its own: decoding uniformly
random codes gives garbage, because real images use codes in strongly correlated patterns. Both
samplers here model the *continuous* encoder outputs z_e (flattened to D*h*w numbers, h x w the code grid), draw a new
z_e, snap it to the codebook and decode:

- :class:`GMMPriorSampler`: PCA down to a few dimensions, then a Gaussian mixture (fitted with
  scikit-learn; sampled and scored in torch).
- :class:`VAEPriorSampler`: a small MLP VAE trained on the standardized z_e.

Both are :class:`~common.layers.GenerativeModel` s: ``sample(n)`` gives images in [0, 1], and they
save and load as checkpoints (the VQ-VAE's weights travel inside).
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from .layers import GenerativeModel
from .vae import MLPVAE
from .vqvae import VQVAE


class LatentPriorSampler(GenerativeModel):
    """A prior over a VQ-VAE's continuous latents (``sample_latent``) + its quantizer and decoder."""

    vqvae: VQVAE

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.vqvae.image_shape

    def sample_latent(self, n: int) -> torch.Tensor:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def _sample(self, n: int, labels=None) -> torch.Tensor:
        return self.vqvae.quantize_and_decode(self.sample_latent(n))


def fit_pca_gmm(z_e_flat: torch.Tensor, n_pca: int, n_components: int, seed: int = 0) -> tuple[dict, float]:
    """PCA to ``n_pca`` dimensions, then a full-covariance GMM there (scikit-learn), fitted to
    flattened encoder outputs (N, D*h*w). Returns the fitted parameters as float32 tensors named
    as :class:`GMMPriorSampler`'s buffers, and the share of variance the PCA keeps."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = z_e_flat.detach().cpu().double().numpy()  # to the CPU first: MPS has no float64
    pca = PCA(n_pca, random_state=seed).fit(x)
    gmm = GaussianMixture(n_components, covariance_type="full", reg_covar=1e-4,
                          random_state=seed).fit(pca.transform(x))   # y = (x - mean) @ components.T
    scale_tril = torch.linalg.cholesky(torch.as_tensor(gmm.covariances_))   # L with L L^T = Sigma_k
    fitted = {"pca_mean": pca.mean_, "pca_components": pca.components_, "weights": gmm.weights_,
              "means": gmm.means_, "scale_tril": scale_tril}
    return ({k: torch.as_tensor(v, dtype=torch.float32) for k, v in fitted.items()},
            float(pca.explained_variance_ratio_.sum()))


class GMMPriorSampler(LatentPriorSampler):
    """y ~ GMM in PCA space -> z_e = y @ components + mean -> nearest codes -> VQ-VAE decoder."""

    def __init__(self, vqvae: dict, n_pca: int = 32, n_components: int = 16):
        super().__init__()
        self.vqvae = VQVAE(**vqvae)
        f = math.prod(self.vqvae.latent_shape)                               # D*h*w numbers per z_e
        self.register_buffer("pca_mean", torch.zeros(f))
        self.register_buffer("pca_components", torch.zeros(n_pca, f))        # rows: principal axes
        self.register_buffer("weights", torch.full((n_components,), 1.0 / n_components))
        self.register_buffer("means", torch.zeros(n_components, n_pca))
        self.register_buffer("scale_tril", torch.eye(n_pca).repeat(n_components, 1, 1))  # Cholesky of covariances

    @classmethod
    def fit(cls, vqvae: VQVAE, z_e_flat: torch.Tensor, n_pca: int = 32, n_components: int = 16, seed: int = 0):
        fitted, explained = fit_pca_gmm(z_e_flat, n_pca, n_components, seed)
        sampler = cls(vqvae.hparams, n_pca, n_components)
        sampler.vqvae.load_state_dict(vqvae.state_dict())                    # the VQ-VAE travels inside
        for name, value in fitted.items():
            getattr(sampler, name).copy_(value)
        sampler.explained_variance = explained                                # for reports only
        return sampler.to(next(vqvae.parameters()).device)

    def mixture(self) -> MixtureSameFamily:
        return MixtureSameFamily(Categorical(probs=self.weights),
                                 MultivariateNormal(self.means, scale_tril=self.scale_tril))

    def log_prob(self, z_e_flat: torch.Tensor) -> torch.Tensor:
        """Log density of the GMM at the PCA coordinates y of each flattened z_e (N,)."""
        return self.mixture().log_prob((z_e_flat - self.pca_mean) @ self.pca_components.t())

    @torch.no_grad()
    def sample_latent(self, n: int) -> torch.Tensor:
        y = self.mixture().sample((n,))                                       # (n, n_pca)
        return (y @ self.pca_components + self.pca_mean).view(n, *self.vqvae.latent_shape)  # z_e (n, D, h, w)


class VAEPriorSampler(LatentPriorSampler):
    """z ~ N(0, I) -> latent VAE's decoder -> un-standardize to z_e -> nearest codes -> decoder."""

    def __init__(self, vqvae: dict, vae: dict):
        super().__init__()
        self.vqvae = VQVAE(**vqvae)
        self.vae = MLPVAE(**vae)
        f = math.prod(self.vqvae.latent_shape)
        self.register_buffer("mean", torch.zeros(f))
        self.register_buffer("std", torch.ones(f))

    @classmethod
    def from_parts(cls, vqvae: VQVAE, vae: MLPVAE, mean: torch.Tensor, std: torch.Tensor
                   ) -> "VAEPriorSampler":
        sampler = cls(vqvae.hparams, vae.hparams)
        sampler.vqvae.load_state_dict(vqvae.state_dict())
        sampler.vae.load_state_dict(vae.state_dict())
        sampler.mean.copy_(mean.flatten())
        sampler.std.copy_(std.flatten())
        return sampler.to(next(vqvae.parameters()).device)

    @torch.no_grad()
    def sample_latent(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.vae.latent_dim, device=self.device)
        flat = self.vae.decode(z).flatten(1) * self.std + self.mean
        return flat.view(n, *self.vqvae.latent_shape)
