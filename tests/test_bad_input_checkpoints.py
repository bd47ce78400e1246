"""Checkpoints, pretrained models and the training loop given files and values from outside (issue 27):
each test is named after what it guards. Files are real course checkpoints, altered the way a
damaged, forged or hand-edited file would be."""
import json
import zipfile

import pytest
import torch

from common import dcgan, training, vae
from common.classifiers import MLPClassifier
from common.machinery import checkpoint_checks, checkpoints, pretrained, storage


@pytest.fixture
def ckdir(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DGM_PROFILE", "cpu")
    return tmp_path / "checkpoints" / "cpu"


def classifier(seed=0):
    torch.manual_seed(seed)
    return MLPClassifier((1, 28, 28), 10, hidden=4)


def rewrite(path, change):
    """Load the checkpoint at ``path`` as plain data, let ``change(payload)`` alter it, save it back."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


@pytest.fixture
def data_reads(monkeypatch):
    """Every map_location torch.load is called with by the checkpoint module: "meta" reads no tensor
    data, anything else reads all of it."""
    calls, real = [], torch.load

    def spy(*args, **kwargs):
        calls.append(str(kwargs.get("map_location")))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "load", spy)
    return calls


# =========================================================================== zip bombs


def bomb(path, where, n_bytes):
    """Turn the checkpoint at ``path`` into a small file holding a zero tensor of ``n_bytes`` under
    ``payload[where]["junk"]``, every member deflated (torch reads deflated members): the big
    member is streamed as zeros, so the test never holds it in memory."""
    payload = torch.load(path, weights_only=True)
    payload[where]["junk"] = torch.empty(n_bytes, dtype=torch.uint8)   # never touched: no memory
    sparse = path.with_suffix(".sparse")
    with torch.serialization.skip_data():                              # declared sizes, no data
        torch.save(payload, sparse)
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(sparse) as new, \
            zipfile.ZipFile(path.with_suffix(".bomb"), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        kept = {info.filename.split("/", 1)[1]: info.filename for info in old.infolist()}
        for info in new.infolist():
            inner = info.filename.split("/", 1)[1]
            if info.file_size >= n_bytes:                              # the junk: zeros, 1 MB at a time
                with out.open(info.filename, "w", force_zip64=True) as f:
                    for start in range(0, n_bytes, 1 << 20):
                        f.write(bytes(min(1 << 20, n_bytes - start)))
            else:                                                      # the rest: the real file's data
                out.writestr(info.filename, old.read(kept[inner]) if inner in kept and inner != "data.pkl"
                             else new.read(info.filename))
    sparse.unlink()
    path.with_suffix(".bomb").replace(path)
    return path


@pytest.mark.parametrize("where, key", [("extra", "extra['junk']"), ("state_dict", "unexpected junk")])
def test_a_deflated_tensor_bomb_is_refused_from_the_zip_directory_before_any_tensor_is_read(ckdir, data_reads,
                                                                                          where, key):
    path = bomb(checkpoints.save_checkpoint(classifier(), "bomb"), where, 150 << 20)   # over EXTRA_BYTES
    assert path.stat().st_size < 1 << 20                               # 157 MB declared in under 1 MB
    data_reads.clear()
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_checkpoint("bomb")
    message = str(err.value)
    assert str(path) in message and key in message and "157.3 MB" in message and "Delete" in message
    assert all(where == "meta" for where in data_reads), f"tensor data was read: {data_reads}"


def test_a_tensor_record_that_declares_more_bytes_than_its_tensor_needs_is_refused_before_reading(ckdir,
                                                                                              data_reads):
    path = checkpoints.save_checkpoint(classifier(), "hidden", {})
    big = path.with_suffix(".big")
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for info in old.infolist():
            if info.filename.endswith("/data/0"):                      # the first weight's record: 50 MB
                out.writestr(info.filename, bytes(50 << 20))
            else:
                out.writestr(info.filename, old.read(info.filename))
    big.replace(path)
    data_reads.clear()
    with pytest.raises(checkpoints.CheckpointError, match=r"declare 52.4 MB of tensor data.*need 12.8 kB"):
        checkpoints.load_checkpoint("hidden")
    assert all(where == "meta" for where in data_reads), f"tensor data was read: {data_reads}"


def test_an_oversized_pickle_is_refused_from_the_zip_directory_before_it_is_read(ckdir, monkeypatch, data_reads):
    checkpoints.save_checkpoint(classifier(), "pickle", {})
    monkeypatch.setattr(checkpoint_checks, "PICKLE_BYTES", 100)        # a course pickle is > 100 bytes
    data_reads.clear()
    with pytest.raises(checkpoints.CheckpointError, match=r"pickle\.pt.*data\.pkl declares \d+ B.*at most 100 B"):
        checkpoints.load_checkpoint("pickle")
    assert data_reads == []


def test_extras_over_their_bound_are_refused_naming_the_key(ckdir, monkeypatch):
    history = {"snapshots": {"1": torch.zeros(300, dtype=torch.uint8)}}
    checkpoints.save_checkpoint(classifier(), "extra", history=history)
    monkeypatch.setattr(checkpoint_checks, "EXTRA_BYTES", 200)
    with pytest.raises(checkpoints.CheckpointError, match=r"extra\['history'\]\['snapshots'\]\['1'\].*300 B.*200 B"):
        checkpoints.load_checkpoint("extra")
    # and a file that loading would refuse is never written
    with pytest.raises(checkpoints.CheckpointError, match=r"new\.pt was not saved.*extra\['history'\]\['snapshots'\]"
                                                          r"\['1'\], 300 B.*200 B.*fewer or smaller snapshots"):
        checkpoints.save_checkpoint(classifier(), "new", history=history)
    assert not (ckdir / "new.pt").exists()


def test_weights_in_compressed_records_are_refused_before_they_are_read(ckdir, data_reads):
    """A deflated record of the right size is what a model-shaped bomb looks like: torch.save
    never compresses, so the file's size bounds what loading allocates."""
    path = checkpoints.save_checkpoint(classifier(), "packed", {})
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(path.with_suffix(".zip"), "w", zipfile.ZIP_DEFLATED) as out:
        for info in old.infolist():
            out.writestr(info.filename, old.read(info.filename))
    path.with_suffix(".zip").replace(path)
    data_reads.clear()
    with pytest.raises(checkpoints.CheckpointError, match=r"packed\.pt.*tensor record data/0 is compressed "
                                                          r"\(.* for 12\.5 kB\), which torch.save never does"):
        checkpoints.load_checkpoint("packed")
    assert all(where == "meta" for where in data_reads), f"tensor data was read: {data_reads}"


# =========================================================================== dtypes and strides


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_weights_stored_in_another_float_dtype_load_as_the_models_dtype(ckdir, dtype):
    model = classifier()
    rewrite(checkpoints.save_checkpoint(model, "wide", {}),
            lambda p: p.update(state_dict={k: v.to(dtype) for k, v in p["state_dict"].items()}))
    loaded, _ = checkpoints.load_checkpoint("wide")
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values())
    x = torch.rand(2, 1, 28, 28)
    tolerance = 0 if dtype == torch.float64 else 1e-2                # float32 -> float64 -> float32 is exact
    assert torch.allclose(loaded(x), model.eval()(x), rtol=0, atol=tolerance)


def test_integer_weights_where_the_model_has_floats_are_refused_naming_key_and_dtypes(ckdir):
    rewrite(checkpoints.save_checkpoint(classifier(), "ints", {}),
            lambda p: p["state_dict"].update({"head.weight": p["state_dict"]["head.weight"].long()}))
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"ints\.pt.*state_dict\['head\.weight'\] is int64.*model needs float32.*Delete"):
        checkpoints.load_checkpoint("ints")


def test_expanded_stride_zero_weights_load_as_their_own_storage_and_train(ckdir):
    model = classifier()
    shape = model.state_dict()["head.weight"].shape
    rewrite(checkpoints.save_checkpoint(model, "expanded", {}),
            lambda p: p["state_dict"].update({"head.weight": torch.full((1, 1), 0.5).expand(shape)}))
    loaded, _ = checkpoints.load_checkpoint("expanded")
    weight = loaded.head.weight
    assert weight.is_contiguous() and weight.stride() == (shape[1], 1) and torch.all(weight == 0.5)
    opt = torch.optim.SGD(loaded.parameters(), lr=0.1)
    loaded.train()
    training.update(opt, loaded.loss(torch.rand(4, 1, 28, 28), torch.arange(4))["loss"])   # the first step
    assert not torch.all(loaded.head.weight == 0.5)                   # each element moved on its own


def test_a_pretrained_half_precision_file_opened_with_load_checkpoint_samples_in_float32(tmp_path):
    torch.manual_seed(0)
    G = dcgan.DCGANGenerator((1, 28, 28), 16, 8).eval()
    assert pretrained.save(G, "g", {}, directory=tmp_path)["storage"] == "float16"
    loaded, _ = checkpoints.load_checkpoint(tmp_path / "g.pt")
    shipped, _ = pretrained.load("g", directory=tmp_path)
    torch.manual_seed(1)
    a = loaded.sample(4)
    torch.manual_seed(1)
    assert a.dtype == torch.float32 and torch.equal(a, shipped.sample(4))


# =========================================================================== fit_or_load


def test_fit_or_load_over_a_checkpoint_without_history_trains_anew_and_keeps_the_old_file(ckdir, capsys):
    old = checkpoints.save_checkpoint(classifier(), "clf", {"a": 1})   # saved by hand: no history
    before = old.read_bytes()
    ran = []
    _, history = training.fit_or_load("clf", classifier(1), {"a": 1}, lambda: ran.append(1) or training.History(),
                                      reuse=True)
    out = capsys.readouterr().out
    aside = [p for p in ckdir.iterdir() if p.name.startswith("clf.pt.replaced-")]
    assert ran == [1] and len(aside) == 1 and aside[0].read_bytes() == before
    assert "has no training history" in out and f"kept as {aside[0].name}" in out
    assert "history" in checkpoints.read_checkpoint("clf")["extra"]   # the new one has one


def test_a_config_holding_nan_is_reused_not_retrained(ckdir):
    config = {"lr": float("nan"), "w": torch.tensor([1.0, float("nan")])}
    ran = []
    for _ in range(2):
        training.fit_or_load("nan", classifier(), config, lambda: ran.append(1) or training.History(), reuse=True)
    assert ran == [1] and checkpoints.matching_checkpoint("nan", config)
    assert not checkpoints.matching_checkpoint("nan", {**config, "lr": 1.0})


def dict_holding_itself():
    config = {"a": 1}
    config["me"] = config
    return config


def list_holding_itself():
    xs = [1]
    xs.append(xs)
    return {"xs": xs}


@pytest.mark.parametrize("make, where", [(dict_holding_itself, r"config\['me'\]"),
                                         (list_holding_itself, r"config\['xs'\]\[1\]")])
def test_a_recursive_config_is_refused_naming_where_it_contains_itself(ckdir, make, where):
    ran = []
    with pytest.raises(checkpoints.CheckpointError, match=where + r" contains itself.*a plain value"):
        training.fit_or_load("rec", classifier(), make(), lambda: ran.append(1) or training.History(), reuse=True)
    assert ran == []


def test_a_checkpoint_trained_with_another_config_is_kept_aside_not_replaced(ckdir, capsys):
    training.fit_or_load("clf", classifier(), {"epochs": 1, "lr": 1e-3}, training.History, reuse=True)
    before = checkpoints.checkpoint_path("clf").read_bytes()
    capsys.readouterr()
    training.fit_or_load("clf", classifier(), {"epochs": 1, "lr": 2e-3}, training.History, reuse=True)
    out = capsys.readouterr().out
    aside = [p for p in ckdir.iterdir() if p.name.startswith("clf.pt.replaced-")]
    assert len(aside) == 1 and aside[0].read_bytes() == before
    assert "lr: checkpoint has 0.001, expected 0.002" in out and f"kept as {aside[0].name}" in out
    assert checkpoints.read_checkpoint("clf")["config"] == {"epochs": 1, "lr": 2e-3}
    training.fit_or_load("clf", classifier(), {"epochs": 1, "lr": 2e-3}, training.History, reuse=False)   # same config:
    assert len([p for p in ckdir.iterdir() if ".pt." in p.name]) == 1                       # replaced in place


def test_a_damaged_checkpoint_in_an_unwritable_folder_still_trains_in_memory_and_says_it_was_not_saved(
        ckdir, monkeypatch, capsys):
    ckdir.mkdir(parents=True)
    damaged = ckdir / "clf.pt"
    damaged.write_bytes(b"damaged")
    real_replace = checkpoints.os.replace

    def read_only(src, dst):          # the folder refuses the rename that would keep the file aside
        if "unreadable" in str(dst):
            raise PermissionError(13, "Permission denied", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoints.os, "replace", read_only)
    model, history = classifier(), training.History(images_seen=3)
    out_model, out_history = training.fit_or_load("clf", model, {"a": 1}, lambda: history, reuse=True)
    out = capsys.readouterr().out
    assert out_model is model and out_history is history
    assert damaged.read_bytes() == b"damaged"                         # not overwritten either
    assert "PermissionError" in out and "NOT saved" in out and str(damaged) in out


# =========================================================================== pretrained manifest


def _two_models(directory):
    torch.manual_seed(0)
    pretrained.save(dcgan.DCGANGenerator((1, 28, 28), 16, 8).eval(), "g", {"budget": "b"}, directory=directory)
    pretrained.save(vae.MLPVAE((1, 28, 28), 4, 16).eval(), "a", {"budget": "b"}, directory=directory)
    return json.loads((directory / pretrained.MANIFEST).read_text())


def _write(directory, table):
    (directory / pretrained.MANIFEST).write_text(json.dumps(table))


def test_a_swapped_manifest_entry_is_refused_not_loaded_under_the_wrong_name(tmp_path):
    table = _two_models(tmp_path)
    table["models"]["g"] = table["models"]["a"]                       # g's entry now names a.pt
    _write(tmp_path, table)
    with pytest.raises(pretrained.PretrainedError, match=r"entry 'g'.*names the file 'a\.pt'.*'g\.pt'.*git checkout"):
        pretrained.load("g", directory=tmp_path)


def test_a_file_holding_another_class_than_its_manifest_entry_is_refused(tmp_path):
    table = _two_models(tmp_path)
    (tmp_path / "a.pt").replace(tmp_path / "g.pt")                    # g.pt now holds the MLPVAE
    table["models"]["g"]["sha256"] = storage.file_hash(tmp_path / "g.pt")
    _write(tmp_path, table)
    with pytest.raises(pretrained.PretrainedError, match=r"g\.pt holds a MLPVAE.*manifest.*DCGANGenerator"):
        pretrained.load("g", directory=tmp_path)
    del table["models"]["g"]["class"]                                 # an entry written before 'class': by size
    _write(tmp_path, table)
    with pytest.raises(pretrained.PretrainedError, match=r"g\.pt holds a MLPVAE with [\d,]+ parameters.*manifest.*[\d,]+"):
        pretrained.load("g", directory=tmp_path)


@pytest.mark.parametrize("key", ["file", "sha256", "parameters"])
def test_a_manifest_entry_missing_a_key_is_named_with_the_key(tmp_path, key):
    table = _two_models(tmp_path)
    del table["models"]["g"][key]
    _write(tmp_path, table)
    with pytest.raises(pretrained.PretrainedError, match=rf"entry 'g' in .*manifest\.json has no '{key}'.*git checkout"):
        pretrained.load("g", directory=tmp_path)


@pytest.mark.parametrize("name, file", [("x", "../x.pt"), ("hostname", "/etc/hostname"), ("x", "sub/x.pt"),
                                        ("../x", "../x.pt")])
def test_a_manifest_file_outside_the_pretrained_folder_is_refused_before_it_is_opened(tmp_path, monkeypatch,
                                                                                       name, file):
    folder = tmp_path / "pre"
    folder.mkdir()
    outside = checkpoints.save_checkpoint(classifier(), tmp_path / "x.pt")
    _write(folder, {"models": {name: {"file": file, "sha256": storage.file_hash(outside), "parameters": 1}}})
    opened = []
    monkeypatch.setattr(storage, "file_hash", lambda path, *a: opened.append(path))
    with pytest.raises(pretrained.PretrainedError, match=r"plain file name inside .*pre"):
        pretrained.load(name, directory=folder)
    assert opened == []


def test_a_manifest_file_that_links_out_of_the_pretrained_folder_is_refused_before_it_is_opened(tmp_path,
                                                                                                 monkeypatch):
    folder, elsewhere = tmp_path / "pre", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    target = checkpoints.save_checkpoint(classifier(), elsewhere / "x.pt")
    (folder / "x.pt").symlink_to(target)
    _write(folder, {"models": {"x": {"file": "x.pt", "sha256": storage.file_hash(target), "parameters": 1}}})
    opened = []
    monkeypatch.setattr(storage, "file_hash", lambda path, *a: opened.append(path))
    with pytest.raises(pretrained.PretrainedError, match=r"plain file name inside .*pre"):
        pretrained.load("x", directory=folder)
    assert opened == []


def test_compare_names_the_entry_and_the_key_a_manifest_lacks(tmp_path, monkeypatch):
    from types import SimpleNamespace
    monkeypatch.setattr(pretrained.runtime, "checkpoint_dir", lambda profile_name=None: tmp_path / "yours")
    model = vae.MLPVAE((1, 28, 28), 4, 16)
    checkpoints.save_checkpoint(model, "vae_mlp-toy", history=training.History(epochs=[{"epoch": 1}]).state_dict())
    pretrained.save(model, "vae_mlp-toy", {"dataset": "toy"}, directory=tmp_path)   # no budget recorded
    result = pretrained.compare([("MLP VAE", "vae_mlp", ["vae_mlp"])], SimpleNamespace(tag="toy"), directory=tmp_path)
    assert not result.metrics and "MLP VAE: not compared (entry 'vae_mlp-toy'" in result.table
    assert "has no 'budget'" in result.table
    table = json.loads((tmp_path / pretrained.MANIFEST).read_text())
    del table["models"]["vae_mlp-toy"]["dataset"]
    _write(tmp_path, table)
    with pytest.raises(pretrained.PretrainedError, match=r"entry 'vae_mlp-toy' in .*manifest\.json has no 'dataset'"):
        pretrained.compare([("MLP VAE", "vae_mlp", ["vae_mlp"])], SimpleNamespace(tag="toy"), directory=tmp_path)


# =========================================================================== training steps


def test_a_step_that_returns_a_tensor_is_told_what_a_step_returns_naming_the_step():
    def my_step(x, y):
        return x.mean()

    batches = [(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(TypeError, match=r"my_step returned a Tensor.*a dict of loss names to scalar tensors or "
                                        r"floats.*\{'loss': loss\}"):
        training.train(my_step, batches, 1)


def test_a_step_whose_losses_are_not_numbers_is_named_with_the_loss():
    batches = [(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(TypeError, match=r"<lambda> returned 'note' as a str"):
        training.train(lambda x, y: {"loss": x.mean(), "note": "hi"}, batches, 1)
