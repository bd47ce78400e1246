"""Shared code of the course: import what a notebook needs, e.g.

    from common import runtime, data, training, plots
    rt = runtime.setup(seed=0)

Modules: runtime (smoke switch, device, seeds, paths), data (in-memory datasets), training (the
one training loop), checkpoints (atomic save, safe load), layers (the sample() contract), vae,
classifiers, plots, widgets, colab (badges and the Colab set-up cell).
"""
__version__ = "0.1.0"
