"""SFD with a run axis: the N-run SFD engine and SFD-v0 in the vector env."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import unlearn_gym  # noqa: F401  (registers the envs)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("sfd_batched")]  # module fixtures once

# A 10-step SFD-v0 trajectory recorded with the one-run SFDEngine of commit 7d58021 (torch.optim.Adam
# on modules), one CPU thread, on a fresh initialisation of the tiny preset (seed 0; no training, so
# the model's bits do not depend on the thread count or the order of the tests): the N-run engine
# must reproduce it. On the machine that recorded it the match is exact; the tolerance leaves room
# for another CPU's float32 kernels, whose rounding 10 Adam steps amplify: on a Xeon with AVX-512
# (torch 2.14.1, 2026-12-05) the observations differed by up to 7.5e-5 relative (2.6e-5 absolute)
# and Σθ by 1.2e-5 relative. A semantic error (Adam's bias correction, a mixture weight, the wrong
# teacher) moves them by 1e-3 or more.
GOLDEN_OBS = [
    [0, 0, 0, 0, 0.5, 0],
    [0.0399787948, -0.047678005, 5.09491014, 0.209163263, 0.5, 0.100000001],
    [-0.156553477, -0.2274331, 5.69549561, 0.260337591, 0.920735478, 0.200000003],
    [-0.187926158, -0.1893152, 5.55612707, 0.122449443, 0.954648733, 0.300000012],
    [-0.255277216, -0.232442349, 5.39433241, -0.24288404, 0.570559978, 0.400000006],
    [-0.409410745, -0.124250352, 5.75437737, 1.40789866, 0.12159875, 0.5],
    [0.0496214144, -0.109722614, 5.70817947, 1.22152388, 0.0205378532, 0.600000024],
    [-0.651369929, -0.465549827, 6.34711599, 0.897612751, 0.360292256, 0.699999988],
    [-0.229813442, -0.147596017, 6.08173418, 1.37413609, 0.828493297, 0.800000012],
    [-0.0358912051, -0.353734672, 5.8988471, 0.339250118, 0.994679093, 0.899999976],
    [-0.335901588, -0.188670993, 4.44517231, 1.96148002, 0.706059217, 1],
]
GOLDEN_REWARDS = [
    -1.3578780894835107e-11,
    -0.00420735477085789,
    -0.0003391324665014553,
    -0.003840887066529893,
    -0.004489612242796694,
    -0.00101060921707653,
    -0.0033975439997206724,
    -0.00468201039240387,
    -0.001661858273968095,
    -0.002886198708466209,
]  # fmt: skip
GOLDEN_PARAM_SUM, GOLDEN_PARAM_SQ = 813.3176477578372, 1980.9347152684256
"""Σθ and Σθ² (float64) of the generator after the 10 steps."""


@pytest.fixture(scope="module")
def fresh_tiny_checkpoint(tmp_path_factory):
    """The tiny preset at its seed-0 initialisation, saved as a default-scenario checkpoint."""
    from unlearn_gym.perf import _checkpoint_dir

    out = tmp_path_factory.mktemp("fresh_tiny")
    _checkpoint_dir(str(out), "tiny", 0)
    return out


def test_sfd_v0_reproduces_the_one_run_engine(fresh_tiny_checkpoint):
    env = gym.make(
        "unlearn_gym/SFD-v0", checkpoint=str(fresh_tiny_checkpoint), device="cpu", batch_size=2, probe_size=1,
        horizon=10, lr=1e-3, action_mode="both",
    )  # fmt: skip
    obs, _ = env.reset(seed=3)
    trace, rewards = [obs], []
    for i in range(10):
        obs, r, _, _, _ = env.step(np.sin(i + 0.7 * np.arange(10)).astype(np.float32))
        trace.append(obs)
        rewards.append(r)
    np.testing.assert_allclose(np.stack(trace), GOLDEN_OBS, rtol=3e-4, atol=1e-4)
    np.testing.assert_allclose(rewards, GOLDEN_REWARDS, rtol=1e-5, atol=1e-9)
    theta = torch.cat([p.detach().double().flatten() for p in env.unwrapped.engine.model().parameters()])
    assert theta.sum().item() == pytest.approx(GOLDEN_PARAM_SUM, rel=1e-4)
    assert theta.pow(2).sum().item() == pytest.approx(GOLDEN_PARAM_SQ, rel=1e-5)


KW = dict(batch_size=2, probe_size=1, device="cpu", horizon=6, lr=1e-3, action_mode="both")
LR = KW["lr"]
SEEDS = [11, 12]
# float32 on the CPU: "loop" reproduces the single env bit for bit. "vmap" runs batched kernels:
# at reset ψ = θ = the teacher, so ℓ_remain and ‖∇ℓ_remain‖ are rounding noise (~1e-4) and their
# log features agree to atol 1e-3; rewards (differences of classifier probabilities) to atol 1e-6;
# weights to 2·lr per update (Adam with β₁ = 0 steps ±lr on a near-zero gradient's sign).
VMAP_TOL = dict(rtol=1e-3, atol=1e-3)
VMAP_REWARD_TOL = dict(rtol=1e-3, atol=1e-6)


def _actions(step):
    """One row per run: λ and the target logits of "both" mode, different for each run."""
    return np.array([np.sin(step + 2 * i + 0.7 * np.arange(10)) for i in range(2)], dtype=np.float32)


def _poison(engine, run):
    """Force run ``run`` to diverge at its next update (non-finite generator weights)."""
    with torch.no_grad():
        next(iter(engine.params.values()))[run].fill_(float("nan"))


def _single_runs(checkpoint):
    """The script of the vector env played by one single env per run: per step (obs, reward, term, trunc, last obs)."""
    envs = [gym.make("unlearn_gym/SFD-v0", checkpoint=str(checkpoint), **KW) for _ in SEEDS]
    first = [env.reset(seed=s)[0] for env, s in zip(envs, SEEDS)]
    steps, masked_reset = [], None
    for step in range(10):
        if step == 3:
            _poison(envs[0].unwrapped.engine, 0)
        if step == 7:
            masked_reset = envs[1].reset()[0]
        row = []
        for i, env in enumerate(envs):
            o, r, term, trunc, _ = env.step(_actions(step)[i])
            last = o
            if term or trunc:
                o, _ = env.reset()
            row.append((o, r, term, trunc, last))
        steps.append(row)
    params = [[p.detach().clone() for p in env.unwrapped.engine.model().parameters()] for env in envs]
    return first, steps, masked_reset, params


def test_sfd_vector_env_run_i_is_the_single_env_seeded_like_it(tiny_checkpoint):
    first, steps, masked_reset, single_params = _single_runs(tiny_checkpoint)
    for executor in ("loop", "vmap"):
        if executor == "loop":
            same = reward_same = np.testing.assert_array_equal
        else:
            same = lambda a, b: np.testing.assert_allclose(a, b, **VMAP_TOL)  # noqa: E731
            reward_same = lambda a, b: np.testing.assert_allclose(a, b, **VMAP_REWARD_TOL)  # noqa: E731
        venv = gym.make_vec(
            "unlearn_gym/SFD-v0", num_envs=2, vectorization_mode="vector_entry_point", executor=executor,
            checkpoint=str(tiny_checkpoint), **KW,
        )  # fmt: skip
        obs, infos = venv.reset(seed=SEEDS)
        same(obs, np.stack(first))
        assert infos["forget_class"].tolist() == [0, 0]
        events = {"diverged": 0, "truncated": 0}
        for step in range(10):
            if step == 3:  # run 0 diverges alone
                _poison(venv.unwrapped.engine, 0)
            if step == 7:  # a masked reset of run 1 (which truncated and restarted at step 5)
                obs, _ = venv.reset(options={"reset_mask": np.array([False, True])})
                same(obs[1], masked_reset)
            obs, rewards, terminated, truncated, infos = venv.step(_actions(step))
            for i, (o, r, term, trunc, last) in enumerate(steps[step]):
                assert (terminated[i], truncated[i]) == (term, trunc)
                reward_same(np.array([rewards[i]]), np.array([r]))
                same(obs[i], o)
                if term or trunc:  # SAME_STEP autoreset: the last observation is in final_obs
                    same(infos["final_obs"][i], last)
                    assert infos["final_info"]["diverged"][i] == term
                    events["diverged" if term else "truncated"] += 1
        assert events == {"diverged": 1, "truncated": 2}  # run 0 at step 3; run 1 at step 5, run 0 at step 9
        for i in range(2):
            for p, q in zip(venv.unwrapped.engine.model(i).parameters(), single_params[i]):
                if executor == "loop":
                    assert torch.equal(p, q)
                else:
                    torch.testing.assert_close(p, q, rtol=0, atol=2 * LR * 10)


def test_sfd_engine_per_run_restore_ema_and_bad_input(tiny_checkpoint):
    from unlearn_gym.engines import SFDEngine
    from unlearn_gym.models import load_model
    from unlearn_gym.objectives.sfd import SFDConfig

    unet, _ = load_model(tiny_checkpoint)
    engine = SFDEngine(unet, 0, list(range(1, 10)), SFDConfig(batch_size=2, lr=LR), num_runs=2, executor="loop")
    engine.seed([1, 2])
    with pytest.raises(
        ValueError, match=r"target_weights: expected shape \(9,\) or \(2, 9\), one row per run, got \(3, 9\)"
    ):
        engine.update(0.5, np.ones((3, 9)))
    bad = np.full((2, 9), 1 / 9)
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"target_weights of run 1 must be finite and >= 0, got \[0.1"):
        engine.update(0.5, bad)
    with pytest.raises(ValueError, match=r"lam: expected a scalar or one value per run, shape \(2,\), got \(3,\)"):
        engine.update([0.1, 0.2, 0.3])
    assert engine.step_count.tolist() == [0, 0]  # nothing was half-applied
    stats = engine.update([0.3, 0.7], np.full(9, 1 / 9))
    assert stats.values.shape == (2, 10) and np.isnan(stats.column("probe_forget_p")).all()  # no classifier
    assert np.isfinite(stats.column("loss_psi_remain")).all() and engine.step_count.tolist() == [1, 1]
    for name, w in engine.teacher_params.items():
        # Adam with β₁ = 0, first step: Δ = −lr·g/(|g| + eps), so every entry moved by at most lr
        assert (engine.params[name] - w).abs().max() <= LR * 1.001 and (engine.psi[name] - w).abs().max() <= LR * 1.001
        torch.testing.assert_close(engine.ema[name], w + 1e-4 * (engine.params[name] - w))  # EMA 0.9999
    model = engine.model(1)
    engine.use_ema([0])
    engine.restore([1])
    assert engine.step_count.tolist() == [1, 0] and engine._adam["theta"][2].tolist() == [1.0, 0.0]
    for (name, w), q in zip(engine.teacher_params.items(), model.parameters()):
        assert torch.equal(engine.params[name][0], engine.ema[name][0])
        for stack in (engine.params, engine.psi, engine.ema):
            assert torch.equal(stack[name][1], w)
        assert torch.equal(q, w)  # model(1) follows run 1's weights
