"""pytest configuration shared by the unit tests and the notebook runs (nbval).

Every notebook that pytest executes runs in the ``smoke`` profile (tiny data, few steps) unless
the caller chose a profile, e.g. ``DGM_PROFILE=cpu pytest --nbval-lax notebooks/`` runs the
course at laptop scale and ``DGM_PROFILE=gpu ...`` at full scale (``DGM_SMOKE=0`` still works too).
"""
import os

if "DGM_PROFILE" not in os.environ and "DGM_SMOKE" not in os.environ:
    os.environ["DGM_PROFILE"] = "smoke"
# Under pytest-xdist (the README's `-n 2`) each worker, and the notebook kernels it starts, gets its
# share of the cores: two workers of 2 threads each on 2 cores ran many times slower, their
# OpenMP threads waiting on each other. Set before torch is imported anywhere in the worker.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))
# Tests draw off screen; notebook kernels keep their inline backend, so nbval renders every figure
# (a figure that fails to draw fails its cell, as it would for a learner).
import matplotlib  # noqa: E402

matplotlib.use("Agg")
