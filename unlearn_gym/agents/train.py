"""Train an RL agent (SB3 PPO/SAC/TD3/DDPG, or MCPG) on any registered unlearn-gym env.

What ``train_agent`` writes into ``out``::

    agent/                 the exported, pickle-free agent (agent.json + policy.safetensors):
                           what `unlearn-gym bench --policies agent:DIR` and `load_agent` read
    model.zip              SB3's own save (``PPO.load``), or model.safetensors for MCPG
    vecnormalize.pkl       SB3's VecNormalize statistics (when observations are normalised)
    checkpoints/           periodic checkpoints (CheckpointCallback, with VecNormalize and replay buffer)
    tb/                    TensorBoard logs: λ, losses, reward terms, episode metrics, sample grids
    train.json             the settings, hyperparameters, timesteps and wall time

Resuming (``resume=True``) continues from the newest complete checkpoint in ``out/checkpoints``
up to ``total_timesteps`` in all (a run killed while SB3 wrote a checkpoint leaves that one
incomplete; it is skipped). SB3's zip and VecNormalize's pickle are unpickled then: resume only
from directories your own runs wrote.
"""

from __future__ import annotations

import os
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ..models.checkpoint import write_json_atomic
from ..splits import check_training_seeds
from .hyperparams import ALGO_NAMES, activation_class, load_hyperparams
from .policy import SB3_ALGOS, export_agent

__all__ = ["TrainResult", "train_agent", "make_training_env", "make_batched_training_env", "make_batched_env"]


@dataclass(frozen=True)
class TrainResult:
    out: Path
    """The output directory."""
    agent_dir: Path
    """The exported agent (``load_agent(agent_dir)``)."""
    algo: str
    timesteps: int
    """Env steps trained in all (including those before a resume)."""
    seconds: float
    """Wall time of this call."""


def make_training_env(
    env_id: str, env_kwargs: dict, n_envs: int, seed: int, sample_every: int = 0, vec_env: str = "dummy"
):
    """A Monitor-wrapped VecEnv of ``n_envs`` copies (episode grids with ``sample_every`` > 0).

    ``vec_env="subproc"`` runs each copy in its own process with the "spawn" start method (what
    CUDA needs); each copy then holds its own diffusion model.
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from ..envs.wrappers import EpisodeEndSamples

    kwargs = dict(env_kwargs)
    wrapper_class, wrapper_kwargs = None, None
    if sample_every > 0:
        kwargs["render_mode"] = "rgb_array"
        wrapper_class, wrapper_kwargs = EpisodeEndSamples, {"every": sample_every}
    if vec_env not in ("dummy", "subproc"):
        raise ValueError(f"vec_env must be 'dummy' or 'subproc', got {vec_env!r}")
    return make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=kwargs,
        wrapper_class=wrapper_class,
        wrapper_kwargs=wrapper_kwargs,
        vec_env_cls=SubprocVecEnv if vec_env == "subproc" else DummyVecEnv,
        vec_env_kwargs={"start_method": "spawn"} if vec_env == "subproc" else None,
    )


def make_batched_training_env(env_id: str, env_kwargs: dict, num_envs: int, seed: int):
    """A ``VecMonitor``-wrapped SB3 VecEnv over one batched vector env of ``num_envs`` runs.

    ``gymnasium.make_vec(env_id, num_envs=N, vectorization_mode="vector_entry_point")`` holds the N
    runs in one engine (one batched update per step); run i is seeded ``seed + i``.
    """
    from stable_baselines3.common.vec_env import VecMonitor

    from ..envs.sb3 import SB3VecEnv

    venv = SB3VecEnv(make_batched_env(env_id, env_kwargs, num_envs))
    venv.seed(seed)
    return VecMonitor(venv)


def make_batched_env(env_id: str, env_kwargs: dict, num_envs: int):
    """``gymnasium.make_vec(env_id, num_envs=N, vectorization_mode="vector_entry_point")``: N runs in one
    engine; a clear error where ``env_id`` has no batched vector env."""
    if gym.spec(env_id).vector_entry_point is None:
        raise ValueError(f"--num-envs: {env_id} has no batched vector env; use n_envs copies (the YAML's n_envs)")
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)


def _checkpoints(directory: Path, prefix: str, suffix: str) -> list[tuple[Path, int]]:
    """(path, steps) of every ``{prefix}_{steps}_steps{suffix}`` in ``directory``, newest first."""
    found = []
    for p in directory.glob(f"{prefix}_*_steps{suffix}"):
        m = re.fullmatch(rf"{re.escape(prefix)}_(\d+)_steps{re.escape(suffix)}", p.name)
        if m:
            found.append((p, int(m.group(1))))
    return sorted(found, key=lambda c: -c[1])


def _latest_checkpoint(directory: Path, prefix: str, suffix: str) -> tuple[Path, int] | None:
    found = _checkpoints(directory, prefix, suffix)
    return found[0] if found else None


def _complete_sb3_checkpoint(path: Path, steps: int, algo: str, companions: tuple[str, ...]) -> str | None:
    """Why the SB3 checkpoint ``path`` (``{algo}_{steps}_steps.zip``) cannot be resumed from, or None.

    CheckpointCallback writes the zip, then the replay buffer, then the VecNormalize statistics,
    none atomically: the zip must be a readable archive and each companion
    ``{algo}_{name}_{steps}_steps.pkl`` must exist and end with pickle's STOP opcode (checked
    without unpickling).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                return f"{path.name} is corrupt"
    except (zipfile.BadZipFile, OSError) as e:
        return f"{path.name} is unreadable ({e})"
    for name in companions:
        pkl = path.with_name(f"{algo}_{name}_{steps}_steps.pkl")
        if not pkl.is_file():
            return f"{pkl.name} is missing"
        with open(pkl, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return f"{pkl.name} is empty"
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b".":  # every pickle ends with the STOP opcode
                return f"{pkl.name} is truncated"
    return None


def _latest_complete_sb3_checkpoint(directory: Path, algo: str, companions: tuple[str, ...]) -> tuple[Path, int] | None:
    """The newest checkpoint that :func:`_complete_sb3_checkpoint` accepts (skipped ones are reported)."""
    for path, steps in _checkpoints(directory, algo, ".zip"):
        why = _complete_sb3_checkpoint(path, steps, algo, companions)
        if why is None:
            return path, steps
        print(f"resume: skipping the incomplete checkpoint at {steps} steps: {why}", file=sys.stderr, flush=True)
    return None


def _action_noise(noise_type: str | None, noise_std: float, action_dim: int):
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    if noise_type is None:
        return None
    mean, sigma = np.zeros(action_dim), noise_std * np.ones(action_dim)
    if noise_type == "normal":
        return NormalActionNoise(mean, sigma)
    if noise_type == "ornstein-uhlenbeck":
        return OrnsteinUhlenbeckActionNoise(mean, sigma)
    raise ValueError(f"noise_type must be 'normal' or 'ornstein-uhlenbeck', got {noise_type!r}")


def train_agent(
    algo: str,
    env_id: str = "unlearn_gym/SISS-v0",
    total_timesteps: int = 2048,
    *,
    seed: int = 0,
    out: str | Path = "runs/agent",
    env_kwargs: dict | None = None,
    hyperparams_file: str | Path | None = None,
    overrides: dict | None = None,
    device: str = "cpu",
    tensorboard: bool = True,
    progress_bar: bool = True,
    checkpoint_freq: int = 0,
    resume: bool = False,
    sample_every: int = 10,
    vec_env: str = "dummy",
    num_envs: int | None = None,
    verbose: int = 0,
) -> TrainResult:
    """Train ``algo`` on ``env_id`` for ``total_timesteps`` env steps and export the agent.

    Args:
        algo: "ppo", "sac", "td3", "ddpg" (SB3) or "mcpg".
        env_id: any registered env id; ``env_kwargs`` go to ``gymnasium.make`` (merged over the
            YAML's ``env_kwargs``).
        hyperparams_file: a zoo-style YAML of your own; None = ``unlearn_gym/agents/hyperparams/<algo>.yml``.
        overrides: hyperparameters replacing the YAML's.
        device: where the agent's networks live (SB3's MLP policies are fastest on the CPU; the
            diffusion model's device is the env's ``device`` keyword).
        checkpoint_freq: save a checkpoint every this many env steps (0 = none).
        resume: continue from the newest checkpoint in ``out/checkpoints``.
        sample_every: log a sample grid to TensorBoard every this many episodes (0 = never; not
            with ``num_envs``).
        vec_env: "dummy" or "subproc": how the YAML's ``n_envs`` separate copies run.
        num_envs: N >= 1: train on one batched vector env of N runs (one engine, one batched
            update per step) instead of ``n_envs`` copies: SB3 algorithms through
            :func:`make_batched_training_env`, MCPG collecting N episodes at a time (the env id
            needs a ``vector_entry_point``).
    """
    if num_envs is not None and (isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1):
        raise ValueError(f"num_envs must be None or an int >= 1, got {num_envs!r}")
    if algo not in ALGO_NAMES:
        raise ValueError(f"algo must be one of {ALGO_NAMES}, got {algo!r}")
    if total_timesteps < 1:
        raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}")
    hp = load_hyperparams(algo, env_id, hyperparams_file, overrides)
    env_kwargs = {**hp.pop("env_kwargs", {}), **(env_kwargs or {})}
    check_training_seeds(seed, num_envs or int(hp.get("n_envs", 1)))  # the train split only
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if algo == "mcpg":
        timesteps = _train_mcpg(
            hp, env_id, env_kwargs, total_timesteps, seed, out, tensorboard, progress_bar, checkpoint_freq, resume,
            sample_every, num_envs, verbose,
        )  # fmt: skip
    else:
        timesteps = _train_sb3(
            algo, hp, env_id, env_kwargs, total_timesteps, seed, out, device, tensorboard, progress_bar,
            checkpoint_freq, resume, sample_every, vec_env, num_envs, verbose,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    write_json_atomic(
        {
            "algo": algo,
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "hyperparams": hp,
            "seed": seed,
            "num_envs": num_envs,
            "total_timesteps": timesteps,
            "resumed": resume,
            "seconds": round(seconds, 1),
        },
        out / "train.json",
    )
    return TrainResult(out, out / "agent", algo, timesteps, seconds)


def _train_sb3(
    algo, hp, env_id, env_kwargs, total_timesteps, seed, out, device, tensorboard, progress_bar,
    checkpoint_freq, resume, sample_every, vec_env, num_envs, verbose,
) -> int:  # fmt: skip
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize

    from .callbacks import UnlearningLogCallback

    cls = SB3_ALGOS()[algo]
    hp = dict(hp)
    policy = hp.pop("policy", "MlpPolicy")
    n_envs = int(hp.pop("n_envs", 1))
    normalize = hp.pop("normalize", False)
    noise_type, noise_std = hp.pop("noise_type", None), float(hp.pop("noise_std", 0.1))
    policy_kwargs_json = dict(hp.pop("policy_kwargs", {}) or {})
    policy_kwargs = dict(policy_kwargs_json)
    if isinstance(policy_kwargs.get("activation_fn"), str):
        policy_kwargs["activation_fn"] = activation_class(policy_kwargs["activation_fn"])

    if num_envs is not None:
        n_envs = num_envs
        venv = make_batched_training_env(env_id, env_kwargs, num_envs, seed)
    else:
        venv = make_training_env(env_id, env_kwargs, n_envs, seed, sample_every, vec_env)
    ckpt_dir = out / "checkpoints"
    off_policy = issubclass(cls, OffPolicyAlgorithm)  # CheckpointCallback saves its replay buffer too
    companions = (("replay_buffer",) if off_policy else ()) + (("vecnormalize",) if normalize else ())
    latest = _latest_complete_sb3_checkpoint(ckpt_dir, algo, companions) if resume else None
    if resume and latest is None:
        raise FileNotFoundError(
            f"resume: no checkpoint {algo}_<N>_steps.zip (complete) in {ckpt_dir}; train without --resume first"
        )
    tb = str(out / "tb") if tensorboard else None
    if latest is not None:
        path, steps = latest
        if normalize:
            stats = ckpt_dir / f"{algo}_vecnormalize_{steps}_steps.pkl"
            venv = VecNormalize.load(str(stats), venv)
            venv.training = True
        model = cls.load(str(path), env=venv, device=device, tensorboard_log=tb)
        buffer = ckpt_dir / f"{algo}_replay_buffer_{steps}_steps.pkl"
        if buffer.is_file() and hasattr(model, "load_replay_buffer"):
            model.load_replay_buffer(str(buffer))
    else:
        if normalize:
            venv = VecNormalize(venv, **(normalize if isinstance(normalize, dict) else {}))
        action_noise = _action_noise(noise_type, noise_std, venv.action_space.shape[0])
        extra = {"action_noise": action_noise} if action_noise is not None else {}
        model = cls(
            policy, venv, seed=seed, device=device, tensorboard_log=tb, policy_kwargs=policy_kwargs,
            verbose=verbose, **extra, **hp,
        )  # fmt: skip
    callbacks = [UnlearningLogCallback()]
    if checkpoint_freq > 0:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(checkpoint_freq // n_envs, 1),
                save_path=str(ckpt_dir),
                name_prefix=algo,
                save_replay_buffer=hasattr(model, "replay_buffer"),
                save_vecnormalize=bool(normalize),
            )
        )
    remaining = total_timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(
            remaining,
            callback=callbacks,
            tb_log_name=algo,
            reset_num_timesteps=latest is None,
            progress_bar=progress_bar,
        )
    model.save(str(out / "model.zip"))
    for key, value in model.policy_kwargs.items():  # defaults the algorithm added (DDPG: n_critics=1)
        if key not in policy_kwargs_json and isinstance(value, (bool, int, float, str, list)):
            policy_kwargs_json[key] = value
    obs_rms = None
    if isinstance(venv, VecNormalize):
        venv.save(str(out / "vecnormalize.pkl"))
        obs_rms = venv.obs_rms if venv.norm_obs else None
    export_agent(
        out / "agent",
        algo=algo,
        policy=model.policy,
        env_id=env_id,
        env_kwargs=env_kwargs,
        policy_kwargs=policy_kwargs_json,
        observation_space=venv.observation_space,
        action_space=venv.action_space,
        obs_rms=obs_rms,
        normalize={"clip_obs": venv.clip_obs, "epsilon": venv.epsilon} if isinstance(venv, VecNormalize) else None,
        extra={"timesteps": int(model.num_timesteps), "seed": seed},
    )
    venv.close()
    return int(model.num_timesteps)


def _train_mcpg(
    hp, env_id, env_kwargs, total_timesteps, seed, out, tensorboard, progress_bar, checkpoint_freq, resume,
    sample_every, num_envs, verbose,
) -> int:  # fmt: skip
    from stable_baselines3.common.logger import configure

    from ..envs.wrappers import EpisodeEndSamples
    from .mcpg import MCPG

    hp = dict(hp)
    hp.pop("n_envs", None)
    if num_envs is not None:  # N episodes at a time from one batched env (no sample grids)
        env = make_batched_env(env_id, env_kwargs, num_envs)
        observation_space, action_space = env.single_observation_space, env.single_action_space
    else:
        kwargs: dict[str, Any] = dict(env_kwargs)
        if sample_every > 0:
            kwargs["render_mode"] = "rgb_array"
        env = gym.make(env_id, **kwargs)
        if sample_every > 0:
            env = EpisodeEndSamples(env, every=sample_every)
        observation_space, action_space = env.observation_space, env.action_space
    formats = (["tensorboard"] if tensorboard else []) + (["stdout"] if verbose else [])
    logger = configure(str(out / "tb" / "mcpg_1"), formats) if formats else None
    model = MCPG(env, seed=seed, logger=logger, **hp)
    ckpt_dir = out / "checkpoints"
    if resume:
        latest = _latest_checkpoint(ckpt_dir, "mcpg", ".safetensors")
        if latest is None:
            raise FileNotFoundError(f"resume: no checkpoint mcpg_<N>_steps.safetensors in {ckpt_dir}")
        model.load(latest[0])
    last_saved = [model.num_timesteps]

    def checkpoint(m: MCPG) -> None:
        if checkpoint_freq > 0 and m.num_timesteps - last_saved[0] >= checkpoint_freq:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            m.save(ckpt_dir / f"mcpg_{m.num_timesteps}_steps.safetensors")
            last_saved[0] = m.num_timesteps

    model.learn(total_timesteps, progress_bar=progress_bar, checkpoint=checkpoint)
    model.save(out / "model.safetensors")
    export_agent(
        out / "agent",
        algo="mcpg",
        policy=model.policy,
        env_id=env_id,
        env_kwargs=env_kwargs,
        policy_kwargs=model.policy_kwargs(),
        observation_space=observation_space,
        action_space=action_space,
        extra={"timesteps": model.num_timesteps, "seed": seed, "hyperparams": model.hyperparams},
    )
    env.close()
    return model.num_timesteps
