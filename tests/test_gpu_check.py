"""tools/gpu_check.py: its workload table is what the notebooks' gpu profile trains, and a short
CPU run measures every step, predicts every notebook, trains and saves the DCGAN, stays within its
budget and says that its numbers are not a GPU's; a budget too small for everything skips, and
says what it skipped."""
import ast
import json
import time
from dataclasses import dataclass

import nbformat
import pytest
import torch

from common import recipes
from common.machinery import data, dsprites, pretrained, runtime
from tools import gpu_check

FAST = ["--device", "cpu", "--steps", "1", "--repeats", "1", "--warmup", "0", "--no-colour"]


@pytest.fixture
def one_thread():
    """One CPU thread: a light load, and no slowdown when another process holds the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gpu_config(notebook: str, monkeypatch):
    """The notebook's config as its own config cell builds it with DGM_PROFILE=gpu."""
    monkeypatch.setenv("DGM_PROFILE", "gpu")
    monkeypatch.delenv("DGM_DATASET", raising=False)
    cells = nbformat.read(runtime.REPO_ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4).cells
    source = next(c.source for c in cells if c.cell_type == "code" and "PROFILES = {" in c.source)
    rt = runtime.setup(seed=0, device="cpu", verbose=False)
    namespace = {"dataclass": dataclass, "runtime": runtime, "rt": rt,
                 "CDCGAN": recipes.CDCGAN, "WGANGP": recipes.WGANGP}   # notebook 04 defines these above its config
    exec(source, namespace)
    assert rt.profile == "gpu"
    return namespace["cfg"]


@pytest.mark.parametrize("notebook", gpu_check.NOTEBOOKS)
def test_the_workload_is_built_from_the_notebooks_gpu_profile(notebook, monkeypatch):
    cfg = gpu_config(notebook, monkeypatch)
    for field, value in gpu_check.GPU_PROFILE[notebook].items():
        assert getattr(cfg, field) == value, f"{notebook}: gpu profile's {field} is {getattr(cfg, field)!r}, " \
                                             f"tools/gpu_check.py assumes {value!r}"


def test_the_dataset_sizes_of_the_workload():
    assert len(data.load_dataset("fashion_mnist", "train")) == gpu_check.FASHION_TRAIN
    assert len(data.load_dataset("fashion_mnist", "test")) == gpu_check.FASHION_TEST
    assert len(dsprites.split_indices("train")) == gpu_check.DSPRITES_TRAIN
    # every notebook trains at least one full-size run, and every part names a rate that is measured
    measured = {gpu_check.key(m, s) for m, s in gpu_check.DEFAULT_STEPS} | set(gpu_check.FEATURES)
    for notebook, parts in gpu_check.workload().items():
        assert {k for _, k, _ in parts} <= measured, notebook
        assert max(images for _, _, images in parts) >= gpu_check.FASHION_TRAIN, notebook


def test_notebook_05s_leaderboard_has_the_models_the_workload_counts():
    cells = nbformat.read(runtime.REPO_ROOT / "notebooks" / "05_fid.ipynb", as_version=4).cells
    source = next(c.source for c in cells if c.cell_type == "code" and c.source.startswith("MODELS = ["))
    rows = ast.literal_eval(ast.parse(source).body[0].value)       # (name, checkpoint, notebook, timed)
    ranked = [n for n in pretrained.names() if "dsprites" not in n]   # notebook 01's dSprites VAE is not ranked
    assert gpu_check.LEADERBOARD == 2 * len(rows) == 2 * len(ranked)   # yours and pretrained
    assert gpu_check.CONDITIONAL == 2 * sum(notebook == "04_conditional_gan" for _, _, notebook, _ in rows)


def test_a_cpu_run_measures_predicts_trains_and_saves_within_its_budget(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "data"))   # FID statistics are cached there, not in data/
    budget, out = 60, tmp_path / "out"
    start = time.monotonic()
    report = gpu_check.main([*FAST, "--budget-s", str(budget), "--inception-batch", "2", "--train-limit", "256",
                             "--fid-n", "100", "--max-epochs", "2", "--out", str(out)])
    took = time.monotonic() - start
    saved = json.loads((out / "gpu_check.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert took <= budget and saved["elapsed_s"] <= budget and saved["budget_respected"]
    assert saved["gpu"] is False and "NOT GPU NUMBERS" in saved["note"] and saved["device"] == "cpu"

    for k, r in {**saved["steps"], **saved["features"]}.items():
        if k.endswith("@3x64x64"):
            assert r == {"skipped": "--no-colour"}
            continue
        assert r.get("images_per_s", 0) > 0 and r["peak_mib"] is None, (k, r)   # no CUDA: no memory peak
    assert saved["steps"]["dcgan@1x28x28"]["width"] == 64 and saved["steps"]["dcgan@1x28x28"]["batch_size"] == 128
    assert saved["steps"]["cwgan_gp@1x28x28"]["batch_size"] == recipes.WGANGP().batch_size
    assert saved["features"]["inception"]["batch_size"] == 2               # Inception was measured, on 2 images

    assert set(saved["predictions"]) == set(gpu_check.NOTEBOOKS)
    table = {nb: [dict(zip(("what", "measured", "images"), part)) for part in parts]
             for nb, parts in gpu_check.workload().items()}
    assert saved["workload"] == json.loads(json.dumps(table))
    rates = {k: r["images_per_s"] for k, r in {**saved["steps"], **saved["features"]}.items() if "skipped" not in r}
    for notebook, p in saved["predictions"].items():
        assert p["complete"] and p["seconds"] > 0, notebook
        assert p["seconds"] == pytest.approx(sum(part["images"] / rates[part["measured"]] for part in p["parts"]))
    assert saved["predictions"]["05_fid"]["features_s"] > 0 and saved["predictions"]["05_fid"]["training_s"] == 0

    t = saved["training"]
    assert t["epochs"] == 2 and t["n_train"] == 256 and t["recipe"]["channels"] == 64
    assert t["metrics"]["fid_domain"] > 0 and t["metrics"]["fid_n"] == 100
    model, entry = pretrained.load("dcgan_generator-fashion_mnist-1x28x28", directory=out)   # hash-checked
    assert entry["epochs"] == 2 and model.sample(3).shape == (3, 1, 28, 28)
    assert not any((runtime.SHIPPED_DIR / "pretrained").glob("*gpu_check*"))


def test_what_does_not_fit_in_the_budget_is_skipped_and_said(tmp_path, one_thread):
    budget = 4                                    # less the 2 s margin: 2 s to measure, not enough for all
    report = gpu_check.main([*FAST, "--budget-s", str(budget), "--no-inception", "--no-train",
                             "--out", str(tmp_path)])
    assert report["elapsed_s"] <= budget and "training" not in report
    skipped = [k for k, r in report["steps"].items() if "skipped" in r and not k.endswith("@3x64x64")]
    assert skipped, "a 4 s budget cannot hold every step at gpu sizes on a CPU"
    for k in skipped:
        assert "no time left" in report["steps"][k]["skipped"] or "were left" in report["steps"][k]["skipped"]
    incomplete = {nb for nb, p in report["predictions"].items() if not p["complete"]}
    assert incomplete and all(report["predictions"][nb]["missing"] for nb in incomplete)
    assert "not measured" in gpu_check.render(report)


def test_a_budget_with_no_time_for_an_epoch_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "data"))
    clock = gpu_check.Clock(budget_s=1)
    args = type("Args", (), dict(train_limit=256, fid_n=100, max_epochs=None, budget_s=1))()
    rates = {"dcgan@1x28x28": 10.0, "domain": 1e4}               # 10 images/s: an epoch of 256 takes 26 s
    result = gpu_check.train_dcgan(torch.device("cpu"), clock, tmp_path, args, rates)
    assert result["skipped"].startswith("no time for one epoch") and not list(tmp_path.glob("*.pt"))
