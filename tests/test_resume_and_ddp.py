"""Resumable training (common.machinery.resume): a run killed between saves and started again
ends with bitwise the weights and optimizer state of a run never stopped (CPU, same seed)."""
import copy

import pytest
import torch

from common import training
from common.ema import EMA
from common.machinery import data, resume
from common.machinery.checkpoint_checks import CheckpointError


class Killed(Exception):
    pass


def _run(path, kill_at=None, init_seed=0, config=None):
    torch.manual_seed(init_seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.Dropout(0.2),
                                torch.nn.Linear(16, 784))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ema = EMA.__new__(EMA)                     # an EMA of a plain module (EMA's own code, no GenerativeModel needed)
    ema.source, ema.decay, ema.updates = model, 0.9, 0
    ema.model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    images = data.TensorData(torch.rand(64, 1, 28, 28, generator=g), torch.zeros(64, dtype=torch.long))
    batches = images.batches(16, seed=0)
    count = [0]

    def step(x, y):
        count[0] += 1
        if count[0] == kill_at:
            raise Killed
        out = training.minimize(lambda x, y: {"loss": ((model(x) + torch.randn_like(x.flatten(1)) * 0.1
                                                          - x.flatten(1)) ** 2).mean()}, opt)(x, y)
        ema.update()
        return out

    state = resume.Resume(path, config or {"lr": 1e-3}, {"model": model}, {"opt": opt}, {"ema": ema}, every=3)
    torch.manual_seed(123)
    resume.train(step, batches, 3, state, desc="t")
    return model, opt, ema


def _same(a, b):
    for (k, x), y in zip(a[0].state_dict().items(), b[0].state_dict().values()):
        assert torch.equal(x, y), k
    for (k, x), y in zip(a[2].model.state_dict().items(), b[2].model.state_dict().values()):
        assert torch.equal(x, y), k
    sa, sb = a[1].state_dict()["state"], b[1].state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)


@pytest.mark.parametrize("kill_at", [2, 5, 8, 11])   # before the first save, mid-epoch, at an epoch's end, late
def test_killed_and_resumed_equals_uninterrupted(tmp_path, kill_at):
    whole = _run(tmp_path / "whole.pt")
    with pytest.raises(Killed):
        _run(tmp_path / "cut.pt", kill_at=kill_at)
    # after a save, other initial weights: all must come from the file (before one, the run starts afresh)
    resumed = _run(tmp_path / "cut.pt", init_seed=7 if kill_at > 3 else 0)
    _same(whole, resumed)


def test_resume_file_of_another_config_is_refused(tmp_path):
    _run(tmp_path / "r.pt")
    with pytest.raises(CheckpointError, match=r"r\.pt.*another config.*lr"):
        _run(tmp_path / "r.pt", config={"lr": 2e-3})
