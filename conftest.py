"""pytest configuration shared by the unit tests and the notebook runs (nbval).

Every notebook that pytest executes runs in smoke mode (tiny data, few steps) unless the caller
set DGM_SMOKE explicitly, e.g. `DGM_SMOKE=0 pytest --nbval-lax notebooks/` runs the full course.
"""
import os

os.environ.setdefault("DGM_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
