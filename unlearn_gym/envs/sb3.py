"""Stable-Baselines3 adapter: the batched vector env as an SB3 ``VecEnv``.

SB3 does not accept Gymnasium vector envs, so :class:`SB3VecEnv` wraps an
:class:`~unlearn_gym.envs.vector.UnlearningVectorEnv` in SB3's ``VecEnv`` protocol: ``reset()``
returns observations only (reset infos in ``reset_infos``), ``step_wait()`` returns
(obs, rewards (N,), dones (N,), a list of N info dicts), and a run that ends is reset
automatically with its last observation in ``info["terminal_observation"]`` and
``info["TimeLimit.truncated"]`` set when the horizon (not a divergence) ended it. Works with
``VecNormalize``, ``VecMonitor`` and ``evaluate_policy``::

    import gymnasium as gym
    from unlearn_gym.envs.sb3 import SB3VecEnv

    venv = SB3VecEnv(gym.make_vec("unlearn_gym/SISS-v0", num_envs=8, vectorization_mode="vector_entry_point"))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from .vector import UnlearningVectorEnv

__all__ = ["SB3VecEnv", "unbatch_infos"]


def unbatch_infos(infos: dict, n: int) -> list[dict]:
    """Gymnasium's vector infos (arrays with ``_key`` masks) as ``n`` per-run dicts."""
    out: list[dict] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}", np.ones(n, dtype=bool))
        if isinstance(value, dict):
            for i, sub in enumerate(unbatch_infos(value, n)):
                if mask[i]:
                    out[i][key] = sub
            continue
        for i in range(n):
            if mask[i]:
                item = value[i]
                out[i][key] = item.item() if isinstance(item, np.generic) else item
    return out


class SB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over one :class:`UnlearningVectorEnv` (N runs in one batched engine).

    ``seed(s)`` and ``set_options(...)`` apply at the next ``reset()`` (run i gets s + i).
    ``get_attr``/``set_attr``/``env_method`` reach the single-env object that every run shares
    (its config, scenario and engine), once per requested index.

    Args:
        venv: the vector env, e.g. ``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``.
    """

    def __init__(self, venv: UnlearningVectorEnv):
        venv = getattr(venv, "unwrapped", venv)
        if not isinstance(venv, UnlearningVectorEnv):
            raise TypeError(f"SB3VecEnv wraps an UnlearningVectorEnv, got {type(venv).__name__}")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        options = [dict(o or {}) for o in self._options]
        instances = [o.pop("instance", None) for o in options]
        leftover = sorted({k for o in options for k in o})
        if leftover:
            raise ValueError(f"set_options: unknown option(s) {leftover}; expected some of ['instance']")
        obs, infos = self.venv.reset(
            seed=list(self._seeds), options={"instance": instances} if any(i is not None for i in instances) else None
        )
        self.reset_infos = unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminations, truncations, infos = self.venv.step(self._actions)
        dones = terminations | truncations
        per_run = unbatch_infos(infos, self.num_envs)
        out = []
        for i, info in enumerate(per_run):
            if dones[i]:
                step_info = dict(info.pop("final_info"))
                step_info["terminal_observation"] = info.pop("final_obs")
                step_info["TimeLimit.truncated"] = bool(truncations[i] and not terminations[i])
                self.reset_infos[i] = info  # what the automatic reset reported
                out.append(step_info)
            else:
                out.append(info)
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        self.venv.close()

    def _targets(self, indices: VecEnvIndices) -> Sequence[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv.env, attr_name) for _ in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for _ in self._targets(indices):
            setattr(self.venv.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [getattr(self.venv.env, method_name)(*method_args, **method_kwargs) for _ in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._targets(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
