"""Train the domain classifier whose features give the domain FID, and ship it.

    python -m tools.train_domain_classifier                  # Fashion-MNIST: data/fid_domain_classifier.pt + .json
    python -m tools.train_domain_classifier --dataset mnist  # another labelled dataset: data/fid_domain_classifier-<tag>.pt

A maintenance tool, not part of the course's package: notebooks only load the result
(:class:`common.machinery.features.DomainExtractor`). Training is deterministic for a given seed and device:
ConvClassifier(width 32), Adam with the learning rate decayed to 0 on a cosine over all steps,
batch 128, no augmentation. About 7 minutes on a 2-core CPU for Fashion-MNIST.
"""
from __future__ import annotations

import argparse
import json

import torch

from common import classifiers, training
from common.machinery import checkpoints, data, features, runtime, storage

RECIPE = dict(width=32, epochs=10, batch_size=128, lr=2e-3, seed=0)


def train_domain_classifier(dataset: str = "fashion_mnist", epochs: int = RECIPE["epochs"],
                            seed: int = RECIPE["seed"], device: torch.device | str = "cpu",
                            train_limit: int | None = None, test_limit: int | None = None):
    """Returns the model (eval mode), its history and its accuracy on the test split."""
    train = data.load_dataset(dataset, "train", device=device, limit=train_limit)
    test = data.load_dataset(dataset, "test", device=device, limit=test_limit)
    data.require_labels(train, "a domain classifier is trained to predict the labels")
    torch.manual_seed(seed)
    model = classifiers.ConvClassifier(train.image_shape, len(train.classes), RECIPE["width"]).to(device)
    batches = train.batches(RECIPE["batch_size"], seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(batches))
    minimize = training.minimize(model.loss, opt)

    def step(x, y):
        losses = minimize(x, y)
        schedule.step()
        return losses

    history = training.train(step, batches, epochs, check=model, desc="domain classifier")
    model.eval()
    accuracy = training.evaluate(model.loss, test.batches(1000, shuffle=False), model)["accuracy"]
    return model, history, accuracy, train.tag


def ship(dataset: str = "fashion_mnist", device: torch.device | str = "cpu") -> dict:
    """Train with :data:`RECIPE`, write the weights where :func:`common.machinery.features.domain_weights`
    looks, and (for the committed Fashion-MNIST file) its record: SHA-256 and test accuracy."""
    model, history, accuracy, tag = train_domain_classifier(dataset, device=device)
    path = features.domain_weights(tag)
    checkpoints.save_checkpoint(model, path, RECIPE, test_accuracy=accuracy, history=history.state_dict())
    record = {"file": path.name, "sha256": storage.file_hash(path), "dataset": tag,
              "test_accuracy": accuracy, "recipe": RECIPE, "train_seconds": round(history.seconds, 1),
              "torch_version": str(torch.__version__), "trained_by": "python -m tools.train_domain_classifier"}
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist", help="a labelled dataset name (default fashion_mnist)")
    args = parser.parse_args()
    print(json.dumps(ship(args.dataset, runtime.get_device()), indent=2))
