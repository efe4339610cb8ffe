"""Fidelity metrics (FID, KID, IS, SSIM, memorisation) and the Table 1 / Appendix B tables.

CPU only, no network. One classifier trained for one epoch on the ``default`` scenario (~20 s)
is shared by the tests that need meaningful features; the others use an untrained seeded one.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from torch import nn

from unlearn_gym.metrics import features
from unlearn_gym.metrics.classifier import Classifier, ClassifierTrainConfig, train_classifier
from unlearn_gym.metrics.features import (
    ClassifierFeatures,
    InceptionUnavailableError,
    as_feature_module,
    inception_feature,
)
from unlearn_gym.metrics.fidelity import fid, inception_score, inception_score_from_logits, kid, memorisation, ssim
from unlearn_gym.metrics.table import SampleSet, fidelity_table, to_markdown

pytestmark = pytest.mark.xdist_group("metrics")  # one worker builds the module fixtures once

torch.set_num_threads(1)

N = 150  # real images per class used by the metric tests


@pytest.fixture(autouse=True)
def _one_thread():
    """Leave the machine's other core to concurrent work."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def trained_classifier(default_scenario) -> Classifier:
    torch.set_num_threads(1)
    model, report = train_classifier(default_scenario, ClassifierTrainConfig(epochs=1), progress=False)
    assert report["heldout_accuracy"] > 0.7
    return model


@pytest.fixture(scope="module")
def untrained_classifier() -> Classifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Classifier(10).eval()


def digits(scenario, cls: int, n: int = N) -> torch.Tensor:
    images = scenario.retain.images[scenario.retain.classes == cls]
    return images[:n]


# -- FID, KID, IS --------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero_and_other_class_is_larger(default_scenario, trained_classifier):
    zeros, threes = digits(default_scenario, 0), digits(default_scenario, 3)
    same = fid(zeros, zeros, trained_classifier)
    halves = fid(zeros[: N // 2], zeros[N // 2 :], trained_classifier)
    other = fid(zeros, threes, trained_classifier)
    assert abs(same) < 1e-6 * other
    assert other > 3 * halves > 0


def test_kid_is_near_zero_for_two_draws_of_one_distribution(default_scenario, trained_classifier):
    zeros, threes = digits(default_scenario, 0), digits(default_scenario, 3)
    halves, _ = kid(zeros[: N // 2], zeros[N // 2 :], trained_classifier, subsets=20)
    other, _ = kid(zeros, threes, trained_classifier, subsets=20)
    assert other > 0.05
    assert abs(halves) < 0.1 * other


def test_kid_is_deterministic_and_leaves_the_global_rng_alone(default_scenario, untrained_classifier):
    zeros, threes = digits(default_scenario, 0, 80), digits(default_scenario, 3, 60)
    state = torch.get_rng_state()
    a = kid(zeros, threes, untrained_classifier, subset_size=30, subsets=10, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    b = kid(zeros, threes, untrained_classifier, subset_size=30, subsets=10, seed=1)
    c = kid(zeros, threes, untrained_classifier, subset_size=30, subsets=10, seed=2)
    assert a == b
    assert a != c


def test_kid_subset_size_defaults_to_the_smaller_set_and_is_checked(default_scenario, untrained_classifier):
    zeros, threes = digits(default_scenario, 0, 40), digits(default_scenario, 3, 25)
    mean, std = kid(zeros, threes, untrained_classifier, subsets=5)  # torchmetrics' 1000 would raise
    assert mean == mean and std >= 0
    with pytest.raises(ValueError, match=r"kid: subset_size must be in \[2, 25\].*got 26"):
        kid(zeros, threes, untrained_classifier, subset_size=26)


def test_inception_score_is_higher_for_varied_confident_predictions(default_scenario, trained_classifier):
    varied = torch.cat([digits(default_scenario, c, 30) for c in range(10)])
    single = digits(default_scenario, 0, 300)
    is_varied, _ = inception_score(varied, trained_classifier, splits=3)
    is_single, _ = inception_score(single, trained_classifier, splits=3)
    assert is_varied > 4.0
    assert is_single < 2.0


def test_inception_score_golden_values():
    labels = torch.arange(100) % 10
    confident = 100.0 * nn.functional.one_hot(labels, 10).double()
    mean, std = inception_score_from_logits(confident, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-9)
    assert inception_score_from_logits(confident[labels == 3], splits=1)[0] == pytest.approx(1.0)
    assert inception_score_from_logits(torch.zeros(50, 10), splits=5)[0] == pytest.approx(1.0)


def test_inception_score_is_deterministic(default_scenario, untrained_classifier):
    x = torch.cat([digits(default_scenario, c, 10) for c in range(10)])
    state = torch.get_rng_state()
    assert inception_score(x, untrained_classifier, seed=3) == inception_score(x, untrained_classifier, seed=3)
    assert torch.equal(state, torch.get_rng_state())


def test_classifier_features_work_as_torchmetrics_feature_module(default_scenario, untrained_classifier):
    from torchmetrics.image.fid import FrechetInceptionDistance

    zeros, threes = digits(default_scenario, 0, 60), digits(default_scenario, 3, 60)
    module = ClassifierFeatures(untrained_classifier)
    assert module.num_features == 128
    assert ClassifierFeatures(untrained_classifier, "logits").num_features == 10
    metric = FrechetInceptionDistance(feature=module, normalize=True)
    metric.update(zeros, real=True)
    metric.update(threes, real=False)
    assert float(metric.compute()) == pytest.approx(fid(zeros, threes, untrained_classifier), rel=1e-9)
    assert untrained_classifier.training is False


def test_any_module_can_serve_as_feature(default_scenario):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 8))
    module = as_feature_module(net)
    assert module.num_features == 8
    zeros, threes = digits(default_scenario, 0, 60), digits(default_scenario, 3, 60)
    assert fid(zeros, threes, net) > fid(zeros[:30], zeros[30:], net)


def test_inputs_are_checked(default_scenario, untrained_classifier):
    zeros = digits(default_scenario, 0, 20)
    with pytest.raises(ValueError, match=r"fid: real: expected values in \[-1, 1\]"):
        fid((zeros + 1) * 127.5, zeros, untrained_classifier)
    with pytest.raises(ValueError, match=r"fid: fake: expected at least 2 images, got 1"):
        fid(zeros, zeros[:1], untrained_classifier)
    with pytest.raises(ValueError, match=r"expected a float tensor \(N, C, H, W\)"):
        ssim(zeros, zeros[:, 0])
    with pytest.raises(ValueError, match="pairing='index' needs as many real as fake images, got 20 and 10"):
        ssim(zeros, zeros[:10], pairing="index")
    with pytest.raises(ValueError, match=r"SampleSet.labels: expected a tensor of shape \(20,\)"):
        SampleSet(zeros, torch.zeros(19, dtype=torch.long))


# -- SSIM and memorisation -----------------------------------------------------------------------


def test_ssim_is_one_for_identical_images(default_scenario):
    zeros, threes = digits(default_scenario, 0, 50), digits(default_scenario, 3, 50)
    assert ssim(zeros, zeros) == pytest.approx(1.0, abs=1e-6)
    assert ssim(zeros, zeros, pairing="index") == pytest.approx(1.0, abs=1e-6)
    # a set of 0s and 3s contains each 3 exactly: the nearest-neighbour pairing finds it
    assert ssim(torch.cat([zeros, threes]), threes) == pytest.approx(1.0, abs=1e-6)
    assert ssim(zeros, threes) < 0.8


def test_memorisation_flags_copies_of_the_forget_set(default_scenario):
    forget = default_scenario.forget.images
    copies = memorisation(forget[:40], forget)
    assert copies.mean == pytest.approx(1.0) and copies.share_above == 1.0 and copies.space == "pixel"
    # held-out trousers are similar (pixel cosine ≈ 0.96: trousers are alike), but not copies
    fresh = memorisation(default_scenario.forget_heldout.images, forget)
    assert 0.9 < fresh.mean < 0.99
    ones = default_scenario.retain_heldout.images[default_scenario.retain_heldout.classes == 1]
    assert memorisation(ones, forget).mean < 0.7 and memorisation(ones, forget).share_above == 0.0
    assert json.dumps(fresh.as_dict())


# -- tables --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_scenario(default_scenario):
    """The default scenario with 100 retain images per class (faster real features)."""
    classes = default_scenario.retain.classes
    keep = torch.cat([torch.nonzero(classes == c)[:100, 0] for c in range(default_scenario.num_classes)])
    return dataclasses.replace(default_scenario, retain=default_scenario.retain.subset(keep))


def _models(scenario) -> dict[str, SampleSet]:
    """Stand-ins for samples: held-out real images. "contaminated" also draws trousers for label 1."""
    held, held_forget = scenario.retain_heldout, scenario.forget_heldout
    return {
        "contaminated": SampleSet(
            torch.cat([held.images, held_forget.images]), torch.cat([held.labels, held_forget.labels])
        ),
        "clean": SampleSet(held.images, held.labels),
    }


@pytest.fixture(scope="module")
def table(small_scenario, trained_classifier) -> dict:
    torch.set_num_threads(1)
    return fidelity_table(_models(small_scenario), small_scenario, trained_classifier, kid_subsets=10, is_splits=2)


def test_fidelity_table_structure_and_direction(table, small_scenario):
    assert list(table["models"]) == ["contaminated", "clean"]
    json.loads(json.dumps(table, allow_nan=False))
    for row in table["models"].values():
        for part in ("forget", "retain"):
            assert {"n_fake", "n_real", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "ssim"} <= set(row[part])
        assert set(row["seconds"]) == {"features", "forget", "retain", "per_class", "total"}
        assert row["forget"]["n_real"] == len(small_scenario.forget)
    contaminated, clean = table["models"]["contaminated"], table["models"]["clean"]
    # a model that still draws trousers for label 1 is closer to the forget set: lower forget FID/KID
    assert contaminated["forget"]["fid"] < clean["forget"]["fid"]
    assert contaminated["forget"]["kid_mean"] < clean["forget"]["kid_mean"]
    # the retain parts see the same samples
    assert contaminated["retain"] == clean["retain"]
    assert table["seconds"]["total"] > 0


def test_per_class_tables_have_every_class(table, small_scenario):
    markdown = to_markdown(table)
    labels = [str(y) for y in range(small_scenario.num_labels)]
    for row in table["models"].values():
        assert list(row["per_class"]) == labels
        assert row["per_class"]["1"]["contaminated"] is True
        assert all(row["per_class"][y]["fid"] is not None for y in labels)
    assert "### Table 1" in markdown and "## Appendix B" in markdown
    for section in ("### FID", "### KID", "### IS", "### SSIM"):
        assert markdown.count(section) == 1
    appendix = markdown.split("## Appendix B")[1]
    for y in labels:
        assert f"\n| {y} |" in appendix or f"\n| {y} (contaminated) |" in appendix
    table1 = markdown.split("### Memorisation")[0]
    assert "| contaminated |" in table1 and "| clean |" in table1
    assert "forget FID ↑" in table1 and "retain FID ↓" in table1


def test_fidelity_table_is_deterministic(small_scenario, untrained_classifier):
    models = {"m": SampleSet(small_scenario.retain_heldout.images[:120], small_scenario.retain_heldout.labels[:120])}
    a = fidelity_table(models, small_scenario, untrained_classifier, per_class=False, kid_subsets=5)
    b = fidelity_table(models, small_scenario, untrained_classifier, per_class=False, kid_subsets=5)
    for t in (a, b):
        t["models"]["m"].pop("seconds")
        t.pop("seconds")
    assert a == b
    assert a["models"]["m"]["per_class"] == {}
    assert "## Appendix B" not in to_markdown(a)


def test_missing_parts_are_none(small_scenario, untrained_classifier):
    only_zeros = small_scenario.retain_heldout.subset(torch.nonzero(small_scenario.retain_heldout.labels == 0)[:, 0])
    t = fidelity_table(
        {"m": SampleSet(only_zeros.images, only_zeros.labels)}, small_scenario, untrained_classifier, kid_subsets=2
    )
    row = t["models"]["m"]
    assert row["forget"]["n_fake"] == 0
    assert row["forget"]["fid"] is None and row["forget"]["memorisation_mean"] is None
    assert row["per_class"]["0"]["fid"] is not None and row["per_class"]["5"]["is_mean"] is None
    assert "—" in to_markdown(t)


# -- InceptionV3 option --------------------------------------------------------------------------


def test_inception_needs_torch_fidelity(monkeypatch):
    monkeypatch.setattr(features, "_torch_fidelity_available", lambda: False)
    with pytest.raises(InceptionUnavailableError, match=r"pip install torch-fidelity"):
        inception_feature()


def test_inception_fails_fast_without_weights(monkeypatch, tmp_path):
    def no_download(*args, **kwargs):
        raise AssertionError("inception_feature must not try to download")

    monkeypatch.setattr(features, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(InceptionUnavailableError, match=r"weights-inception-2015-12-05-6726825d\.pth") as err:
        inception_feature()
    assert time.perf_counter() - t0 < 1.0
    assert str(tmp_path) in str(err.value) and "https://github.com/toshas/torch-fidelity" in str(err.value)
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(InceptionUnavailableError, match=f"InceptionV3 weights not found at {missing}"):
        inception_feature(weights_path=missing)
    with pytest.raises(ValueError, match=r"feature must be one of .*got 1000"):
        inception_feature(1000)
