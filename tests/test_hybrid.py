import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL_SAMPLED_PROBE

import unlearn_gym  # noqa: F401
from unlearn_gym.models.unet import make_unet, noise_schedule
from unlearn_gym.objectives.hybrid import HybridConfig, hybrid_objective
from unlearn_gym.objectives.siss import SISSConfig, draw_batch, siss_objective

KW = dict(batch_size=2, probe_size=1, device="cpu", **SMALL_SAMPLED_PROBE)


def _setup():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = make_unet("tiny").double()
        teacher = {k: v.detach() + 0.01 * torch.randn_like(v) for k, v in unet.named_parameters()}
    g = torch.Generator().manual_seed(0)
    retain = torch.rand(20, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    forget = torch.rand(10, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    batch = draw_batch(
        retain, torch.randint(10, (20,), generator=g), forget, torch.ones(10, dtype=torch.long), 4, 1000, g
    )
    sched = noise_schedule()
    return unet, teacher, batch, sched.gamma, sched.sigma


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_hybrid_direction_is_the_weighted_sum_of_siss_and_the_alignment(lam):
    unet, teacher, batch, gamma, sigma = _setup()
    params = dict(unet.named_parameters())
    classes, w = torch.tensor([0, 2, 3]), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    cfg = HybridConfig(siss=SISSConfig(scale=5.0), siss_lambda=0.5, align_weight=0.7)
    res = hybrid_objective(unet, params, teacher, batch, lam, gamma, sigma, cfg, (classes, w))
    siss = siss_objective(unet, params, batch, 0.5, gamma, sigma, cfg.siss)
    # the alignment written out: ε_θ(a_t, t, y_a) against the π-mixture of the teacher's class scores
    a_t = gamma[batch.t].view(-1, 1, 1, 1) * batch.a + sigma[batch.t].view(-1, 1, 1, 1) * batch.eps
    target = sum(wk * torch.func.functional_call(unet, teacher, (a_t, batch.t), {"class_labels": torch.full((4,), int(k))}).sample for k, wk in zip(classes, w))  # fmt: skip
    align = ((unet(a_t, batch.t, class_labels=batch.y_a).sample - target.detach()) ** 2).flatten(1).sum(1).mean()
    g_align = torch.autograd.grad(align, list(params.values()))
    torch.testing.assert_close(res.loss_align, align.detach(), rtol=1e-10, atol=1e-12)
    for g, gs, ga in zip(res.grads, siss.grads, g_align):
        torch.testing.assert_close(g, 2 * (1 - lam) * gs + 2 * lam * 0.7 * ga, rtol=1e-8, atol=1e-10)
    loss_siss = siss.loss_r - 5.0 / siss.grad_f_norm * siss.loss_f
    torch.testing.assert_close(res.dloss_dlam, 2 * (0.7 * align.detach() - loss_siss), rtol=1e-8, atol=1e-10)


@pytest.fixture
def make(tiny_checkpoint):
    def _make(**kwargs):
        return gym.make("unlearn_gym/Hybrid-v0", checkpoint=str(tiny_checkpoint), **{**KW, **kwargs})

    return _make


def test_env_checkers_targets_and_determinism(make):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check(make(horizon=2, render_mode="rgb_array", render_samples=1, render_ddim_steps=1).unwrapped)
        sb3_check(make(horizon=2, action_mode="both"), warn=True)
    env = make(horizon=3)
    assert env.unwrapped.target_classes == (0, 2, 3, 4, 5, 6, 7, 8, 9)  # every digit but 1 (the contaminated label)

    def rollout(e, seed):
        obs, _ = e.reset(seed=seed)
        out = [obs]
        for i in range(3):
            obs, r, *_ = e.step(np.array([np.cos(i)], np.float32))
            out.append(np.r_[obs, r])
        return np.concatenate(out)

    a, b, c = rollout(env, 2), rollout(make(horizon=3), 2), rollout(env, 2)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(a, rollout(env, 3))


def test_bad_hybrid_arguments(make):
    with pytest.raises(ValueError, match="objective must be 'siss'"):
        make(objective="neggrad")
    with pytest.raises(ValueError, match="target_classes"):
        make(target_classes=(11,))
