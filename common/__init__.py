"""The course's shared code. Two layers, importing in one direction:

Teaching code (what the notebooks write in their ``#@save`` cells, kept identical here):

    layers       the sample() contract, Module (records constructor arguments), image geometry
    training     the one training loop, evaluate, the NaN guard             notebook 01
    vae          ELBO, reparameterization, MLP and conv VAEs                notebook 01
    classifiers  MLP and conv classifiers, class accuracy of samples        notebook 01
    vqvae        vector quantizer, straight-through, VQ-VAE                 notebook 02
    priors       GMM and VAE priors over a VQ-VAE's latents                 notebook 02
    dcgan        DCGAN, GAN losses, the DCGAN step                          notebook 03
    cgan         conditional GANs, gradient penalty, WGAN-GP, the extras    notebook 04
    ema          an average of G's weights to sample from                   notebook 04
    recipes      each GAN training recipe, defined once                     notebook 04
    fid          the Fréchet distance and FID                               notebook 05
    plots, widgets   figures and live sliders
    diagrams     the VAE, the quantizer and the GAN loop, drawn       notebooks 01-03

Machinery a learner may skip (``common.machinery``): profiles and paths, safe storage, input
checks at the doors, checkpoints, datasets and their readers, feature extractors, pretrained
models. Teaching modules import it; it never imports them at import time.

    from common.machinery import data, runtime
    rt = runtime.setup(seed=0)
"""
__version__ = "0.3.0"
