"""The course's machinery: what keeps runs safe and reproducible, and what a learner may skip.

- runtime: the profile switch, the dataset override, device, seeds, paths (``DGM_DATA_DIR``)
- storage: atomic writes, file hashes, saves that Ctrl-C cannot cut
- checks: input checks at the doors (first training batch, datasets, FID, loading)
- checkpoints: save and load models safely (no pickled code), the table of model classes
- data, sources, dsprites: the dataset registry, its on-disk readers and decode caches
- features: FID's feature extractors (Inception-v3, the domain classifier)
- pretrained: the models the course ships, with their manifest

Nothing here teaches a model, a loss or a training step; those are the modules one level up,
which import from here (never the other way round at import time).
"""
