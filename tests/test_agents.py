import json

import numpy as np
import pytest
import torch
from conftest import SMALL_SAMPLED_PROBE

from unlearn_gym.agents import MCPG, load_agent, load_hyperparams, train_agent
from unlearn_gym.models.checkpoint import CheckpointError

TINY_OVERRIDES = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
    "sac": {"learning_starts": 50, "batch_size": 32},
    "td3": {"learning_starts": 50, "batch_size": 32},
    "ddpg": {"learning_starts": 50, "batch_size": 32},
    "mcpg": {"episodes_per_update": 2},
}


@pytest.fixture
def env_kwargs(tiny_checkpoint):
    return dict(
        checkpoint=str(tiny_checkpoint), batch_size=2, probe_size=1, horizon=8, device="cpu", **SMALL_SAMPLED_PROBE
    )


def _scalar_tags(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in tb_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | {f"image:{t}" for t in acc.Tags()["images"]}
    return tags


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "sac", "td3", "ddpg", "mcpg"])
def test_each_algorithm_trains_end_to_end_and_the_saved_agent_acts_identically(algo, env_kwargs, tmp_path):
    out = tmp_path / algo
    result = train_agent(
        algo,
        total_timesteps=96,
        seed=0,
        out=out,
        env_kwargs=env_kwargs,
        overrides=TINY_OVERRIDES[algo],
        progress_bar=False,
        sample_every=10,
    )
    assert result.timesteps >= 96
    info = json.loads((out / "agent" / "agent.json").read_text())
    assert info["algo"] == algo and info["env_kwargs"]["horizon"] == 8
    tags = _scalar_tags(out / "tb")
    assert {"unlearn/lam", "unlearn/loss_r", "unlearn/reward_efficacy_gain", "episode/return"} <= tags
    assert "image:episode/samples" in tags  # 96 steps = 12 episodes: a grid at the 10th

    agent = load_agent(out)  # the exported, pickle-free agent
    obs = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    actions, _ = agent.predict(obs, deterministic=True)
    assert actions.shape == (16, 1) and np.all(np.abs(actions) <= 1)
    if algo == "mcpg":
        model = MCPG(
            _env(env_kwargs),
            seed=0,
            **load_hyperparams("mcpg", "unlearn_gym/SISS-v0", overrides=TINY_OVERRIDES["mcpg"]),
        )
        model.load(out / "model.safetensors")
        reference, _ = model.predict(obs, deterministic=True)
    else:  # SB3's own save + VecNormalize statistics give the same actions
        from stable_baselines3 import DDPG, PPO, SAC, TD3
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        cls = {"ppo": PPO, "sac": SAC, "td3": TD3, "ddpg": DDPG}[algo]
        model = cls.load(out / "model.zip", device="cpu")
        venv = VecNormalize.load(str(out / "vecnormalize.pkl"), DummyVecEnv([lambda: _env(env_kwargs)]))
        venv.training = False
        reference, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    np.testing.assert_allclose(actions, reference, rtol=1e-6, atol=1e-6)
    again, _ = load_agent(out / "agent").predict(obs, deterministic=True)
    assert np.array_equal(actions, again)


def _env(env_kwargs):
    import gymnasium as gym

    import unlearn_gym  # noqa: F401

    return gym.make("unlearn_gym/SISS-v0", **env_kwargs)


def test_ppo_resumes_from_its_checkpoint(env_kwargs, tmp_path):
    kw = dict(seed=0, out=tmp_path, env_kwargs=env_kwargs, overrides=TINY_OVERRIDES["ppo"], progress_bar=False)
    kw |= dict(sample_every=0, checkpoint_freq=64)
    train_agent("ppo", total_timesteps=64, **kw)
    assert (tmp_path / "checkpoints" / "ppo_64_steps.zip").is_file()
    assert (tmp_path / "checkpoints" / "ppo_vecnormalize_64_steps.pkl").is_file()
    first = load_agent(tmp_path)
    result = train_agent("ppo", total_timesteps=128, resume=True, **kw)
    assert result.timesteps == 128 and (tmp_path / "checkpoints" / "ppo_128_steps.zip").is_file()
    resumed = load_agent(tmp_path)
    assert resumed.info["timesteps"] == 128
    # the normalisation statistics continued from the checkpoint's (not restarted)
    assert not np.array_equal(first._mean, resumed._mean)
    assert json.loads((tmp_path / "train.json").read_text())["resumed"] is True
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_agent("ppo", total_timesteps=128, resume=True, **{**kw, "out": tmp_path / "empty"})


def test_mcpg_resume_equals_the_uninterrupted_run(env_kwargs, tmp_path):
    kw = dict(seed=1, env_kwargs=env_kwargs, overrides={"episodes_per_update": 1}, progress_bar=False)
    kw |= dict(sample_every=0, tensorboard=False, checkpoint_freq=8)
    train_agent("mcpg", total_timesteps=24, out=tmp_path / "whole", **kw)
    train_agent("mcpg", total_timesteps=16, out=tmp_path / "split", **kw)
    train_agent("mcpg", total_timesteps=24, out=tmp_path / "split", resume=True, **kw)
    whole, split = load_agent(tmp_path / "whole"), load_agent(tmp_path / "split")
    for (k, a), (_, b) in zip(whole.policy.state_dict().items(), split.policy.state_dict().items()):
        assert torch.equal(a, b), k


def test_hyperparams_and_bad_agent_directories(tmp_path):
    hp = load_hyperparams("ppo", "unlearn_gym/SISS-v0", overrides={"n_steps": 16})
    assert hp["n_steps"] == 16 and hp["policy"] == "MlpPolicy" and hp["normalize"]["norm_obs"] is True
    with pytest.raises(ValueError, match="algo must be one of"):
        load_hyperparams("a2c", "unlearn_gym/SISS-v0")
    with pytest.raises(CheckpointError, match="not an exported agent"):
        load_agent(tmp_path)


def test_train_command(env_kwargs, tmp_path, capsys):
    from unlearn_gym.cli import main

    kwargs = {k: v for k, v in env_kwargs.items() if k != "checkpoint"}
    argv = ["train", "--algo", "mcpg", "--checkpoint", env_kwargs["checkpoint"], "--env-kwargs", json.dumps(kwargs)]
    argv += ["--timesteps", "16", "--out", str(tmp_path), "--json", "--no-progress", "--sample-every", "0"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["algo"] == "mcpg" and summary["timesteps"] == 16
    assert load_agent(summary["agent"]).env_kwargs["horizon"] == 8
    with pytest.raises(SystemExit, match="must be a JSON object"):
        main(["train", "--algo", "ppo", "--out", str(tmp_path), "--env-kwargs", "[1]"])


def test_train_command_killed_mid_run_resumes_to_the_requested_timesteps(env_kwargs, tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from unlearn_gym.cli import main

    kwargs = {k: v for k, v in env_kwargs.items() if k != "checkpoint"}
    argv = ["train", "--algo", "ppo", "--checkpoint", env_kwargs["checkpoint"], "--env-kwargs", json.dumps(kwargs)]
    argv += ["--timesteps", "192", "--checkpoint-freq", "64", "--hyperparams", json.dumps(TINY_OVERRIDES["ppo"])]
    argv += ["--out", str(tmp_path), "--json", "--no-progress", "--no-tensorboard", "--sample-every", "0"]
    argv += ["--threads", "1"]
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "unlearn_gym.cli", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = tmp_path / "checkpoints" / "ppo_vecnormalize_64_steps.pkl"  # the last file of the 64-step checkpoint
    t0 = time.monotonic()
    while not first.is_file():
        assert proc.poll() is None, f"train ended (rc {proc.returncode}) before it could be killed"
        assert time.monotonic() - t0 < 300, "timed out waiting for the first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "agent").exists() and not (tmp_path / "train.json").exists()  # killed mid-run
    (tmp_path / "checkpoints" / "ppo_1000_steps.zip").write_bytes(b"PK\x03\x04 cut")  # as if killed while saving

    assert main([*argv, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "skipping the incomplete checkpoint at 1000 steps: ppo_1000_steps.zip is unreadable" in captured.err
    summary = json.loads(captured.out)
    assert summary["timesteps"] == 192 and load_agent(tmp_path).info["timesteps"] == 192
    assert json.loads((tmp_path / "train.json").read_text())["resumed"] is True
    assert (tmp_path / "checkpoints" / "ppo_192_steps.zip").is_file()


def test_an_sb3_checkpoint_is_complete_only_with_a_readable_zip_and_whole_pickles(tmp_path):
    import pickle
    import zipfile

    from unlearn_gym.agents.train import _complete_sb3_checkpoint

    path = tmp_path / "sac_64_steps.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", "{}")
    companions = ("replay_buffer", "vecnormalize")
    assert _complete_sb3_checkpoint(path, 64, "sac", ()) is None
    assert _complete_sb3_checkpoint(path, 64, "sac", companions) == "sac_replay_buffer_64_steps.pkl is missing"
    whole = pickle.dumps({"obs": list(range(100))})
    (tmp_path / "sac_replay_buffer_64_steps.pkl").write_bytes(whole)
    (tmp_path / "sac_vecnormalize_64_steps.pkl").write_bytes(whole[:-3])  # killed while writing it
    assert _complete_sb3_checkpoint(path, 64, "sac", companions) == "sac_vecnormalize_64_steps.pkl is truncated"
    (tmp_path / "sac_vecnormalize_64_steps.pkl").write_bytes(whole)
    assert _complete_sb3_checkpoint(path, 64, "sac", companions) is None
    path.write_bytes(path.read_bytes()[:-10])
    assert "sac_64_steps.zip is unreadable" in _complete_sb3_checkpoint(path, 64, "sac", companions)


def test_mcpg_collects_n_episodes_at_once_from_a_batched_env(env_kwargs, one_thread):
    """MCPG on a vector env: N = 1 trains exactly as on the single env; N = 2 collects two episodes per
    round, each the single env's episode for its seed and actions, and updates the policy from them."""
    import gymnasium as gym

    kw = {**env_kwargs, "horizon": 3}
    hp = dict(episodes_per_update=2, net_arch=(8,), learning_rate=0.05)
    single = _env(kw)
    a = MCPG(single, seed=3, **hp).learn(6)
    vec1 = gym.make_vec("unlearn_gym/SISS-v0", num_envs=1, vectorization_mode="vector_entry_point", **kw)
    b = MCPG(vec1, seed=3, **hp).learn(6)
    assert (
        (a.num_timesteps, a.num_episodes, a.num_updates)
        == (b.num_timesteps, b.num_episodes, b.num_updates)
        == (6, 2, 1)
    )
    for (k, x), (_, y) in zip(a.policy.state_dict().items(), b.policy.state_dict().items()):
        assert torch.equal(x, y), k
    vec1.close()

    vec2 = gym.make_vec("unlearn_gym/SISS-v0", num_envs=2, vectorization_mode="vector_entry_point", **kw)
    model = MCPG(vec2, seed=3, **hp)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    episodes = model._collect()  # one round: both runs' episodes
    assert (model.num_episodes, model.num_timesteps, len(episodes)) == (2, 6, 2)
    for i, (obs, z, rewards) in enumerate(episodes):  # replayed on the single env: the same episode
        o, _ = single.reset(seed=model._episode_seed(i))
        assert obs.shape == (3, 6) and np.array_equal(obs[0].numpy(), o)
        for t in range(3):
            o, r, terminated, truncated, _ = single.step(torch.tanh(z[t] / 2).numpy().astype(np.float32))
            assert r == rewards[t] and (t == 2 or np.array_equal(obs[t + 1].numpy(), o))
        assert truncated and not terminated
    assert not torch.equal(episodes[0][0], episodes[1][0])  # the runs' seeds differ (their observations do)
    stats = model._update(episodes)
    assert np.isfinite(stats["loss"]) and model.num_updates == 1
    assert any(not torch.equal(before[k], v) for k, v in model.policy.state_dict().items())
    with pytest.raises(ValueError, match="MCPG needs a vector env with SAME_STEP autoreset"):
        MCPG(gym.make_vec("CartPole-v1", num_envs=1, vectorization_mode="sync"), seed=0)
    vec2.close()


@pytest.mark.parametrize("env_id", ["unlearn_gym/SISS-v0", "unlearn_gym/SFD-v0"])
def test_logs_name_every_statistic_of_the_env(env_id, tiny_checkpoint):
    """The training logs record each field of the env's statistics dataclass by name (SFD's own losses
    too), plus λ and the reward terms: the callback reads the names from SB3's reset infos."""
    import dataclasses
    from types import SimpleNamespace

    import gymnasium as gym
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv

    from unlearn_gym.agents.callbacks import REWARD_KEYS, UnlearningLogCallback, step_keys
    from unlearn_gym.engines import SFDStepStats, StepStats

    stats_class = StepStats if env_id.endswith("SISS-v0") else SFDStepStats
    kw = dict(checkpoint=str(tiny_checkpoint), batch_size=2, probe_size=1, horizon=2, device="cpu")
    if stats_class is StepStats:  # SISS-v0's sampled reward at test scale (SFD-v0 has no such keywords)
        kw |= SMALL_SAMPLED_PROBE
    venv = DummyVecEnv([lambda: gym.make(env_id, **kw)])
    venv.reset()
    fields = tuple(f.name for f in dataclasses.fields(stats_class))
    action_keys = ("lam", "forget_scale_S") if stats_class is StepStats else ("lam",)
    assert step_keys(venv.reset_infos[0])[2 : 2 + len(fields)] == fields
    logger = Logger(None, [])
    callback = UnlearningLogCallback()
    callback.init_callback(SimpleNamespace(logger=logger, get_env=lambda: venv, num_timesteps=0))
    _, _, dones, infos = venv.step(np.zeros((1, 1), np.float32))
    callback.update_locals({"infos": infos, "dones": dones})
    callback.on_step()
    logged = {k.removeprefix("unlearn/"): v for k, v in logger.name_to_value.items() if k.startswith("unlearn/")}
    finite = {k for k in fields if k in infos[0] and np.isfinite(infos[0][k])}
    if stats_class is StepStats:  # the sampled reward reads the denoising probe at the last step only
        assert not {"probe_r", "probe_f"} & set(infos[0]) and len(finite) == len(fields) - 2
    reward_keys = set(REWARD_KEYS) if stats_class is StepStats else set(REWARD_KEYS[:3])  # SFD: no sampled reward
    assert set(logged) == {*action_keys, *finite, *reward_keys}
    assert all(logged[k] == pytest.approx(infos[0][k]) for k in logged)
    if stats_class is SFDStepStats:
        assert {"loss_psi_remain", "loss_remain", "loss_forget", "grad_remain_norm"} <= set(logged)
    venv.close()
