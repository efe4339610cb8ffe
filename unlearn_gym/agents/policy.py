"""A trained agent as a pickle-free directory, and :class:`AgentPolicy` that acts from it.

``export_agent`` writes ``agent.json`` (algorithm, spaces, policy architecture, the frozen
observation-normalisation statistics, how it was trained) and ``policy.safetensors`` (the policy
network's weights). ``load_agent`` rebuilds the SB3 policy class from those and never unpickles
anything, so agents can be shared and bundled safely. SB3's own ``model.zip`` (which stores
cloudpickled spaces and schedules) is written beside it for SB3 users and for resuming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..models.checkpoint import CheckpointError, load_tensors, read_json, save_tensors_atomic, write_json_atomic

__all__ = ["AgentPolicy", "export_agent", "load_agent", "SB3_ALGOS"]

AGENT_FORMAT = "unlearn-gym-agent/1"


def SB3_ALGOS() -> dict[str, type]:
    """name → SB3 algorithm class (imported lazily)."""
    from stable_baselines3 import DDPG, PPO, SAC, TD3

    return {"ppo": PPO, "sac": SAC, "td3": TD3, "ddpg": DDPG}


def _box_to_json(space) -> dict:
    return {"low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape)}


def _box_from_json(d: dict):
    from gymnasium import spaces

    return spaces.Box(np.array(d["low"], np.float32), np.array(d["high"], np.float32), tuple(d["shape"]), np.float32)


def _policy_kwargs_from_json(kwargs: dict) -> dict:
    from .hyperparams import activation_class

    out = dict(kwargs)
    if isinstance(out.get("activation_fn"), str):
        out["activation_fn"] = activation_class(out["activation_fn"])
    return out


class AgentPolicy:
    """An exported SB3 agent (or MCPG) with SB3's ``predict``, observation normalisation frozen.

    ``predict(obs)`` normalises ``obs`` with the training run's final VecNormalize statistics
    (clip((obs − μ)/√(σ² + ε), ±clip_obs)), then calls the policy network.
    """

    def __init__(self, policy, info: dict, obs_mean: np.ndarray | None, obs_var: np.ndarray | None):
        self.policy = policy
        self.info = info
        self.algo: str = info["algo"]
        self.env_id: str = info["env_id"]
        self.env_kwargs: dict = info.get("env_kwargs", {})
        self.observation_space = _box_from_json(info["observation_space"])
        self.action_space = _box_from_json(info["action_space"])
        norm = info.get("normalize_obs") or {}
        self._mean, self._var = obs_mean, obs_var
        self._clip = float(norm.get("clip_obs", 10.0))
        self._eps = float(norm.get("epsilon", 1e-8))

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if self._mean is None:
            return obs
        return np.clip((obs - self._mean) / np.sqrt(self._var + self._eps), -self._clip, self._clip).astype(np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """SB3's signature: (action, state) for a single or a batched observation."""
        return self.policy.predict(self.normalize(obs), state, episode_start, deterministic)

    def __repr__(self) -> str:
        return f"AgentPolicy(algo={self.algo!r}, env_id={self.env_id!r}, timesteps={self.info.get('timesteps')})"


def export_agent(
    out_dir: str | Path,
    *,
    algo: str,
    policy,
    env_id: str,
    env_kwargs: dict,
    policy_kwargs: dict,
    observation_space,
    action_space,
    obs_rms=None,
    normalize: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``agent.json`` + ``policy.safetensors`` (+ ``obs_rms`` in it) atomically into ``out_dir``.

    Args:
        algo: "ppo", "sac", "td3", "ddpg" or "mcpg".
        policy: the torch module whose ``state_dict`` is saved (SB3 ``model.policy``, or the MCPG network).
        policy_kwargs: JSON-able constructor keywords of the policy (activation as a name).
        obs_rms: VecNormalize's ``obs_rms`` (mean, var) or None when observations are not normalised.
        normalize: VecNormalize's settings (``clip_obs``, ``epsilon``).
        extra: more JSON-able facts (timesteps, seed, hyperparameters).
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"policy.{k}": v.detach().cpu().contiguous().clone() for k, v in policy.state_dict().items()}
    if obs_rms is not None:
        tensors["obs_rms.mean"] = torch.as_tensor(np.asarray(obs_rms.mean), dtype=torch.float64)
        tensors["obs_rms.var"] = torch.as_tensor(np.asarray(obs_rms.var), dtype=torch.float64)
    save_tensors_atomic(tensors, out / "policy.safetensors")
    norm = normalize or {}
    info = {
        "format": AGENT_FORMAT,
        "algo": algo,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "policy_kwargs": policy_kwargs,
        "observation_space": _box_to_json(observation_space),
        "action_space": _box_to_json(action_space),
        "normalize_obs": None
        if obs_rms is None
        else {"clip_obs": float(norm.get("clip_obs", 10.0)), "epsilon": float(norm.get("epsilon", 1e-8))},
        **(extra or {}),
    }
    write_json_atomic(info, out / "agent.json")
    return out


def load_agent(path: str | Path, device: str = "cpu") -> AgentPolicy:
    """Rebuild an exported agent (a directory with ``agent.json`` and ``policy.safetensors``).

    Raises :class:`CheckpointError` with what to do when the directory is not an exported agent.
    """
    path = Path(path)
    if (path / "agent").is_dir() and not (path / "agent.json").exists():
        path = path / "agent"  # the output directory of `unlearn-gym train`
    if not (path / "agent.json").is_file() or not (path / "policy.safetensors").is_file():
        raise CheckpointError(
            f"{path} is not an exported agent (agent.json + policy.safetensors); train one with "
            "`unlearn-gym train --algo ppo --out DIR` and pass DIR (or DIR/agent)"
        )
    info: dict[str, Any] = read_json(path / "agent.json")
    if info.get("format") != AGENT_FORMAT:
        raise CheckpointError(f"{path / 'agent.json'}: unknown format {info.get('format')!r}, expected {AGENT_FORMAT}")
    tensors, _ = load_tensors(path / "policy.safetensors", device="cpu")
    state = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
    obs_space, act_space = _box_from_json(info["observation_space"]), _box_from_json(info["action_space"])
    algo = info["algo"]
    if algo == "mcpg":
        from .mcpg import GaussianLambdaPolicy

        policy = GaussianLambdaPolicy(obs_space.shape[0], act_space.shape[0], **info["policy_kwargs"])
    else:
        algos = SB3_ALGOS()
        if algo not in algos:
            raise CheckpointError(f"{path / 'agent.json'}: unknown algo {algo!r}")
        policy_class = algos[algo].policy_aliases["MlpPolicy"]
        policy = policy_class(obs_space, act_space, lambda _: 0.0, **_policy_kwargs_from_json(info["policy_kwargs"]))
    policy.load_state_dict(state)
    policy.to(device).eval()
    if hasattr(policy, "set_training_mode"):
        policy.set_training_mode(False)
    mean = tensors["obs_rms.mean"].numpy() if "obs_rms.mean" in tensors else None
    var = tensors["obs_rms.var"].numpy() if "obs_rms.var" in tensors else None
    return AgentPolicy(policy, info, mean, var)
