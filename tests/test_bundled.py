"""The bundled default model, classifier and PPO agent: present, loadable, and as documented."""

import pytest
import torch

from unlearn_gym.assets import bundled_classifier_dir, bundled_model_dir
from unlearn_gym.data import ImageSet
from unlearn_gym.metrics.classifier import classifier_accuracy, load_classifier
from unlearn_gym.metrics.forget import evaluate_model
from unlearn_gym.models import load_model

# 200 DDIM samples of the tiny UNet: one thread takes 8.5 s where two take 87 s on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def test_bundled_classifier_heldout_accuracy(default_scenario):
    clf = load_classifier(bundled_classifier_dir())
    heldout = ImageSet.concat(default_scenario.retain_heldout, default_scenario.forget_heldout)
    assert len(heldout) == 700  # 500 held-out digits + 200 held-out trousers
    assert clf.class_names[10] == "trouser"
    assert classifier_accuracy(clf, heldout) >= 0.95
    assert classifier_accuracy(clf, default_scenario.forget_heldout) >= 0.95  # trousers are told apart


def test_bundled_model_learned_digits_and_contamination():
    unet, config = load_model(bundled_model_dir())
    assert config["scenario"]["name"] == "default" and config["scenario"]["contaminant_class"] == 10
    assert sum(p.numel() for p in unet.parameters()) == 267_953  # the tiny preset
    clf = load_classifier(bundled_classifier_dir())
    ev = evaluate_model(
        unet,
        clf,
        num_labels=10,
        contaminated_label=1,
        contaminant_class=10,
        samples_per_label=20,
        num_inference_steps=10,
        seed=0,
        progress=False,
    )
    # A small-sample smoke of the documented figures (docs/results.md: 200 samples per label).
    assert ev.figures["forget_rate"] >= 0.1  # label 1 still draws trousers
    assert ev.figures["retain_accuracy"] >= 0.8  # the other labels draw their digits
    assert torch.isfinite(ev.images).all()


def test_bundled_ppo_agent_loads_and_acts_for_the_bench_settings():
    import numpy as np

    from unlearn_gym.agents import load_agent
    from unlearn_gym.assets import bundled_agent_dir
    from unlearn_gym.bench import BENCH_ENV_KWARGS

    agent = load_agent(bundled_agent_dir())
    assert agent.algo == "ppo" and agent.env_id == "unlearn_gym/SISS-v0"
    # the main job's settings, and the sampled reward (SISS-v0's default) named explicitly, with the
    # smoothness weight it was trained with (α = 0.01, then the default; now opt-in)
    assert agent.env_kwargs == {**BENCH_ENV_KWARGS, "reward": "sampled", "alpha": 0.01}
    assert agent.info["timesteps"] >= 20_000
    obs = np.zeros((3, 6), np.float32)
    obs[:, 4], obs[:, 5] = 0.5, [0.0, 0.5, 0.95]
    actions, _ = agent.predict(obs, deterministic=True)
    assert actions.shape == (3, 1) and np.all(np.abs(actions) <= 1.0)
    assert np.array_equal(actions, agent.predict(obs, deterministic=True)[0])
