"""The bundled default model and classifier: present, loadable, and as good as documented."""

import torch

from unlearn_gym.assets import bundled_classifier_dir, bundled_model_dir
from unlearn_gym.data import ImageSet
from unlearn_gym.metrics.classifier import classifier_accuracy, load_classifier
from unlearn_gym.metrics.forget import evaluate_model
from unlearn_gym.models import load_model


def test_bundled_classifier_heldout_accuracy(default_scenario):
    clf = load_classifier(bundled_classifier_dir())
    heldout = ImageSet.concat(default_scenario.retain_heldout, default_scenario.forget_heldout)
    assert len(heldout) == 500
    assert classifier_accuracy(clf, heldout) >= 0.95


def test_bundled_model_learned_digits_and_contamination():
    unet, config = load_model(bundled_model_dir())
    assert config["scenario"]["name"] == "default" and config["scenario"]["contaminant_class"] == 7
    assert sum(p.numel() for p in unet.parameters()) == 1_063_777
    clf = load_classifier(bundled_classifier_dir())
    ev = evaluate_model(
        unet,
        clf,
        num_labels=10,
        contaminated_label=1,
        contaminant_class=7,
        samples_per_label=20,
        num_inference_steps=15,
        seed=0,
        progress=False,
    )
    # A small-sample smoke of the documented figures (docs/results.md: 200 samples per label).
    assert ev.figures["forget_rate"] >= 0.05  # label 1 still draws 7s
    assert ev.figures["retain_accuracy"] >= 0.8  # the other labels draw their digits
    assert torch.isfinite(ev.images).all()
