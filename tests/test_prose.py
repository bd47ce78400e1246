"""The notebooks stay readable: each main path within its word budget, sentences short (tools/prose.py)."""
import pytest

from common.machinery.runtime import REPO_ROOT
from tools import prose


def test_optional_sections_start_at_an_optional_heading(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\nOne two three. Four five `code span words` $x + y$."),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("## Optional: a side topic\nSix seven."),
        nbformat.v4.new_markdown_cell("| a | b |\n|---|---|\nMore words here."),
    ])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    main, optional = prose.parts(path)
    assert prose.stats(main) == (8, 4.0)                  # "# Title One two three. Four five ." -> 8 words, 2 sentences
    assert prose.stats(optional)[0] == 10                 # the two table rows are not prose


@pytest.mark.parametrize("name", sorted(prose.BUDGET))
def test_each_main_path_keeps_to_its_budget(name):
    line, ok = prose.report(REPO_ROOT / "notebooks" / f"{name}.ipynb")   # from any working directory
    assert ok, line
