"""The notebooks beyond their default run: committed outputs are clean, and the course also runs
(in the smoke profile) on 64x64 dSprites and on a colour folder of images
(``test_course_on_a_colour_folder.py``), the way a teacher would run it:
``DGM_DATASET=... pytest --nbval-lax notebooks/...``.

These runs only have to execute each path once, so ``DGM_CONFIG`` shrinks what costs time without
removing a path: 512 training images instead of the smoke profile's 2,048, and N = 32 samples per
FID instead of 200 (FIDs on dSprites use Inception-v3: no domain classifier is trained for it).
"""
import json
import os
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.machinery.runtime import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_set_up_first_and_commit_clean_small_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        first_real = next(c for c in code if "colab-setup" not in c.metadata.get("tags", []))
        assert "runtime.setup(" in first_real.source, f"{path.name}: the first code cell must call runtime.setup"
        assert any("runtime.configure(Config, PROFILES, rt)" in c.source for c in code), \
            f"{path.name}: the config cell must show the profiles side by side"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: committed with error outputs"
        assert path.stat().st_size < 3 * 2**20, f"{path.name}: outputs too large"
        drafts = [c.source[:60] for c in nb.cells if "TO BE WRITTEN" in c.source]
        assert not drafts, f"{path.name}: placeholder prose left in: {drafts}"
        counts = [c.execution_count for c in code if c.source.strip()]
        assert None not in counts and counts == sorted(counts), f"{path.name}: not one top-to-bottom run"


def write_shapes(folder, per_class=40, seed=0):
    """A labelled folder of colour PNGs of varied sizes: red discs, green squares, blue triangles."""
    rng = np.random.default_rng(seed)
    for name, colour in [("discs", (220, 40, 40)), ("squares", (40, 200, 60)), ("triangles", (50, 80, 230))]:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 60, 3)))
            s, x, y = min(w, h) // 3, w // 2 + int(rng.integers(-5, 6)), h // 2 + int(rng.integers(-5, 6))
            draw = ImageDraw.Draw(img)
            if name == "discs":
                draw.ellipse([x - s, y - s, x + s, y + s], fill=colour)
            elif name == "squares":
                draw.rectangle([x - s, y - s, x + s, y + s], fill=colour)
            else:
                draw.polygon([(x, y - s), (x - s, y + s), (x + s, y + s)], fill=colour)
            img.save(folder / name / f"{i:03d}.png")


def run_notebooks(names, dataset, data_dir, profile="smoke", config=None):
    env = dict(os.environ, DGM_PROFILE=profile, DGM_DATASET=dataset, DGM_DATA_DIR=str(data_dir),
               DGM_CONFIG=json.dumps(config or {}))
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
           *[str(REPO_ROOT / "notebooks" / f"{n}.ipynb") for n in names]]
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)


@pytest.mark.long
def test_notebooks_01_and_03_run_on_dsprites(tmp_path):
    result = run_notebooks(["01_vae", "03_dcgan"], "dsprites", tmp_path,
                           config={"fid_n": 32, "train_limit": 512, "sprites_train": 512})
    assert result.returncode == 0, result.stdout[-6000:]
    assert list((tmp_path / "checkpoints" / "smoke").glob("dcgan_generator-dsprites_procedural-1x64x64.pt"))


@pytest.mark.long
def test_notebook_04_refuses_an_unlabelled_dataset_with_a_clear_message(tmp_path):
    for i in range(20):
        Image.new("RGB", (32, 32), (10 * i, 0, 0)).save(tmp_path / f"{i}.png")
    result = run_notebooks(["04_conditional_gan"], f"image_folder:{tmp_path}", tmp_path / "data")
    assert result.returncode != 0
    assert "has no class labels, and notebook 04 conditions its models on the class" in result.stdout
