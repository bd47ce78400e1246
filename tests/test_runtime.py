import torch

from common import runtime


def test_smoke_switch(monkeypatch):
    monkeypatch.delenv("DGM_SMOKE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert runtime.smoke_mode() is False
    monkeypatch.setenv("CI", "true")
    assert runtime.smoke_mode() is True
    monkeypatch.setenv("CI", "false")
    assert runtime.smoke_mode() is False
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("DGM_SMOKE", "0")  # explicit switch wins over CI
    assert runtime.smoke_mode() is False
    monkeypatch.delenv("CI")
    monkeypatch.setenv("DGM_SMOKE", "1")
    assert runtime.smoke_mode() is True


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    assert runtime.data_dir() == tmp_path.resolve()
    assert runtime.checkpoint_dir(smoke=False) == tmp_path.resolve() / "checkpoints"
    assert runtime.checkpoint_dir(smoke=True) == tmp_path.resolve() / "checkpoints" / "smoke"
    monkeypatch.delenv("DGM_DATA_DIR")
    assert runtime.data_dir() == runtime.REPO_ROOT / "data"


def test_setup_seeds_and_picks_device(capsys):
    rt = runtime.setup(seed=5)
    a = torch.rand(3)
    runtime.setup(seed=5, verbose=False)
    assert torch.equal(a, torch.rand(3))
    assert rt.device.type in {"cpu", "cuda", "mps"}
    assert "device:" in capsys.readouterr().out
    assert runtime.get_device("cpu") == torch.device("cpu")
