"""Keep the code a notebook teaches identical to the library's copy (DESIGN rule 1).

A code cell whose first line is ``#@save common/<module>.py`` holds top-level definitions
(functions, classes, constants) that the module also defines, word for word: the notebook runs its
own copy (a learner who edits the cell changes that notebook's run), and later notebooks and
``tools/`` import the module's. The cell is the marker line followed by the definitions, in the
cell's order, separated by two blank lines, exactly as the module's source has them.

    .venv/bin/python -m tools.sync_cells            # check: list every difference, exit 1 if any
    .venv/bin/python -m tools.sync_cells --write    # library -> notebooks (after editing common/)
    .venv/bin/python -m tools.sync_cells --pull     # notebooks -> library (after editing a cell)

``tests/test_cells.py`` runs the check, so a cell and its library definition cannot drift apart.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from common.machinery.runtime import REPO_ROOT

MARKER = re.compile(r"^#@save (common/[\w/]+\.py)\s*$")


@dataclass
class SavedCell:
    """One ``#@save`` cell: where it is, the module it copies, and the names it defines."""

    notebook: Path
    index: int
    module: Path
    names: list[str]
    source: str


def _defined(node: ast.stmt) -> str | None:
    """The name a top-level statement defines (def, class, ``NAME = ...``), else None."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and len(targets) == 1 and isinstance(targets[0], ast.Name):
        return targets[0].id
    return None


def _start(node: ast.stmt) -> int:
    """First line of a definition, its decorators included (1-based)."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def definitions(source: str, where: str) -> dict[str, tuple[int, int]]:
    """``{name: (first line, last line)}`` (0-based, inclusive) of every top-level definition."""
    out = {}
    for node in ast.parse(source, where).body:
        name = _defined(node)
        if name is not None:
            out[name] = (_start(node) - 1, node.end_lineno - 1)
    return out


def saved_cells(notebook: Path) -> list[SavedCell]:
    """The ``#@save`` cells of a notebook, with the names each defines (in order)."""
    cells = []
    for i, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        first, _, body = cell.source.partition("\n")
        match = MARKER.match(first) if cell.cell_type == "code" else None
        if match is None:
            continue
        tree = ast.parse(body, f"{notebook.name} cell {i}")
        names = [_defined(node) for node in tree.body]
        if None in names:
            bad = tree.body[names.index(None)]
            raise ValueError(f"{notebook.name} cell {i}: line {bad.lineno + 1} is not a definition; a #@save "
                             "cell holds only definitions (def, class, NAME = ...)")
        cells.append(SavedCell(notebook, i, REPO_ROOT / match.group(1), names, cell.source))
    return cells


def library_text(cell: SavedCell) -> str:
    """What the cell should read: its marker and the module's source of each of its names."""
    source = cell.module.read_text()
    lines, spans = source.splitlines(), definitions(source, str(cell.module))
    missing = [n for n in cell.names if n not in spans]
    if missing:
        raise ValueError(f"{cell.notebook.name} cell {cell.index} defines {', '.join(missing)}, which "
                         f"{cell.module.relative_to(REPO_ROOT)} does not (add it there, or run --pull)")
    parts = ["\n".join(lines[a:b + 1]) for a, b in (spans[n] for n in cell.names)]
    return cell.source.partition("\n")[0] + "\n" + "\n\n\n".join(parts)


def differences(notebooks: list[Path]) -> list[str]:
    """One unified diff per ``#@save`` cell that differs from the library (library first)."""
    out = []
    for nb in notebooks:
        for cell in saved_cells(nb):
            want = library_text(cell)
            if want != cell.source:
                diff = difflib.unified_diff(want.splitlines(), cell.source.splitlines(),
                                            str(cell.module.relative_to(REPO_ROOT)), f"{nb.name} cell {cell.index}",
                                            lineterm="")
                out.append("\n".join(diff))
    return out


def write(notebooks: list[Path]) -> int:
    """Library -> notebooks: rewrite every differing cell's source (outputs are kept)."""
    changed = 0
    for nb_path in notebooks:
        nb = nbformat.read(nb_path, as_version=4)
        cells = saved_cells(nb_path)
        for cell in cells:
            want = library_text(cell)
            if nb.cells[cell.index].source != want:
                nb.cells[cell.index].source = want
                changed += 1
        if cells:
            nbformat.write(nb, nb_path)
    return changed


def pull(notebooks: list[Path]) -> int:
    """Notebooks -> library: replace each module definition with the cell's version of it."""
    changed = 0
    for nb in notebooks:
        for cell in saved_cells(nb):
            body = cell.source.partition("\n")[2]
            cell_spans, body_lines = definitions(body, f"{nb.name} cell {cell.index}"), body.splitlines()
            for name in cell.names:
                source = cell.module.read_text()
                lines, spans = source.splitlines(), definitions(source, str(cell.module))
                a, b = cell_spans[name]
                new = body_lines[a:b + 1]
                if name not in spans:
                    raise ValueError(f"{name} is not defined in {cell.module}; add it there first")
                start, end = spans[name]
                if lines[start:end + 1] != new:
                    lines[start:end + 1] = new
                    cell.module.write_text("\n".join(lines) + "\n")
                    changed += 1
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="copy the library's definitions into the cells")
    mode.add_argument("--pull", action="store_true", help="copy the cells' definitions into the library")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    if args.write:
        print(f"{write(notebooks)} cells rewritten from the library")
        return 0
    if args.pull:
        print(f"{pull(notebooks)} library definitions rewritten from the notebooks")
        return 0
    diffs = differences(notebooks)
    print("\n\n".join(diffs) if diffs else "every #@save cell matches the library")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
