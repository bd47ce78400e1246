import io
import re
from dataclasses import dataclass

import pytest
import torch

from common.machinery import runtime


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("DGM_PROFILE", "DGM_SMOKE", "CI", "DGM_DATASET", "DGM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return monkeypatch


def test_profile_defaults_cpu_then_gpu_with_cuda_then_smoke_under_ci(clean_env):
    assert runtime.profile() == "cpu"
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.profile() == "gpu"
    clean_env.setenv("CI", "true")
    assert runtime.profile() == "smoke"
    clean_env.setenv("CI", "false")
    assert runtime.profile() == "gpu"


def test_explicit_profile_wins_and_smoke_is_an_alias(clean_env):
    clean_env.setenv("CI", "1")
    clean_env.setenv("DGM_PROFILE", "cpu")
    assert runtime.profile() == "cpu"  # an explicit profile wins over CI
    clean_env.delenv("DGM_PROFILE")
    clean_env.setenv("DGM_SMOKE", "0")
    assert runtime.profile() == "cpu"  # DGM_SMOKE=0: not smoke, even under CI
    clean_env.delenv("CI")
    clean_env.setenv("DGM_SMOKE", "1")
    assert runtime.profile() == "smoke"
    clean_env.setenv("DGM_PROFILE", "GPU ")
    assert runtime.profile() == "gpu"
    clean_env.setenv("DGM_PROFILE", "laptop")
    with pytest.raises(ValueError, match="'laptop' is not a profile; use one of smoke, cpu, gpu"):
        runtime.profile()


def test_paths_follow_environment_and_profile(clean_env, tmp_path):
    clean_env.setenv("DGM_DATA_DIR", str(tmp_path))
    assert runtime.data_dir() == tmp_path.resolve()
    assert runtime.checkpoint_dir("cpu") == tmp_path.resolve() / "checkpoints" / "cpu"
    clean_env.setenv("DGM_PROFILE", "smoke")
    assert runtime.checkpoint_dir() == tmp_path.resolve() / "checkpoints" / "smoke"
    clean_env.delenv("DGM_DATA_DIR")
    assert runtime.data_dir() == runtime.REPO_ROOT / "data"


def test_setup_seeds_reports_and_picks_device(clean_env, capsys):
    rt = runtime.setup(seed=5)
    a = torch.rand(3)
    runtime.setup(seed=5, verbose=False)
    assert torch.equal(a, torch.rand(3))
    assert rt.device.type in {"cpu", "mps"} and rt.profile == "cpu" and not rt.smoke
    assert "profile: cpu" in capsys.readouterr().out
    assert runtime.get_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
        runtime.get_device("cuda")


@dataclass(frozen=True)
class Config:
    dataset: str = "fashion_mnist"
    epochs: int = 10
    lr: float = 1e-3
    limit: int | None = None


PROFILES = {"smoke": dict(epochs=1, limit=100), "cpu": {}, "gpu": dict(epochs=50)}


def test_configure_applies_the_profile_then_the_dataset_override(clean_env, capsys):
    rt = runtime.Runtime("smoke", torch.device("cpu"), 0, runtime.data_dir(), runtime.checkpoint_dir("smoke"))
    cfg = runtime.configure(Config, PROFILES, rt)
    assert cfg == Config(epochs=1, limit=100)
    table = capsys.readouterr().out
    assert "smoke *" in table and "epochs" in table and "limit" in table
    assert "lr" not in table  # fields no profile changes are left out
    assert runtime.configure(Config, PROFILES, rt.__class__("gpu", rt.device, 0, rt.data_dir, rt.checkpoint_dir),
                             show=False) == Config(epochs=50)
    with_override = runtime.Runtime("cpu", rt.device, 0, rt.data_dir, rt.checkpoint_dir, dataset="mnist")
    assert runtime.configure(Config, PROFILES, with_override, show=False).dataset == "mnist"


def test_configure_refuses_unknown_fields_and_profiles(clean_env):
    rt = runtime.Runtime("cpu", torch.device("cpu"), 0, runtime.data_dir(), runtime.checkpoint_dir("cpu"))
    with pytest.raises(ValueError, match=r"profile 'gpu' sets \['epoch'\], which Config does not have"):
        runtime.configure(Config, {"gpu": dict(epoch=3)}, rt)
    with pytest.raises(ValueError, match="unknown profile 'tpu'"):
        runtime.configure(Config, {"tpu": {}}, rt)


def test_dgm_config_sets_fields_on_top_of_the_profile_and_says_so(clean_env, capsys):
    rt = runtime.Runtime("smoke", torch.device("cpu"), 0, runtime.data_dir(), runtime.checkpoint_dir("smoke"))
    clean_env.setenv("DGM_CONFIG", '{"limit": 7, "lr": 0.5, "fid_n": 3}')
    assert runtime.configure(Config, PROFILES, rt) == Config(epochs=1, limit=7, lr=0.5)
    out = capsys.readouterr().out
    assert "from DGM_CONFIG: limit=7, lr=0.5 (not in this notebook's config: fid_n)" in out
    clean_env.setenv("DGM_CONFIG", '{"dataset": "mnist", "limit": [1, 2]}')
    assert runtime.configure(Config, PROFILES, rt, show=False).limit == (1, 2)  # lists become tuples
    for bad, message in [("epochs=1", "must be a JSON object"), ("[1]", "must be a JSON object"),
                         ('{"epochs": {"a": 1}}', "nested config")]:
        clean_env.setenv("DGM_CONFIG", bad)
        with pytest.raises(ValueError, match=message):
            runtime.configure(Config, PROFILES, rt, show=False)


def test_dataset_override_is_read_from_the_environment(clean_env):
    assert runtime.dataset_override() is None
    clean_env.setenv("DGM_DATASET", " dsprites ")
    assert runtime.dataset_override() == "dsprites" and runtime.setup(verbose=False).dataset == "dsprites"


def test_a_notebook_progress_bar_saves_its_final_state_not_0_percent(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", repr(obj)))

    def fake_display(obj, display_id=None):
        assert display_id is True, "the bar must be displayed with a display id, to be updated"
        shown.append(("display", repr(obj)))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(runtime, "_FinalStateBar", None)
    bar = runtime._final_state_bar()(total=5, desc="train", unit="batch")
    for _ in range(5):
        bar.update()
    bar.close()
    bar.close()  # closing twice (tqdm's __del__ does) updates once
    assert shown[0][0] == "display" and "0%" in shown[0][1]
    assert [kind for kind, _ in shown] == ["display", "update"]
    assert "100%" in shown[-1][1] and "5/5" in shown[-1][1]
    stopped = runtime._final_state_bar()(total=5, desc="interrupted")
    stopped.update(2)
    stopped.close()
    assert "40%" in shown[-1][1] and "2/5" in shown[-1][1]


def test_outside_a_notebook_the_progress_bar_is_tqdms_text_form():
    from tqdm.notebook import tqdm as notebook_tqdm

    bar = runtime.progress(total=3, desc="x", file=io.StringIO())
    assert not isinstance(bar, notebook_tqdm)
    bar.close()
    assert not isinstance(runtime.progress(total=3, disable=True), notebook_tqdm)


def test_an_executed_notebook_keeps_each_bars_final_state_as_its_text(tmp_path):
    """What GitHub shows: nbclient runs a notebook with widgets available and saves the bar's text."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from common.machinery import runtime\n"
        "with runtime.progress(total=4, desc='training', unit='batch') as bar:\n"
        "    for _ in range(4):\n"
        "        bar.update()")])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for o in outputs]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), texts
    assert any("100%" in t and "4/4" in t for t in texts), texts
    assert not any(re.search(r"(?<![0-9])0%\|", t) for t in texts), texts
