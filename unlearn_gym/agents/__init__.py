"""RL agents on unlearn-gym envs: SB3's PPO, SAC, TD3 and DDPG, and MCPG (REINFORCE with a KL term).

``train_agent`` (and ``unlearn-gym train``) trains one with the zoo-style YAML hyperparameters of
``hyperparams/``; ``load_agent`` reads the exported, pickle-free agent back as an
:class:`AgentPolicy` with SB3's ``predict``, which the benchmark runner drives like any λ-policy.
"""

from .hyperparams import ALGO_NAMES, load_hyperparams
from .mcpg import MCPG, GaussianLambdaPolicy
from .policy import AgentPolicy, export_agent, load_agent
from .train import TrainResult, train_agent

__all__ = [
    "ALGO_NAMES",
    "AgentPolicy",
    "GaussianLambdaPolicy",
    "MCPG",
    "TrainResult",
    "export_agent",
    "load_agent",
    "load_hyperparams",
    "train_agent",
]
