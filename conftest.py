"""pytest configuration shared by the unit tests and the notebook runs (nbval).

Every notebook that pytest executes runs in the ``smoke`` profile (tiny data, few steps) unless
the caller chose a profile, e.g. ``DGM_PROFILE=cpu pytest --nbval-lax notebooks/`` runs the
course at laptop scale and ``DGM_PROFILE=gpu ...`` at full scale (``DGM_SMOKE=0`` still works too).
"""
import os

if "DGM_PROFILE" not in os.environ and "DGM_SMOKE" not in os.environ:
    os.environ["DGM_PROFILE"] = "smoke"
# Tests draw off screen; notebook kernels keep their inline backend, so nbval renders every figure
# (a figure that fails to draw fails its cell, as it would for a learner).
import matplotlib  # noqa: E402

matplotlib.use("Agg")
