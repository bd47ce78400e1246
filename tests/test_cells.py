"""One source of truth: the code each notebook teaches is written in its own ``#@save`` cells, and
those cells are identical to the library's definitions (tools/sync_cells.py)."""
import re
import shutil

import nbformat
import pytest

from common.machinery.runtime import REPO_ROOT
from tools import sync_cells

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))

# What each notebook must write itself (DESIGN rule 1; issue 24's list).
TAUGHT = {
    "01_vae": ["reparameterize", "gaussian_kl", "bernoulli_nll", "gaussian_nll", "VAE", "vae_step"],
    "02_vq_vae": ["VectorQuantizer", "reinit_dead_codes", "GMMPriorSampler"],
    "03_dcgan": ["DCGANGenerator", "DCGANDiscriminator", "d_loss_bce", "g_loss_nonsaturating", "dcgan_step"],
    "04_conditional_gan": ["ConditionalGenerator", "gradient_penalty", "wgan_gp_step", "EMA"],
    "05_fid": ["frechet_distance", "trace_sqrt_product"],
}


def test_every_saved_cell_is_identical_to_the_library():
    diffs = sync_cells.differences(NOTEBOOKS)
    assert not diffs, ("a #@save cell differs from its library definition; run `python -m tools.sync_cells "
                       "--write` (library -> notebooks) or `--pull` (notebooks -> library):\n" + "\n\n".join(diffs))


def test_the_check_fails_when_a_cell_and_the_library_differ_and_write_mends_it(tmp_path):
    source = REPO_ROOT / "notebooks" / "03_dcgan.ipynb"
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    nb = nbformat.read(copy, as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("#@save"))
    cell.source = cell.source.replace("(", "( ", 1)               # a learner's edit
    nbformat.write(nb, copy)
    (diff,) = sync_cells.differences([copy])
    assert diff.startswith("--- common/") and "+++ 03_dcgan.ipynb cell" in diff
    assert sync_cells.write([copy]) == 1 and sync_cells.differences([copy]) == []


def test_each_notebook_writes_the_code_it_teaches_in_short_cells():
    for path in NOTEBOOKS:
        cells = sync_cells.saved_cells(path)
        written = {name for cell in cells for name in cell.names}
        missing = [n for n in TAUGHT[path.stem] if n not in written]
        assert not missing, f"{path.name} does not write {missing} in a #@save cell"
        long = [(c.index, c.source.count("\n") + 1) for c in cells if c.source.count("\n") + 1 > 40]
        assert not long, f"{path.name}: #@save cells over 40 lines (cell, lines): {long}"


def test_after_writing_a_definition_the_notebook_uses_its_own_copy():
    """A learner who edits the cell must change the notebook's run: no later cell reaches past it
    to the library's copy (``vae.reparameterize`` after the cell that defines ``reparameterize``)."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in sync_cells.saved_cells(path):
            module = cell.module.stem
            for later in nb.cells[cell.index + 1:]:
                if later.cell_type != "code":
                    continue
                used = [n for n in cell.names if re.search(rf"\b{module}\.{n}\b", later.source)]
                assert not used, f"{path.name}: a cell after {cell.index} uses {module}.{used[0]}, not its own copy"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_prints_library_source(path):
    nb = nbformat.read(path, as_version=4)
    assert not [c for c in nb.cells if c.cell_type == "code" and "plots.source(" in c.source]
