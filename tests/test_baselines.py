import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL_SAMPLED_PROBE

import unlearn_gym  # noqa: F401
from unlearn_gym.baselines import CosineSchedule, LinearSchedule, RandomLambda, StaticLambda, VIAdaptive, VIVariance
from unlearn_gym.baselines.vi_variance import VARIANCE_GRADIENT_KEYS

KW = dict(batch_size=4, probe_size=2, device="cpu", **SMALL_SAMPLED_PROBE)


def _obs(progress):
    obs = np.zeros((len(progress), 6), np.float32)
    obs[:, 5] = progress
    return obs


def test_schedules_match_hand_computed_values():
    p = [0.0, 0.25, 0.5, 1.0]
    lin, _ = LinearSchedule(0.8, 0.2).predict(_obs(p))
    cos, _ = CosineSchedule(0.8, 0.2).predict(_obs(p))
    # a = 2λ − 1; linear: λ = 0.8 − 0.6p; cosine: λ = 0.2 + 0.6·(1 + cos πp)/2
    np.testing.assert_allclose((lin[:, 0] + 1) / 2, [0.8, 0.65, 0.5, 0.2], atol=1e-6)
    np.testing.assert_allclose((cos[:, 0] + 1) / 2, [0.8, 0.2 + 0.6 * (1 + math.sqrt(0.5)) / 2, 0.5, 0.2], atol=1e-6)
    action, state = StaticLambda(0.25).predict(np.zeros(6, np.float32))
    assert action.shape == (1,) and action.dtype == np.float32 and action[0] == -0.5 and state is None
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        StaticLambda(1.5)


def test_random_policy_is_seeded_by_reset():
    pol = RandomLambda()
    pol.reset(3)
    a = [pol.predict(np.zeros(6, np.float32))[0][0] for _ in range(5)]
    pol.reset(3)
    b = [pol.predict(np.zeros(6, np.float32))[0][0] for _ in range(5)]
    pol.reset(4)
    c = [pol.predict(np.zeros(6, np.float32))[0][0] for _ in range(5)]
    assert a == b and a != c and all(-1 <= x <= 1 for x in a)


def test_vi_loss_gradient_matches_the_hand_computed_chain_rule():
    """∂L/∂b_μ = (∂L_SISS/∂λ)·λ(1−λ) + β·μ and ∂L/∂b_{log σ²} = (∂L_SISS/∂λ)·λ(1−λ)·u·σ/2 + β·(σ² − 1)/2."""
    pol = VIAdaptive(kl_coef=0.3, seed=1)
    c = torch.tensor([[0.1, -0.2, 0.3, 0.05]])
    u = torch.tensor([0.7])
    g = 2.5
    loss = pol.loss(c, u, g)
    loss.backward()
    with torch.no_grad():
        mu, log_var = pol.network(c)
        sigma = (0.5 * log_var).exp()
        lam = torch.sigmoid(mu + sigma * u)
    bias_grad = pol.network.net[-1].bias.grad
    expected_mu = g * lam * (1 - lam) + 0.3 * mu
    expected_lv = g * lam * (1 - lam) * u * sigma / 2 + 0.3 * (sigma**2 - 1) / 2
    torch.testing.assert_close(bias_grad[0], expected_mu[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(bias_grad[1], expected_lv[0], rtol=1e-5, atol=1e-7)


def _phi(pol):
    return torch.cat([p.detach().flatten().clone() for p in pol.network.parameters()])


def test_the_siss_gradient_reaches_phi_through_the_env(tiny_checkpoint):
    """With β = 0 only the SISS term can move φ: it must (the authors' code detaches it, so φ would stay)."""
    env = gym.make("unlearn_gym/SISS-v0", checkpoint=str(tiny_checkpoint), horizon=3, **KW)
    pol = VIAdaptive(kl_coef=0.0, lr=1e-2, seed=0)
    pol.reset(0)
    obs, _ = env.reset(seed=0)
    phi0 = _phi(pol)
    mu_before = pol.network(VIAdaptive.context(obs[None]))[0].item()
    action, _ = pol.predict(obs)
    next_obs, reward, term, trunc, info = env.step(action)
    assert info["dloss_dlam"] != 0.0 and np.isfinite(info["dloss_dlam"])
    pol.observe(obs, action, reward, next_obs, term, trunc, info)
    assert not torch.equal(_phi(pol), phi0)
    # one Adam step moves μ against the sign of ∂L_SISS/∂λ (λ(1−λ) > 0)
    mu_after = pol.network(VIAdaptive.context(obs[None]))[0].item()
    assert np.sign(mu_after - mu_before) == -np.sign(info["dloss_dlam"])
    # what a detached SISS term would give: zero gradient, φ unchanged
    pol.reset(0)
    pol.predict(obs)
    pol.observe(obs, action, reward, next_obs, term, trunc, {**info, "dloss_dlam": 0.0})
    assert torch.equal(_phi(pol), phi0)
    with pytest.raises(KeyError, match="dloss_dlam"):
        pol.predict(obs)
        pol.observe(obs, action, reward, next_obs, term, trunc, {})


@pytest.mark.parametrize("derivative", ["resampled", "fixed"])
def test_vi_variance_moves_phi_against_the_variance_gradient(derivative):
    """β = 0: one Adam step moves μ against ∂J/∂λ = ∂(Var(ℓ_x)/ℓ_x²)/∂λ + ∂(Var(ℓ_a)/ℓ_a²)/∂λ; 0 leaves φ."""
    obs = np.array([0.1, -0.2, 0.3, 0.05, 0.5, 0.1], np.float32)
    key_r, key_f = VARIANCE_GRADIENT_KEYS[derivative]
    pol = VIVariance(kl_coef=0.0, lr=1e-2, seed=0, derivative=derivative)
    phi0 = _phi(pol)
    for grad_r, grad_f, sign in ((0.3, 0.2, -1.0), (0.3, -0.5, 1.0), (0.2, -0.2, 0.0)):
        pol.reset(0)
        mu_before = pol.network(VIVariance.context(obs[None]))[0].item()
        action, _ = pol.predict(obs)
        info = {key_r: grad_r, key_f: grad_f, "dloss_dlam": 7.0}  # dloss_dlam must not matter
        pol.observe(obs, action, 0.0, obs, False, False, info)
        mu_after = pol.network(VIVariance.context(obs[None]))[0].item()
        assert np.sign(mu_after - mu_before) == sign
        assert pol.last["drel_var_dlam"] == pytest.approx(grad_r + grad_f)
        assert torch.equal(_phi(pol), phi0) == (sign == 0.0)
    pol.predict(obs)
    with pytest.raises(KeyError, match=key_f):
        pol.observe(obs, action, 0.0, obs, False, False, {key_r: 0.1})
    with pytest.raises(ValueError, match="VIVariance.derivative must be 'resampled' or 'fixed', got 'exact'"):
        VIVariance(derivative="exact")


def test_vi_variance_runs_through_the_env(tiny_checkpoint):
    env = gym.make("unlearn_gym/SISS-v0", checkpoint=str(tiny_checkpoint), horizon=3, **KW)
    pol = VIVariance(kl_coef=0.0, lr=1e-2, seed=0)
    pol.reset(0)
    obs, _ = env.reset(seed=0)
    phi0 = _phi(pol)
    done = False
    while not done:
        action, _ = pol.predict(obs)
        next_obs, reward, term, trunc, info = env.step(action)
        assert 0.0 <= info["lam"] <= 1.0
        grads = [info[k] for k in VARIANCE_GRADIENT_KEYS["resampled"]]
        assert all(np.isfinite(g) for g in grads) and sum(grads) != 0.0
        assert 0.0 <= info["rel_var_loss_r"] <= 1.0 and 0.0 <= info["rel_var_loss_f"] <= 1.0
        pol.observe(obs, action, reward, next_obs, term, trunc, info)
        obs, done = next_obs, term or trunc
    assert trunc and not term
    assert not torch.equal(_phi(pol), phi0)  # the variance gradient reached φ


def test_vi_policy_samples_and_is_reproducible():
    obs = np.zeros((4, 6), np.float32)
    a = VIAdaptive(seed=5).predict(obs)[0]
    b = VIAdaptive(seed=5).predict(obs)[0]
    assert np.array_equal(a, b) and len(np.unique(a)) == 4  # u differs per row
    mean_only = VIAdaptive(seed=5, sample=False).predict(obs, deterministic=True)[0]
    assert len(np.unique(mean_only)) == 1


def test_baselines_work_with_sb3_evaluate_policy(tiny_checkpoint):
    from stable_baselines3.common.evaluation import evaluate_policy

    env = gym.make("unlearn_gym/SISS-v0", checkpoint=str(tiny_checkpoint), horizon=2, **KW)
    mean, std = evaluate_policy(LinearSchedule(), env, n_eval_episodes=2, warn=False)
    assert np.isfinite(mean) and np.isfinite(std)


def test_the_action_lambda_map_and_the_observation_tail_are_defined_once():
    from unlearn_gym.envs.conventions import OBS_TAIL, PROGRESS_INDEX, action_from_lam, lam_from_action
    from unlearn_gym.envs.sfd_env import OBS_NAMES as SFD_OBS
    from unlearn_gym.envs.siss_env import OBS_NAMES as SISS_OBS

    np.testing.assert_array_equal(lam_from_action([-1.0, 0.0, 1.0, 3.0, -2.0]), [0.0, 0.5, 1.0, 1.0, 0.0])
    lam = np.array([0.0, 0.25, 0.5, 1.0])
    assert action_from_lam(lam).dtype == np.float32
    np.testing.assert_allclose(lam_from_action(action_from_lam(lam)), lam)
    assert SISS_OBS[-2:] == SFD_OBS[-2:] == OBS_TAIL and SISS_OBS[PROGRESS_INDEX] == "progress"
