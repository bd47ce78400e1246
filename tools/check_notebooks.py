"""Check committed notebooks for what a reader without a kernel sees (GitHub, nbviewer, nbconvert).

    python -m tools.check_notebooks [notebooks/05_fid.ipynb ...]   # default: every notebook

Reports, per notebook: error outputs; progress bars frozen at their first state ("0%|", the text
that tqdm's widget leaves when it is saved before it finishes; ``common.machinery.runtime.progress`` saves
the final state instead); widgets whose text fallback is their Python repr ("VBox(children=...")
rather than a sentence; images drawn below their native size (the warning ``plots.use_course_style``
makes every displayed figure print under itself when an image gets less than one screen pixel per
image pixel); log axes drawn without ``plots.plain_log_ticks`` (matplotlib labels a
range inside one decade "6×10⁰"); cells not run top to bottom in one session; and outputs over the
size budget. Exits 1 when anything is found. A maintenance tool: notebooks never import it.
"""
from __future__ import annotations

import base64
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from common.plots import UNDERSIZED
from common.machinery.runtime import REPO_ROOT

FROZEN_BAR = re.compile(r"(?<![0-9])0%\|")
WIDGET_REPR = re.compile(r"^(VBox|HBox|Box|IntSlider|FloatSlider|Dropdown|Image|Output)\(")
NOTEBOOK_BUDGET = 3 * 2**20   # bytes per committed notebook
IMAGE_BUDGET = 400 * 2**10    # bytes per PNG output
LOG_AXIS = re.compile(r"""[xy]scale\s*=\s*["']log["']|set_[xy]scale\(\s*["']log["']|semilog[xy]\(|loglog\(""")


@dataclass(frozen=True)
class Finding:
    notebook: str
    cell: int
    problem: str

    def __str__(self) -> str:
        return f"{self.notebook} cell {self.cell}: {self.problem}"


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def check(path: str | Path) -> list[Finding]:
    """Everything wrong with one committed notebook, cell by cell (code cells numbered as in the file)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    name, found = path.name, []
    counts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.source.strip():
            counts.append(cell.execution_count)
        if LOG_AXIS.search(cell.source) and "plain_log_ticks" not in cell.source:
            found.append(Finding(name, i, "log axis without plots.plain_log_ticks (ticks would read like 6×10⁰)"))
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(Finding(name, i, f"error output: {out.get('ename')}: {out.get('evalue', '')[:80]}"))
                continue
            text = _text(out)
            for line in text.splitlines():
                if FROZEN_BAR.search(line):
                    found.append(Finding(name, i, f"progress bar frozen at its first state: {line.strip()[:70]!r}"))
                    break
            if UNDERSIZED in text:
                found.append(Finding(name, i, f"figure draws an image {UNDERSIZED}: {text.strip()[:90]!r}"))
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data and WIDGET_REPR.match(text.strip()):
                found.append(Finding(name, i, f"widget shows its repr to viewers without widgets: {text.strip()[:50]!r}"))
            png = data.get("image/png")
            if png and len(base64.b64decode(png)) > IMAGE_BUDGET:
                found.append(Finding(name, i, f"PNG output over {IMAGE_BUDGET // 2**10} KB"))
    if None in counts or counts != sorted(counts):
        found.append(Finding(name, 0, "not one top-to-bottom run (execution counts missing or out of order)"))
    if path.stat().st_size > NOTEBOOK_BUDGET:
        found.append(Finding(name, 0, f"file is {path.stat().st_size / 2**20:.1f} MB, over {NOTEBOOK_BUDGET // 2**20} MB"))
    return found


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or \
        sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    findings = [f for p in paths for f in check(p)]
    for f in findings:
        print(f)
    print(f"{len(findings)} finding(s) in {len(paths)} notebook(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
