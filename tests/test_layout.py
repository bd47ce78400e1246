"""The library reads like teaching code: the topic modules apart from the machinery, imports in one
direction, no checks inside the models' maths, every module short and saying what it is for."""
import ast

import pytest

from common.machinery.runtime import REPO_ROOT

COMMON = REPO_ROOT / "common"
TEACHING = sorted(p for p in COMMON.glob("*.py") if p.name != "__init__.py")
MACHINERY = sorted(p for p in (COMMON / "machinery").glob("*.py") if p.name != "__init__.py")
MODULES = TEACHING + MACHINERY


def _name(path):
    return str(path.relative_to(REPO_ROOT))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_every_module_is_short_and_says_what_it_is_for(path):
    source = path.read_text()
    doc = ast.get_docstring(ast.parse(source))
    assert doc and len(doc.split()) >= 8, f"{_name(path)}: no module docstring saying what it is for"
    lines = source.count("\n")
    assert lines <= 300, f"{_name(path)}: {lines} lines; split it (one sitting is ~300 lines)"


@pytest.mark.parametrize("path", TEACHING, ids=_name)
def test_teaching_modules_name_the_notebook_that_introduces_them(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert "notebooks/0" in doc or "notebook 0" in doc, f"{_name(path)}: say which notebook introduces it"


@pytest.mark.parametrize("path", MACHINERY, ids=_name)
def test_the_machinery_never_imports_the_teaching_modules_at_import_time(path):
    """Imports go one way: teaching -> machinery. (A function may import teaching code when called,
    such as the checkpoint table rebuilding a model class by name.)"""
    for node in ast.parse(path.read_text()).body:   # module level only
        if isinstance(node, ast.ImportFrom):
            target = ("." * node.level) + (node.module or "")
            assert not (node.level >= 2 or target.startswith("common") and not target.startswith("common.machinery")), \
                f"{_name(path)} imports {target} at import time"


MATHS = {"forward", "encode", "decode", "loss", "features", "score", "classify", "_sample", "reconstruct", "nearest"}


@pytest.mark.parametrize("path", TEACHING, ids=_name)
def test_no_input_check_inside_a_models_forward(path):
    """Checks sit at the doors (training's first batch, load_dataset, fid(), load), never in the maths."""
    for cls in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in MATHS):
            calls = {getattr(c.func, "id", getattr(c.func, "attr", "")) for c in ast.walk(fn) if isinstance(c, ast.Call)}
            checks = sorted(c for c in calls if c.startswith("check_"))
            assert not checks, f"{_name(path)}: {cls.name}.{fn.name} calls {checks}"
