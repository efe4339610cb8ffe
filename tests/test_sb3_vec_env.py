"""The SB3 adapter over the batched vector env: SB3's VecEnv semantics, PPO with VecNormalize, train --num-envs."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL_SAMPLED_PROBE

import unlearn_gym  # noqa: F401  (registers the envs)
from unlearn_gym.cli import main
from unlearn_gym.envs.sb3 import SB3VecEnv

KW = dict(batch_size=2, probe_size=1, device="cpu", **SMALL_SAMPLED_PROBE)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_sb3(checkpoint, num_envs, **kwargs):
    venv = gym.make_vec(
        "unlearn_gym/SISS-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", checkpoint=str(checkpoint),
        **{**KW, **kwargs},
    )  # fmt: skip
    return SB3VecEnv(venv)


def test_ppo_learns_on_four_batched_runs_with_vecnormalize(tiny_checkpoint):
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    venv = VecNormalize(VecMonitor(make_sb3(tiny_checkpoint, 4, horizon=8)))
    venv.seed(0)
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(128)
    assert model.num_timesteps == 128
    assert len(model.ep_info_buffer) == 4 * 32 // 8  # every run's episodes, through VecMonitor
    assert any(not torch.equal(p, q) for p, q in zip(model.policy.parameters(), before))
    venv.training = False
    mean, std = evaluate_policy(model, venv, n_eval_episodes=4, deterministic=True)
    assert np.isfinite(mean) and np.isfinite(std)


def test_sb3_semantics_autoreset_terminal_observation_and_methods(tiny_checkpoint):
    from stable_baselines3.common.vec_env import VecEnv

    venv = make_sb3(tiny_checkpoint, 2, horizon=3)
    assert isinstance(venv, VecEnv) and venv.num_envs == 2 and venv.action_space.shape == (1,)
    venv.seed(3)
    obs = venv.reset()
    assert obs.shape == (2, 6)
    assert [set(i) for i in venv.reset_infos] == [{"instance", "reference", "sampled_reference"}] * 2
    venv.seed(3)
    np.testing.assert_array_equal(venv.reset(), obs)  # seed() applies at the next reset
    actions = np.zeros((2, 1), dtype=np.float32)
    for _ in range(2):
        obs, rewards, dones, infos = venv.step(actions)
        assert not dones.any() and rewards.dtype == np.float32 and len(infos) == 2
    obs, rewards, dones, infos = venv.step(actions)  # the horizon ends both runs: automatic reset
    assert dones.all() and np.all(obs[:, 5] == 0.0)  # the new episodes' first observations (t/T = 0)
    for info in infos:
        assert info["TimeLimit.truncated"] and info["terminal_observation"].shape == (6,)
        assert info["terminal_observation"][5] == 1.0 and not info["diverged"]
    with torch.no_grad():  # run 1 diverges alone: a termination, not a truncation
        next(iter(venv.venv.engine.params.values()))[1].fill_(float("nan"))
    obs, rewards, dones, infos = venv.step(actions)
    assert dones.tolist() == [False, True] and infos[1]["diverged"] and not infos[1]["TimeLimit.truncated"]
    assert rewards[1] == -10.0 and np.all(np.isfinite(obs))
    assert [c.horizon for c in venv.get_attr("config")] == [3, 3]
    assert venv.env_method("check_reset_options", None, indices=[1]) == [None]
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False]
    venv.set_options({"instance": 2})
    venv.reset()
    assert venv.reset_infos[0]["instance"] == 2 and venv.reset_infos[1]["instance"] == 2
    venv.set_options({"lam": 0.3})
    with pytest.raises(ValueError, match=r"set_options: unknown option\(s\) \['lam'\]"):
        venv.reset()
    with pytest.raises(TypeError, match="SB3VecEnv wraps an UnlearningVectorEnv, got SISSEnv"):
        SB3VecEnv(gym.make("unlearn_gym/SISS-v0", checkpoint=str(tiny_checkpoint), **KW))


def test_train_num_envs_trains_ppo_on_one_batched_env(tiny_checkpoint, tmp_path, capsys):
    env_kwargs = json.dumps({**KW, "checkpoint": str(tiny_checkpoint), "horizon": 4})
    argv = ["train", "--algo", "ppo", "--num-envs", "2", "--timesteps", "32", "--env-kwargs", env_kwargs]
    argv += ["--hyperparams", '{"n_steps": 8, "batch_size": 16, "n_epochs": 1}', "--out", str(tmp_path)]
    argv += ["--checkpoint-freq", "0", "--sample-every", "0", "--no-tensorboard", "--json", "--no-progress"]
    assert main(argv + ["--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["timesteps"] == 32 and (tmp_path / "agent" / "agent.json").is_file()
    assert json.loads((tmp_path / "train.json").read_text())["num_envs"] == 2
    from unlearn_gym.agents.train import make_batched_env

    with pytest.raises(ValueError, match="Pendulum-v1 has no batched vector env"):
        make_batched_env("Pendulum-v1", {}, 2)
