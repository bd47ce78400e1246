"""How long is each notebook to read? Words and sentence length of its markdown, main path and optional part.

    .venv/bin/python -m tools.prose [notebooks/01_vae.ipynb ...]

Counts words of markdown outside tables, maths (``$...$``, ``$$...$$``) and code spans, as the
course's before-stop hook does. The *main path* ends at the first markdown cell whose heading
starts with "Optional" (``## Optional: ...``); what follows is the part a learner may skip.
Prints one line per notebook and exits 1 if a main path is over its word budget
(:data:`BUDGET`) or its sentences average more than :data:`MAX_WORDS_PER_SENTENCE` words.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

#: words on each notebook's main path (issue 25: about 60 % of the words they had)
BUDGET = {"01_vae": 2700, "02_vq_vae": 1800, "03_dcgan": 1800, "04_conditional_gan": 2800, "05_fid": 2400}
MAX_WORDS_PER_SENTENCE = 22


def plain_text(markdown: str) -> str:
    """The prose of a markdown text: maths, code spans and table rows removed."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`", " ", markdown, flags=re.S)
    return re.sub(r"^\|.*\|\s*$", " ", text, flags=re.M)


def stats(markdown: str) -> tuple[int, float]:
    """(words, words per sentence) of a markdown text."""
    text = plain_text(markdown)
    words = len(text.split())
    sentences = max(1, len(re.findall(r"[.!?](\s|$)", text)))
    return words, words / sentences


def is_optional_heading(source: str) -> bool:
    return bool(re.match(r"#+\s*Optional\b", source.lstrip(), flags=re.I))


def parts(path: "str | Path") -> tuple[str, str]:
    """(main path, optional part) of a notebook's markdown."""
    nb = json.loads(Path(path).read_text())
    main, optional, in_optional = [], [], False
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        in_optional = in_optional or is_optional_heading(source)
        (optional if in_optional else main).append(source)
    return "\n".join(main), "\n".join(optional)


def report(path: "str | Path") -> tuple[str, bool]:
    """A line about one notebook, and whether its main path keeps to the budget."""
    path = Path(path)
    main, optional = parts(path)
    words, per_sentence = stats(main)
    extra, _ = stats(optional) if optional.strip() else (0, 0.0)
    budget = BUDGET.get(path.stem)
    ok = (budget is None or words <= budget) and per_sentence <= MAX_WORDS_PER_SENTENCE
    line = (f"{path.name}: main path {words} words" + (f" (budget {budget})" if budget else "")
            + f", {per_sentence:.1f} words per sentence; optional {extra} words" + ("" if ok else "  <- over"))
    return line, ok


def main(argv=None) -> int:
    paths = (argv if argv is not None else sys.argv[1:]) or sorted(Path("notebooks").glob("*.ipynb"))
    results = [report(p) for p in paths]
    for line, _ in results:
        print(line)
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
