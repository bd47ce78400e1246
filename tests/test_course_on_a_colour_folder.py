"""The whole course on a colour folder of images (3x64x64), as a teacher runs it on their own
pictures: first a domain classifier for the folder (``tools.train_domain_classifier``, the README's
advice), then every notebook in the smoke profile with ``DGM_DATASET=image_folder:PATH``.

Its own file, so that ``pytest -n 2 --dist loadfile`` runs it beside ``test_notebooks.py``.
"""
import pytest
from test_notebooks import run_notebooks, write_shapes

from common.machinery import features


@pytest.mark.long
def test_the_whole_course_runs_on_a_colour_image_folder(tmp_path, monkeypatch):
    write_shapes(tmp_path / "shapes")
    dataset = f"image_folder:{tmp_path / 'shapes'}"
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    from tools import train_domain_classifier
    record = train_domain_classifier.ship(dataset)
    assert (tmp_path / record["file"]).is_file() and record["test_accuracy"] > 0.5   # discs, squares, triangles
    result = run_notebooks(["01_vae", "02_vq_vae", "03_dcgan", "04_conditional_gan", "05_fid"], dataset, tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    names = {p.name.split("-image_folder")[0] for p in (tmp_path / "checkpoints" / "smoke").glob("*.pt")}
    assert {"vae_conv", "vqvae_gmm_prior", "dcgan_generator", "cwgan_gp_generator"} <= names
    assert features.domain_weights(record["dataset"]).is_file()                     # what notebook 05 used
