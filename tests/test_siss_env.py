import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL_SAMPLED_PROBE

import unlearn_gym  # noqa: F401  (registers the envs)

KW = dict(batch_size=4, probe_size=2, device="cpu", **SMALL_SAMPLED_PROBE)


@pytest.fixture
def make(tiny_checkpoint):
    def _make(**kwargs):
        return gym.make("unlearn_gym/SISS-v0", checkpoint=str(tiny_checkpoint), **{**KW, **kwargs})

    return _make


def _wrappers(env):
    while isinstance(env, gym.Wrapper):
        yield env
        env = env.env


def test_both_ids_make_the_env(tiny_checkpoint):
    for env_id in ("unlearn_gym/SISS-v0", "unlearn_gym:SISS-v0"):
        env = gym.make(env_id, checkpoint=str(tiny_checkpoint), **KW)
        # the episode budget is the env's horizon alone: no TimeLimit to keep in step with it
        assert env.spec.max_episode_steps is None and env.unwrapped.config.horizon == 100
        assert not any(isinstance(w, gym.wrappers.TimeLimit) for w in _wrappers(env))
        assert env.action_space.shape == (1,) and env.observation_space.shape == (6,)
        env.close()


def test_gymnasium_and_sb3_env_checkers_pass(make):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check(make(horizon=3, render_mode="rgb_array", render_ddim_steps=2, render_samples=1).unwrapped)
        sb3_check(make(horizon=3), warn=True)


def _rollout(env, seed, steps=10):
    obs, _ = env.reset(seed=seed)
    trace, rewards = [obs], []
    for i in range(steps):
        obs, r, term, trunc, info = env.step(np.array([np.sin(i)], dtype=np.float32))
        trace.append(obs)
        rewards.append(r)
        assert not term
    params = torch.cat([p.detach().flatten() for p in env.unwrapped.engine.model().parameters()])
    return np.stack(trace), np.array(rewards), params


def test_same_seed_same_trajectory_different_seed_different(make):
    # the denoising-loss reward sees every step's change (the sampled one: tests/test_sampled_reward.py)
    env = make(horizon=10, reward="probe")
    o1, r1, p1 = _rollout(env, seed=7)
    o2, r2, p2 = _rollout(make(horizon=10, reward="probe"), seed=7)  # a fresh env
    o3, r3, p3 = _rollout(env, seed=7)  # the same env, restored by reset
    o4, r4, p4 = _rollout(env, seed=8)
    assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and torch.equal(p1, p2)
    assert np.array_equal(o1, o3) and np.array_equal(r1, r3) and torch.equal(p1, p3)
    assert not np.array_equal(o1, o4) and not np.array_equal(r1, r4) and not torch.equal(p1, p4)


def test_observation_reward_and_info(make):
    env = make(horizon=2, alpha=0.5, reward="probe")
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and np.allclose(obs, [0, 0, 0, 0, 0.5, 0])
    obs, r, term, trunc, info = env.step(np.array([0.0], dtype=np.float32))
    assert info["lam"] == 0.5 and obs[4] == 0.5 and obs[5] == 0.5
    assert r == pytest.approx(info["reward_efficacy_gain"] + info["reward_smoothness"] + info["reward_degradation"])
    assert info["reward_smoothness"] == 0.0  # λ stayed at 0.5
    assert info["efficacy"] == pytest.approx(np.log(info["probe_f"] / env.unwrapped._ref.probe_f), rel=1e-6)
    obs, r, term, trunc, info = env.step(np.array([1.0], dtype=np.float32))
    assert info["lam"] == 1.0 and info["reward_smoothness"] == pytest.approx(-0.5 * 0.5)
    assert trunc and not term
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.array([0.0], dtype=np.float32))


def test_episode_return_is_final_efficacy_minus_final_damage_minus_variation(make):
    """With the "increment" degradation penalty the rewards telescope (DESIGN §7, as documented)."""
    env = make(horizon=6, alpha=0.1, beta=2.0, lr=5e-3, reward="probe")
    env.reset(seed=3)
    lams = [0.5, 0.9, 0.1, 0.1, 0.7, 1.0]
    ret, variation, prev, levels = 0.0, 0.0, 0.5, 0.0
    for lam in lams:
        _, r, _, _, info = env.step(np.array([2 * lam - 1], dtype=np.float32))
        ret += r
        variation += abs(info["lam"] - prev)
        prev = info["lam"]
        levels += max(0.0, info["degradation"])
    expected = info["efficacy"] - 2.0 * max(0.0, info["degradation"]) - 0.1 * variation
    assert ret == pytest.approx(expected, abs=1e-9)
    # the "level" form charges every step's damage instead: same trajectory, different return
    env_level = make(horizon=6, alpha=0.1, beta=2.0, lr=5e-3, degradation_penalty="level", reward="probe")
    env_level.reset(seed=3)
    ret_level = sum(env_level.step(np.array([2 * lam - 1], dtype=np.float32))[1] for lam in lams)
    assert ret_level == pytest.approx(info["efficacy"] - 2.0 * levels - 0.1 * variation, abs=1e-9)


def test_bad_actions_and_options(make):
    env = make()
    with pytest.raises(RuntimeError, match="before reset"):
        env.unwrapped.step(np.zeros(1, dtype=np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be finite"):
        env.step(np.array([np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="action must be finite"):
        env.step(np.array([np.inf], dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(1,\), got \(2,\)"):
        env.step(np.zeros(2, dtype=np.float32))
    _, _, _, _, info = env.step(np.array([5.0], dtype=np.float32))  # clipped
    assert info["lam"] == 1.0 and info["action_clipped"]
    _, _, _, _, info = env.step(np.array([-3.0], dtype=np.float32))
    assert info["lam"] == 0.0 and info["action_clipped"]
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lam'\]"):
        env.reset(options={"lam": 0.3})
    with pytest.raises(ValueError, match="must be an int >= 0"):
        env.reset(options={"instance": -1})
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['batchsize'\]"):
        make(batchsize=3)
    with pytest.raises(ValueError, match="action_mode must be"):
        make(action_mode="lambda")


def test_divergence_terminates_with_penalty_and_reset_recovers(make):
    env = make(lr=1e8, divergence_penalty=7.0)
    obs0, _ = env.reset(seed=0)
    pretrained = [p.detach().clone() for p in env.unwrapped.engine.model().parameters()]
    for _ in range(50):
        obs, r, term, trunc, info = env.step(np.array([0.0], dtype=np.float32))
        if term:
            break
    assert term and info["diverged"] and r == -7.0
    assert np.all(np.isfinite(obs)) and env.observation_space.contains(obs)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs, obs0)
    for p, q in zip(env.unwrapped.engine.model().parameters(), pretrained):
        assert torch.equal(p, q)


def test_action_modes(make):
    env = make(action_mode="forget-strength")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.0], dtype=np.float32))
    assert info["lam"] == 0.5 and info["forget_scale_S"] == pytest.approx(5.0)
    env = make(action_mode="both")
    assert env.action_space.shape == (2,)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0, -1.0], dtype=np.float32))
    assert info["lam"] == 1.0 and info["forget_scale_S"] == 0.0


def test_instances_select_forget_subsets(make):
    env = make(forget_subset=5)
    full = len(env.unwrapped.scenario.forget)
    env.reset(seed=0, options={"instance": 3})
    a = env.unwrapped.engine.forget_set()[0].clone()
    assert len(a) == 5 < full
    env.reset(seed=0, options={"instance": 3})
    assert torch.equal(env.unwrapped.engine.forget_set()[0], a)
    env.reset(seed=0, options={"instance": 4})
    assert not torch.equal(env.unwrapped.engine.forget_set()[0], a)
    env.reset(seed=0)  # no instance: the whole forget set again
    assert len(env.unwrapped.engine.forget_set()[0]) == full


def test_render_is_an_rgb_grid_and_only_on_request(make):
    env = make(render_mode="rgb_array", render_samples=2, render_ddim_steps=2)
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (10 * 28, 2 * 28, 3)
    assert make().unwrapped.render() is None  # no render_mode: nothing is computed


def test_no_keywords_runs_the_bundled_default():
    env = gym.make("unlearn_gym/SISS-v0", batch_size=4, device="cpu")  # everything else: defaults
    assert env.unwrapped.config.checkpoint is None and env.unwrapped.scenario.name == "default"
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.zeros(1, dtype=np.float32))
    assert np.isfinite(reward) and not terminated and info["lam"] == 0.5
