"""Shared code of the course: import what a notebook needs, e.g.

    from common import runtime, data, training, plots
    rt = runtime.setup(seed=0)

Modules: runtime (profiles, dataset override, device, seeds, paths), data (the dataset registry,
in-memory datasets), sources (where each dataset is read from), dsprites (its factors and
generator), training (the one training loop), checkpoints (atomic save, safe load), layers (the
sample() contract, image geometry), vae, vqvae, priors, gan, classifiers, fid (the Fréchet
distance and FID), features (Inception and domain-classifier extractors), plots, widgets.
Maintenance tools (README sync, Colab cells, the domain classifier's training) live in tools/.
"""
__version__ = "0.2.0"
