"""The batched vector env: gymnasium.make_vec over one N-run engine; run i is the single env seeded like it."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL_SAMPLED_PROBE
from gymnasium.vector import AutoresetMode, VectorEnv

import unlearn_gym  # noqa: F401  (registers the envs)
from unlearn_gym.envs.vector import UnlearningVectorEnv

KW = dict(batch_size=2, probe_size=1, device="cpu", horizon=6, **SMALL_SAMPLED_PROBE)
# float32 on the CPU: "loop" reproduces the single env bit for bit; "vmap" runs batched kernels, so
# observations and rewards agree to rtol 1e-3 / atol 1e-4 and weights to atol 2·lr per update.
VMAP_TOL = dict(rtol=1e-3, atol=1e-4)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_vec(checkpoint, env_id="unlearn_gym/SISS-v0", num_envs=2, **kwargs):
    kw = (
        KW if "SFD" not in env_id else {k: v for k, v in KW.items() if k not in SMALL_SAMPLED_PROBE}
    )  # SFD: no sampled reward
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", checkpoint=str(checkpoint),
        **{**kw, **kwargs},
    )  # fmt: skip


def _poison(engine, run):
    """Force run ``run`` to diverge at its next update (non-finite weights)."""
    with torch.no_grad():
        next(iter(engine.params.values()))[run].fill_(float("nan"))


@pytest.mark.parametrize("executor", ["loop", "vmap"])
@pytest.mark.parametrize("env_id", ["unlearn_gym/SISS-v0", "unlearn_gym/Hybrid-v0"])
def test_run_i_is_the_single_env_seeded_like_it(tiny_checkpoint, env_id, executor):
    seeds = [11, 12]
    # "vmap" moves the weights by rounding, which can flip a classifier's verdict on a sample: the
    # sampled reward is compared under "loop" (bit for bit), the denoising-loss reward under both
    kw = {} if executor == "loop" else {"reward": "probe"}
    venv = make_vec(tiny_checkpoint, env_id, executor=executor, **kw)
    singles = [gym.make(env_id, checkpoint=str(tiny_checkpoint), **{**KW, **kw}) for _ in seeds]
    same = np.testing.assert_array_equal if executor == "loop" else (lambda a, b: np.testing.assert_allclose(a, b, **VMAP_TOL))  # fmt: skip

    obs, _ = venv.reset(seed=seeds)
    for i, (env, s) in enumerate(zip(singles, seeds)):
        same(obs[i], env.reset(seed=s)[0])
    events = {"diverged": 0, "truncated": 0}
    for step in range(10):
        actions = np.array([[np.sin(step + 2 * i)] for i in range(2)], dtype=np.float32)
        if step == 3:  # run 0 diverges alone
            _poison(venv.unwrapped.engine, 0)
            _poison(singles[0].unwrapped.engine, 0)
        if step == 7:  # a masked reset of run 1 (which truncated and restarted at step 5)
            obs, _ = venv.reset(options={"reset_mask": np.array([False, True])})
            same(obs[1], singles[1].reset()[0])
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(actions[i])
            assert (terminated[i], truncated[i]) == (term, trunc)
            same(np.array([rewards[i]]), np.array([r]))
            if term or trunc:  # SAME_STEP autoreset: the last observation is in final_obs
                same(infos["final_obs"][i], o)
                assert infos["final_info"]["diverged"][i] == info["diverged"] and infos["_final_obs"][i]
                events["diverged" if term else "truncated"] += 1
                o, _ = env.reset()
            same(obs[i], o)
    assert events == {"diverged": 1, "truncated": 2}  # run 0 at step 3; run 1 at step 5, run 0 again at step 9
    for i, env in enumerate(singles):
        for p, q in zip(venv.unwrapped.engine.model(i).parameters(), env.unwrapped.engine.model().parameters()):
            if executor == "loop":
                assert torch.equal(p, q)
            else:
                torch.testing.assert_close(p, q, rtol=0, atol=2 * 5e-5 * 10)


def test_vector_env_api(tiny_checkpoint):
    venv = make_vec(tiny_checkpoint, num_envs=3)
    assert isinstance(venv, UnlearningVectorEnv) and isinstance(venv, VectorEnv) and venv.num_envs == 3
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    single = gym.make("unlearn_gym/SISS-v0", checkpoint=str(tiny_checkpoint), **KW)
    assert venv.single_action_space == single.action_space
    assert venv.single_observation_space == single.observation_space
    assert venv.action_space.shape == (3, 1) and venv.observation_space.shape == (3, 6)
    obs, infos = venv.reset(seed=5)
    assert obs.dtype == np.float32 and venv.observation_space.contains(obs)
    assert infos["_instance"].all() and set(infos["reference"]) >= {"loss_r", "_loss_r"}
    np.testing.assert_array_equal(obs, venv.reset(seed=[5, 6, 7])[0])  # an int seed s seeds run i with s + i
    obs, rewards, terminated, truncated, infos = venv.step(venv.action_space.sample())
    assert venv.observation_space.contains(obs) and rewards.shape == (3,) and rewards.dtype == np.float64
    assert terminated.dtype == bool and truncated.shape == (3,)
    assert infos["_lam"].all() and infos["lam"].shape == (3,) and infos["step"].tolist() == [1, 1, 1]
    # out-of-range actions are clipped exactly as the single env clips them
    _, _, _, _, infos = venv.step(np.array([[5.0], [-3.0], [0.0]], dtype=np.float32))
    assert infos["lam"].tolist() == [1.0, 0.0, 0.5] and infos["action_clipped"].tolist() == [True, True, False]
    # per-run instances
    venv.reset(seed=0, options={"instance": [None, 1, 2]})
    assert venv.unwrapped.engine.forget_set(0)[0].shape[0] == len(single.unwrapped.scenario.forget)
    venv.close()


def test_bad_input_names_the_run_and_steps_nothing(tiny_checkpoint):
    with pytest.raises(ValueError, match="num_envs must be an int >= 1, got 0"):
        make_vec(tiny_checkpoint, num_envs=0)
    venv = make_vec(tiny_checkpoint, num_envs=2)
    with pytest.raises(RuntimeError, match=r"step called before reset\(\) \(runs \[0, 1\]\)"):
        venv.step(np.zeros((2, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"leaves runs \[1\] without a first reset; call reset\(\) without a mask"):
        venv.reset(options={"reset_mask": np.array([True, False])})
    with pytest.raises(ValueError, match="expected one seed per run, a list of 2, got 3"):
        venv.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="seed of run 1 must be an int >= 0 or None"):
        venv.reset(seed=[1, -2])
    venv.reset(seed=[1, 2])
    engine = venv.unwrapped.engine
    before = [p.clone() for p in engine.params.values()]
    with pytest.raises(ValueError, match=r"run 1: action must be finite, got \[nan\]; nothing was stepped"):
        venv.step(np.array([[0.0], [np.nan]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"run 0: action must be finite, got \[inf\]"):
        venv.step(np.array([[np.inf], [0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"actions: expected shape \(2, 1\) \(one row per run\), got \(3, 1\)"):
        venv.step(np.zeros((3, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="actions: expected a float array of shape"):
        venv.step(np.array([["a"], ["b"]]))
    with pytest.raises(ValueError, match=r"reset: options\['reset_mask'\] must be a bool array of shape \(2,\)"):
        venv.reset(options={"reset_mask": [1, 0]})
    with pytest.raises(ValueError, match=r"run 1: reset: options\['instance'\] must be an int >= 0"):
        venv.reset(options={"instance": [0, -1]})
    assert engine.step_count.tolist() == [0, 0]  # nothing was half-applied
    assert all(torch.equal(p, q) for p, q in zip(engine.params.values(), before))
    sfd = make_vec(tiny_checkpoint, "unlearn_gym/SFD-v0", num_envs=2)
    with pytest.raises(ValueError, match=r"run 1: reset: SFD-v0 takes no options, got \['instance'\]"):
        sfd.reset(options={"instance": [None, 3]})


def test_on_episode_end_sees_each_run_s_last_model_before_the_autoreset(tiny_checkpoint):
    venv = make_vec(tiny_checkpoint, num_envs=2, horizon=2)
    env = venv.unwrapped
    pretrained = [p.detach().clone() for p in env.unlearned_model(0).parameters()]
    seen = []

    def changed(run):
        return any(not torch.equal(w, p) for w, p in zip(env.unlearned_model(run).parameters(), pretrained))

    env.on_episode_end = lambda run: seen.append((run, changed(run)))
    venv.reset(seed=0)
    venv.step(np.zeros((2, 1), dtype=np.float32))
    assert seen == []  # no run has ended
    _, _, _, truncated, _ = venv.step(np.zeros((2, 1), dtype=np.float32))
    assert truncated.all() and seen == [(0, True), (1, True)]  # in run order, each with its unlearned weights
    assert not changed(0) and not changed(1)  # then the autoreset restored the pretrained weights
    venv.close()
