import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import unlearn_gym  # noqa: F401

KW = dict(batch_size=2, probe_size=1, device="cpu")


@pytest.fixture
def make(tiny_checkpoint):
    def _make(**kwargs):
        return gym.make("unlearn_gym/SFD-v0", checkpoint=str(tiny_checkpoint), **{**KW, **kwargs})

    return _make


@pytest.mark.parametrize("mode", ["balance", "both"])  # "both" covers the "targets" half of the action
def test_gymnasium_and_sb3_env_checkers_pass(make, mode):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make(horizon=2, action_mode=mode, render_mode="rgb_array", render_samples=1)
        gym_check(env.unwrapped)
        sb3_check(make(horizon=2, action_mode=mode), warn=True)
    assert env.action_space.shape == ({"balance": 1, "both": 10}[mode],)


def _rollout(env, seed, steps=3):
    obs, _ = env.reset(seed=seed)
    trace, rewards = [obs], []
    for i in range(steps):
        obs, r, term, trunc, info = env.step(np.full(env.action_space.shape, np.sin(i), dtype=np.float32))
        trace.append(obs)
        rewards.append(r)
    params = torch.cat([p.detach().flatten() for p in env.unwrapped.engine.model().parameters()])
    return np.stack(trace), np.array(rewards), params


def test_same_seed_same_trajectory_and_reset_restores(make):
    env = make(horizon=3)
    o1, r1, p1 = _rollout(env, seed=5)
    o2, r2, p2 = _rollout(make(horizon=3), seed=5)
    o3, r3, p3 = _rollout(env, seed=5)  # the same env after reset
    o4, r4, _ = _rollout(env, seed=6)
    assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and torch.equal(p1, p2)
    assert np.array_equal(o1, o3) and np.array_equal(r1, r3) and torch.equal(p1, p3)
    assert not np.array_equal(r1, r4)


def test_actions_rewards_and_the_one_step_generator(make, tmp_path):
    env = make(horizon=2, action_mode="both", alpha=0.1, beta=2.0)
    env.reset(seed=0)
    a = np.zeros(10, np.float32)
    a[0], a[1 + 2] = 0.6, 1.0  # λ = 0.8; the third remaining class gets the largest weight
    _, r1, _, _, info = env.step(a)
    w = np.exp(np.r_[0, 0, 1.0, [0] * 6])
    assert info["lam"] == pytest.approx(0.8) and np.allclose(info["target_weights"], w / w.sum())
    _, r2, _, trunc, info2 = env.step(np.zeros(10, np.float32))
    assert trunc
    # the rewards telescope: e_T − β·d⁺_T − α·Σ|Δλ|, with λ_{−1} = 0.5
    variation = abs(info["lam"] - 0.5) + abs(info2["lam"] - info["lam"])
    assert variation == pytest.approx(0.6, abs=1e-6)
    expected = info2["efficacy"] - 2.0 * max(0.0, info2["degradation"]) - 0.1 * variation
    assert r1 + r2 == pytest.approx(expected, abs=1e-9)
    # the generator saves as a model directory that evaluate samples in one step
    from unlearn_gym.assets import bundled_classifier_dir
    from unlearn_gym.metrics.classifier import load_classifier
    from unlearn_gym.metrics.forget import evaluate_model
    from unlearn_gym.models.checkpoint import load_model

    directory = env.unwrapped.save_generator(tmp_path / "gen")
    unet, config = load_model(directory)
    assert config["sampler"] == {"kind": "one-step", "t_star": 440}
    ev = evaluate_model(
        unet, load_classifier(bundled_classifier_dir()), num_labels=10, contaminated_label=1, contaminant_class=10,
        samples_per_label=2, sampler=config["sampler"], progress=False,
    )  # fmt: skip
    assert ev.images.shape == (20, 1, 28, 28) and ev.figures["sampler"]["kind"] == "one-step"


def test_bad_arguments(make):
    with pytest.raises(ValueError, match="forget_class"):
        make(forget_class=10)
    with pytest.raises(ValueError, match="override_class"):
        make(forget_class=3, override_class=3)
    env = make().unwrapped  # (gymnasium's OrderEnforcing wrapper would answer first)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expected shape"):
        env.step(np.zeros(2, np.float32))


def test_bench_and_evaluate_report_class_erasure(make, tiny_checkpoint, tmp_path, capsys):
    import json

    from unlearn_gym.bench import BenchConfig, policy_from_spec, run_benchmark
    from unlearn_gym.cli import main

    env_kwargs = dict(checkpoint=str(tiny_checkpoint), forget_class=0, horizon=1, **KW)
    config = BenchConfig(
        env_id="unlearn_gym/SFD-v0",
        env_kwargs=env_kwargs,
        seeds=(0,),
        samples_per_label=2,
        contaminated_label_samples=2,
    )
    result = run_benchmark({"static:0.5": policy_from_spec("static:0.5")}, config, progress=False, log=None)
    episode = result["episodes"][0]
    per_label = result["pretrained"]["per_label"]
    assert result["pretrained"]["unlearning_accuracy"] == 1.0 - per_label["0"]["accuracy"]
    assert 0.0 <= episode["unlearning_accuracy"] <= 1.0 and 0.0 <= episode["remaining_accuracy"] <= 1.0
    assert result["settings"]["sampler"] == {"kind": "one-step", "t_star": 440}
    assert "adjusted_forget_rate" not in episode  # class erasure: no contaminant to score against its damage
    # evaluate on a saved generator: one-step samples and the erasure figures
    env = make(forget_class=3, horizon=1)
    env.reset(seed=0)
    env.step(np.zeros(1, np.float32))
    directory = env.unwrapped.save_generator(tmp_path / "gen")
    argv = ["evaluate", "--checkpoint", str(directory), "--samples", "2", "--json", "--no-progress"]
    assert main([*argv, "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["sampler"]["kind"] == "one-step" and figures["erasure"]["forget_class"] == 3
    acc3 = figures["per_label"]["3"]["accuracy"]
    assert figures["erasure"]["unlearning_accuracy"] == pytest.approx(1.0 - acc3)
    table_argv = [a for a in argv if a != "--json"]
    assert main([*table_argv, "--device", "cpu", "--out", str(tmp_path / "ev2")]) == 0  # the table, not JSON
    out = capsys.readouterr().out
    assert "unlearning_accuracy" in out and "(1 − accuracy on the erased label 3)" in out
