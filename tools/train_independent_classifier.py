"""Train the independent Fashion-MNIST classifier that judges the conditional models' class
accuracy (issue 28), and ship it as ``data/independent_classifier.pt`` with its record.

    python -m tools.train_independent_classifier

Independent of everything the conditional GANs were trained against: another architecture
(:class:`common.classifiers.IndependentClassifier`: strided 5x5 convolutions, no batch norm,
dropout, a flattened head), another seed (1), random shifts of up to 2 pixels and left-right
flips, AdamW with a cosine schedule. No training loss of the course uses it. A maintenance tool:
notebooks and ``tools/pretrain.py`` only load the result (:func:`common.classifiers.load_independent`).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from common import classifiers, training
from common.machinery import checkpoints, data, runtime, storage

RECIPE = dict(width=32, hidden=256, epochs=12, batch_size=128, lr=2e-3, weight_decay=0.05, seed=1, shift=2)


def shift_and_flip(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by a whole number of pixels in [-shift, shift] both ways (zeros come in)
    and flipped left-right with probability 1/2: one gather for the batch, no per-image loop."""
    n, _, h, w = x.shape
    dy, dx = (torch.randint(-shift, shift + 1, (2, n, 1), generator=generator, device=x.device))
    flip = torch.rand(n, 1, generator=generator, device=x.device) < 0.5
    rows = torch.arange(h, device=x.device).expand(n, h) - dy            # source row of each output row
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip, w - 1 - cols, cols) - dx
    padded = F.pad(x, (w, w, h, h))                                      # out-of-range sources read zeros
    index_r = (rows + h).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * w)
    out = padded.gather(2, index_r)
    index_c = (cols + w).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, index_c)


def train_independent(epochs: int = RECIPE["epochs"], device: torch.device | str = "cpu",
                      train_limit: int | None = None, test_limit: int | None = None):
    """The model (eval mode), its history and its accuracy on the test split (overall and per class)."""
    train = data.load_dataset("fashion_mnist", "train", device=device, limit=train_limit)
    test = data.load_dataset("fashion_mnist", "test", device=device, limit=test_limit)
    torch.manual_seed(RECIPE["seed"])
    model = classifiers.IndependentClassifier(train.image_shape, len(train.classes), RECIPE["width"],
                                              RECIPE["hidden"]).to(device)
    batches = train.batches(RECIPE["batch_size"], seed=RECIPE["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, RECIPE["lr"], total_steps=epochs * len(batches))
    minimize = training.minimize(model.loss, opt)
    gen = torch.Generator(device=device).manual_seed(RECIPE["seed"])

    def step(x, y):
        losses = minimize(shift_and_flip(x, RECIPE["shift"], gen), y)
        schedule.step()
        return losses

    history = training.train(step, batches, epochs, check=model, desc="independent classifier")
    model.eval()
    x, y = test[:len(test)]
    pred = model.predict(x)
    return model, history, (pred == y).float().mean().item(), classifiers.per_class_accuracy(pred, y, len(test.classes))


def ship(device: torch.device | str = "cpu") -> dict:
    model, history, accuracy, per_class = train_independent(device=device)
    path = runtime.REPO_ROOT / "data" / classifiers.INDEPENDENT_WEIGHTS
    checkpoints.save_checkpoint(model.cpu(), path, RECIPE, test_accuracy=accuracy, history=history.state_dict())
    record = {"file": path.name, "sha256": storage.file_hash(path), "dataset": "fashion_mnist-1x28x28",
              "test_accuracy": accuracy, "test_accuracy_per_class": [round(a, 4) for a in per_class],
              "recipe": RECIPE, "train_seconds": round(history.seconds, 1), "torch_version": str(torch.__version__),
              "trained_by": "python -m tools.train_independent_classifier"}
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    print(json.dumps(ship(runtime.get_device()), indent=2))
