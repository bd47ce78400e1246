"""Resumable training (common.machinery.resume): a run killed between saves and started again
ends with bitwise the weights and optimizer state of a run never stopped (CPU, same seed); and
tools/pretrain.py killed with SIGKILL at a random moment and run again ends where a run never
killed ends."""
import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]


def _pretrain(runs, out, extra=()):
    return [sys.executable, "-m", "tools.pretrain", "--only", "cdcgan_generator", "--epochs", "2", "--limit", "384",
            "--save-every", "4", "--threads", "1", "--fid-n", "50", "--per-class", "2", "--runs", str(runs),
            "--out", str(out), *extra]


def _final_weights(runs):
    payload = torch.load(Path(runs) / "long-cpu" / "cdcgan_generator.pt", weights_only=True)
    return payload["steps"], payload["models"], payload["emas"]["G"]["model"], payload["optimizers"]


@pytest.mark.long
def test_pretrain_killed_by_sigkill_at_a_random_moment_resumes_to_the_uninterrupted_weights(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(_pretrain(tmp_path / "whole", tmp_path / "out1"), cwd=ROOT, env=env, check=True,
                   capture_output=True)
    cut = tmp_path / "cut" / "long-cpu" / "cdcgan_generator.pt"
    proc = subprocess.Popen(_pretrain(tmp_path / "cut", tmp_path / "out2"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not cut.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first save: make it longer"
    time.sleep(random.Random().uniform(0.0, 1.0))        # anywhere after the first save, mid-write included
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_at_kill = torch.load(cut, weights_only=True)["steps"]
    done = subprocess.run(_pretrain(tmp_path / "cut", tmp_path / "out2"), cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    assert "Resumed from" in done.stdout
    whole, resumed = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "cut")
    assert whole[0] == resumed[0] == 2 * 6 and steps_at_kill <= whole[0]      # 384 images / batch 64, 2 epochs
    _equal(whole[1:], resumed[1:])
    assert not list(cut.parent.glob("*.tmp*")), "a temporary file was left behind"
    runs = resume.sessions(cut)                     # the killed run and the one that finished it
    assert runs[0] == {"device": "cpu", "from_step": 0, "to_step": steps_at_kill}
    if steps_at_kill < 12:                          # (killed after its last step: nothing left to train)
        assert runs[1:] == [{"device": "cpu", "from_step": steps_at_kill, "to_step": 12}]
    entry = json.loads((tmp_path / "out2" / "manifest.json").read_text())["models"]
    assert entry["cdcgan_generator-fashion_mnist-1x28x28"]["sessions"]["cdcgan_generator"] == runs


def _equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


WORKER = r'''
import sys
sys.path.insert(0, sys.argv[1])
import torch
from common import classifiers
from common.machinery import distributed

ctx = distributed.setup(torch.device("cpu"))
torch.manual_seed(0 if ctx.rank == 0 else 99)           # other weights on rank 1: broadcast must fix them
model = classifiers.MLPClassifier((1, 28, 28), 10, hidden=32)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
distributed.broadcast_weights(ctx, model)
distributed.average_gradients(ctx, opt)
g = torch.Generator().manual_seed(1)
x, y = torch.rand(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
for xs, ys in distributed.shard([(x, y)], ctx):
    opt.zero_grad()
    model.loss(xs, ys)["loss"].backward()
    opt.step()
torch.save({"rank": ctx.rank, "world": ctx.world, "shard": len(xs), "weights": model.state_dict()},
           f"{sys.argv[2]}/rank{ctx.rank}.pt")
distributed.finish(ctx)
'''


GLOO_TEARDOWN = "terminate called without an active exception"


def _torchrun(args, cwd, timeout=240):
    """Two processes under torchrun. Seen 2 times in about 40 runs here, only under pytest: a process
    aborting with gloo's GLOO_TEARDOWN message (a known race in PyTorch's gloo shutdown, not in the
    course's code); such a run is started once more, and said so, rather than failing the test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode and GLOO_TEARDOWN in done.stderr:
        print(f"gloo aborted at teardown; run again once:\n{done.stderr[-1500:]}")
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return done


@pytest.mark.long
def test_two_gloo_processes_average_gradients_to_a_single_process_step_on_the_combined_batch(tmp_path):
    from common import classifiers
    (tmp_path / "worker.py").write_text(WORKER)
    done = _torchrun([str(tmp_path / "worker.py"), str(ROOT), str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["shard"] for r in ranks] == [4, 4]
    torch.manual_seed(0)                                  # one process, the whole batch of 8
    model = classifiers.MLPClassifier((1, 28, 28), 10, hidden=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.loss(x, y)["loss"].backward()
    opt.step()
    for key, single in model.state_dict().items():
        assert torch.equal(ranks[0]["weights"][key], ranks[1]["weights"][key]), key    # one step, everywhere
        assert not torch.equal(single, before[key]), key
        torch.testing.assert_close(ranks[0]["weights"][key], single, rtol=0, atol=1e-6)


@pytest.mark.long
def test_pretrain_under_torchrun_with_two_processes_trains_and_only_rank_0_writes(tmp_path):
    done = _torchrun(["-m", "tools.pretrain", "--only", "dcgan_generator", "--epochs", "1", "--limit", "256",
                      "--fid-n", "50", "--no-curve", "--threads", "1", "--save-every", "2",
                      "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")], ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("dcgan_generator: 1 epochs") == 1, done.stdout     # measured and written once
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["models"]["dcgan_generator-fashion_mnist-1x28x28"]
    assert entry["processes"] == 2 and entry["steps"] == 2                    # 256 images, batches of 128
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["dcgan_generator-fashion_mnist-1x28x28.pt", "manifest.json"], files
    assert [p.name for p in (tmp_path / "runs" / "long-cpu").iterdir()] == ["dcgan_generator.pt"]


def test_one_process_needs_nothing_new_and_changes_nothing(monkeypatch):
    from common.machinery import distributed
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.setup(torch.device("cpu"))
    assert (ctx.rank, ctx.world, ctx.main, ctx.parallel) == (0, 1, True, False)
    batches = [(torch.zeros(4, 1), torch.zeros(4))]
    assert distributed.shard(batches, ctx) is batches
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    step = opt.step
    distributed.average_gradients(ctx, opt)
    assert opt.step == step                               # not wrapped


def test_a_shard_keeps_every_world_th_row_of_each_batch_and_the_order_generator():
    from common.machinery import data, distributed
    images = data.TensorData(torch.arange(12.0).view(12, 1, 1, 1), torch.arange(12))
    batches = images.batches(6, seed=0)
    full = [y for _, y in batches]
    shards = [distributed.Shard(images.batches(6, seed=0), distributed.Context(r, 3)) for r in range(3)]
    got = [[y for _, y in s] for s in shards]
    for i, ys in enumerate(full):
        assert sorted(torch.cat([g[i] for g in got]).tolist()) == sorted(ys.tolist())
        assert got[1][i].tolist() == ys[1::3].tolist()
    assert shards[0].generator is not None and len(shards[0]) == 2


def _notebook_run(epochs, steps_run, lr=1e-3, seed=0):
    """A notebook cell: model, optimizer, config, a resumable run, fit_or_load (reuse on)."""
    from common import classifiers
    torch.manual_seed(seed)
    model = classifiers.MLPClassifier((1, 28, 28), 10, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    images = data.TensorData(torch.rand(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g))
    config = dict(model.hparams, epochs=epochs, lr=lr)
    state = resume.beside("clf", config, {"model": model}, {"opt": opt})
    minimize = training.minimize(model.loss, opt)

    def step(x, y):
        steps_run.append(1)
        return minimize(x, y)

    run = lambda: resume.train(step, images.batches(16, seed=0), epochs, state, desc="clf")
    return training.fit_or_load("clf", model, config, run, reuse=True)


def test_a_notebook_asking_for_more_epochs_trains_only_the_epochs_added_and_matches_a_straight_run(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "a"))
    steps = []
    _notebook_run(2, steps)
    assert len(steps) == 6                                 # 48 images, batches of 16, 2 epochs
    more, history = _notebook_run(5, steps)
    assert len(steps) == 6 + 9 and history.n_epochs == 5  # only the 3 epochs added
    assert "5 epochs replace the checkpoint of 2" in capsys.readouterr().out
    again, _ = _notebook_run(5, steps)
    assert len(steps) == 15                                # reused, nothing trained
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "b"))
    straight, _ = _notebook_run(5, [])
    for (key, a), b in zip(more.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), key
    assert not [p for p in (tmp_path / "a").rglob("*") if ".replaced" in p.name]


def test_a_notebook_asking_for_fewer_epochs_or_another_config_starts_afresh_and_keeps_the_old_resume_file(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    _notebook_run(3, [])
    steps = []
    _notebook_run(2, steps)
    assert len(steps) == 6 and "holds 3 epochs, more than the 2 asked" in capsys.readouterr().out
    steps = []
    _notebook_run(2, steps, lr=2e-3)
    out = capsys.readouterr().out
    assert len(steps) == 6 and "another config (differs in: lr)" in out
    assert len([p for p in tmp_path.rglob("*.resume.pt.replaced-*")]) == 2
