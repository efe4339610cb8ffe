"""unlearn-gym: machine unlearning of diffusion models as Gymnasium environments.

Importing this package registers the envs with Gymnasium and is cheap: it imports neither torch
nor diffusers (they load when an env is made)::

    import gymnasium as gym
    import unlearn_gym  # noqa: F401  (or: gym.make("unlearn_gym:SISS-v0"))

    env = gym.make("unlearn_gym/SISS-v0")
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

__all__ = ["__version__"]


_ENVS = {
    "SISS-v0": "unlearn_gym.envs.siss_env:SISSEnv",
    "SFD-v0": "unlearn_gym.envs.sfd_env:SFDEnv",
    "Hybrid-v0": "unlearn_gym.envs.hybrid_env:HybridEnv",
}
# N runs in one batched engine: gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")
_VECTOR_ENVS = {
    "SISS-v0": "unlearn_gym.envs.vector:make_siss_vector_env",
    "SFD-v0": "unlearn_gym.envs.vector:make_sfd_vector_env",
    "Hybrid-v0": "unlearn_gym.envs.vector:make_hybrid_vector_env",
}


def _register() -> None:
    # "unlearn_gym/SISS-v0" is the id; "SISS-v0" is the name that gymnasium.make("unlearn_gym:SISS-v0")
    # looks up after importing this module.
    for name, entry_point in _ENVS.items():
        for env_id in (f"unlearn_gym/{name}", name):
            if env_id not in registry:
                register(
                    id=env_id,
                    entry_point=entry_point,
                    vector_entry_point=_VECTOR_ENVS.get(name),
                )  # no max_episode_steps: the episode budget is the env's ``horizon`` (it truncates itself)


_register()
