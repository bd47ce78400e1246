"""Slow reference check (not run in CI): our MLP VAE vs PyTorch's VAE example, trained the
example's way, on Fashion-MNIST for the same 10 epochs.

Run with `pytest -m slow tests/test_reference_vae_example.py -s` (about 2 minutes on 2 CPU cores).
The reference follows the procedure of pytorch/examples' vae/main.py as we read it: fc1 784->400
ReLU, fc21/fc22 400->20, fc3 20->400 ReLU, fc4 400->784 sigmoid; loss = BCE(sum) + KL; Adam lr
1e-3; batch 128; a DataLoader over a shuffled dataset; the test loss is the summed loss over the
test set divided by its size. It is written here from that description, not copied.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common import training, vae
from common.machinery import data

EPOCHS = 10


class ExampleVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def example_loss(recon, x, mu, logvar):
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def train_reference(x_train, x_test, seed):
    """PyTorch's example recipe: DataLoader, summed loss, Adam 1e-3, batch 128."""
    torch.manual_seed(seed)
    ref = ExampleVAE()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x_train), batch_size=128, shuffle=True)
    for _ in range(EPOCHS):
        for (x,) in loader:
            opt.zero_grad()
            recon, mu, logvar = ref(x)
            example_loss(recon, x, mu, logvar).backward()
            opt.step()
    total = 0.0
    with torch.no_grad():
        for xb in x_test.split(1000):
            recon, mu, logvar = ref(xb)
            total += example_loss(recon, xb, mu, logvar).item()
    return total / len(x_test)


@pytest.mark.slow
def test_our_mlp_vae_is_at_least_as_good_as_the_pytorch_example():
    train, test = data.load_dataset("fashion_mnist", "train"), data.load_dataset("fashion_mnist", "test")
    refs = [train_reference(train[:][0], test[:][0], seed) for seed in (0, 1)]

    torch.manual_seed(0)
    ours = vae.MLPVAE((1, 28, 28), 20, 400)
    opt = torch.optim.Adam(ours.parameters(), lr=1e-3)
    training.train(vae.vae_step(ours, opt), train.batches(128, seed=0), EPOCHS)
    ours_test = training.evaluate(lambda x, y: ours.loss(x), test.batches(1000, shuffle=False), ours)["loss"]

    spread = abs(refs[0] - refs[1])
    print(f"\ntest -ELBO after {EPOCHS} epochs (nats/image): PyTorch example recipe, seeds 0 and 1: "
          f"{refs[0]:.3f}, {refs[1]:.3f}; ours: {ours_test:.3f}")
    # "At least as good", up to the seed-to-seed spread of the reference recipe itself.
    assert ours_test <= sum(refs) / 2 + spread
