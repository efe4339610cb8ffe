"""MCPG: Monte-Carlo policy gradient (REINFORCE) with a KL term, the paper's first RL agent.

SB3 has no REINFORCE, so this is a small explicit implementation (CleanRL style). It collects one
episode at a time from a single env, or N at a time (one per run, the policy's forward pass batched
over the runs) from a batched vector env (``gymnasium.make_vec(id, num_envs=N,
vectorization_mode="vector_entry_point")``). The policy is Gaussian in a latent z with
λ = sigmoid(z), as in Adaptive-λ SISS:

    z_t ~ π_φ(· | s_t) = N(μ_φ(s_t), σ_φ(s_t)²),  action a_t = 2·sigmoid(z_t) − 1 = tanh(z_t / 2),

so the env's map λ = (a + 1)/2 gives λ_t = sigmoid(z_t). After ``episodes_per_update`` whole
episodes, with returns-to-go G_t = Σ_{k≥t} γ^{k−t} r_k and the advantage Â_t = (G_t − mean G)/std G
over the batch, one Adam step on

    L(φ) = −mean_t log π_φ(z_t | s_t)·Â_t + kl_coef·mean_t KL(N(μ_φ(s_t), σ_φ(s_t)²) ‖ N(0, 1)).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from gymnasium.vector import AutoresetMode
from tqdm.auto import tqdm

from ..models.checkpoint import load_tensors, save_tensors_atomic
from .callbacks import log_episode_end, log_step_info, step_keys

__all__ = ["GaussianLambdaPolicy", "MCPG"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianLambdaPolicy(nn.Module):
    """s ↦ (μ_φ(s), log σ_φ(s)) of the latent z; the action is tanh(z/2) (λ = sigmoid(z))."""

    def __init__(self, obs_dim: int, action_dim: int, net_arch: list[int] | tuple[int, ...] = (64, 64)):
        super().__init__()
        layers, d = [], obs_dim
        for width in net_arch:
            layers += [nn.Linear(d, width), nn.Tanh()]
            d = width
        self.body = nn.Sequential(*layers)
        self.mu = nn.Linear(d, action_dim)
        self.log_std = nn.Linear(d, action_dim)
        self.net_arch = list(net_arch)
        self._rng = np.random.default_rng(0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(obs)
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def seed(self, seed: int | None) -> None:
        """Seed the noise of stochastic ``predict`` calls."""
        self._rng = np.random.default_rng(seed)

    @torch.no_grad()
    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """SB3's signature: a = tanh(μ/2) when deterministic, else tanh(z/2) with z ~ N(μ, σ²)."""
        obs_np = np.asarray(obs, dtype=np.float32)
        single = obs_np.ndim == 1
        x = torch.as_tensor(obs_np.reshape(1, -1) if single else obs_np, device=self.mu.weight.device)
        mu, log_std = self(x)
        z = mu
        if not deterministic:
            u = torch.as_tensor(self._rng.standard_normal(mu.shape), dtype=mu.dtype, device=mu.device)
            z = mu + log_std.exp() * u
        action = torch.tanh(z / 2).cpu().numpy().astype(np.float32)
        return (action[0] if single else action), state


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Σ_dims log N(z; μ, σ²)."""
    return (-0.5 * ((z - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def kl_to_standard_normal(mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Σ_dims KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − 1) − log σ."""
    return (0.5 * (mu**2 + (2 * log_std).exp() - 1) - log_std).sum(-1)


class MCPG:
    """REINFORCE with a KL term on one env or a batched vector env (see the module docstring for the objective).

    With a vector env of N runs, each collection resets all N runs (run i with episode k + i's seed)
    and steps them together until every run's episode has ended; the transitions a run makes after
    its episode ended (the vector env has reset it, ``SAME_STEP`` autoreset) are dropped. The episodes
    are those a single env would give with the same seeds and actions, and the noise of z is drawn
    for all N runs at once, so N = 1 through the vector env gives exactly the single env's training.

    Args:
        env: a Gymnasium env with a Box(−1, 1) action space (e.g. ``gym.make("unlearn_gym/SISS-v0")``),
            or a vector env of such runs with ``SAME_STEP`` autoreset (e.g. ``gym.make_vec(
            "unlearn_gym/SISS-v0", num_envs=N, vectorization_mode="vector_entry_point")``).
        learning_rate: Adam's step size for φ.
        episodes_per_update: whole episodes per policy-gradient step (with a vector env of N runs,
            rounded up to a multiple of N: every collection yields N episodes).
        gamma: discount of the returns-to-go.
        kl_coef: weight of KL(π_φ(·|s) ‖ N(0, 1)).
        net_arch: hidden widths of the policy MLP.
        seed: seeds the policy's initialisation, the sampling of z and every episode's env reset.
        logger: an SB3 logger (TensorBoard etc.); None logs nothing.
    """

    def __init__(
        self,
        env,
        *,
        learning_rate: float = 1e-3,
        episodes_per_update: int = 4,
        gamma: float = 1.0,
        kl_coef: float = 0.01,
        net_arch: list[int] | tuple[int, ...] = (64, 64),
        seed: int = 0,
        logger=None,
    ):
        if episodes_per_update < 1:
            raise ValueError(f"episodes_per_update must be >= 1, got {episodes_per_update}")
        self.env = env
        self.num_envs = env.num_envs if isinstance(env, gym.vector.VectorEnv) else None
        """N runs of a vector env; None: a single env."""
        if self.num_envs is not None and env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError(
                "MCPG needs a vector env with SAME_STEP autoreset (unlearn-gym's batched env, gymnasium.make_vec(..., "
                f"vectorization_mode='vector_entry_point')), got autoreset_mode {env.metadata.get('autoreset_mode')}"
            )
        observation_space = env.observation_space if self.num_envs is None else env.single_observation_space
        action_space = env.action_space if self.num_envs is None else env.single_action_space
        self.hyperparams = {
            "learning_rate": learning_rate,
            "episodes_per_update": episodes_per_update,
            "gamma": gamma,
            "kl_coef": kl_coef,
            "net_arch": list(net_arch),
        }
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = GaussianLambdaPolicy(observation_space.shape[0], action_space.shape[0], net_arch)
        self.policy.seed(seed)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=learning_rate)
        self.generator = gen
        self.logger = logger
        self.num_timesteps = 0
        self.num_episodes = 0
        self.num_updates = 0
        self._obs = None

    def policy_kwargs(self) -> dict:
        return {"net_arch": self.hyperparams["net_arch"]}

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        return self.policy.predict(obs, state, episode_start, deterministic)

    # -- training ----------------------------------------------------------------------------

    def _episode_seed(self, k: int) -> int:
        """Episode k's reset seed, drawn from (seed, k): a resumed run continues exactly."""
        return int(np.random.SeedSequence([self.seed, k]).generate_state(1)[0])

    def _collect(self) -> list[tuple[torch.Tensor, torch.Tensor, list[float]]]:
        """The next episode (single env) or N episodes (vector env): (observations, z, rewards) each."""
        if self.num_envs is None:
            return [self._run_episode()]
        return self._run_episodes()

    def _run_episode(self):
        self._obs, reset_info = self.env.reset(seed=self._episode_seed(self.num_episodes))
        keys = step_keys(reset_info)
        obs_list, z_list, rewards = [], [], []
        done, info = False, {}
        while not done:
            obs_t = torch.as_tensor(np.asarray(self._obs, np.float32))[None]
            with torch.no_grad():
                mu, log_std = self.policy(obs_t)
                z = mu + log_std.exp() * torch.randn(mu.shape, generator=self.generator)
            action = torch.tanh(z / 2)[0].numpy().astype(np.float32)
            self._obs, reward, terminated, truncated, info = self.env.step(action)
            obs_list.append(obs_t[0])
            z_list.append(z[0])
            rewards.append(float(reward))
            self.num_timesteps += 1
            if self.logger is not None:
                log_step_info(self.logger, info, keys)
            done = terminated or truncated
        self.num_episodes += 1
        if self.logger is not None:
            log_episode_end(self.logger, info, sum(rewards), len(rewards))
        return torch.stack(obs_list), torch.stack(z_list), rewards

    def _run_episodes(self):
        """One episode per run of the vector env, the policy evaluated on all N observations at once."""
        from ..envs.sb3 import unbatch_infos

        n = self.num_envs
        seeds = [self._episode_seed(self.num_episodes + i) for i in range(n)]
        obs, reset_infos = self.env.reset(seed=seeds)
        keys = step_keys(reset_infos)
        obs_lists: list[list[torch.Tensor]] = [[] for _ in range(n)]
        z_lists: list[list[torch.Tensor]] = [[] for _ in range(n)]
        rewards: list[list[float]] = [[] for _ in range(n)]
        active = [True] * n
        while any(active):
            obs_t = torch.as_tensor(np.asarray(obs, np.float32))  # (N, d)
            with torch.no_grad():
                mu, log_std = self.policy(obs_t)
                z = mu + log_std.exp() * torch.randn(mu.shape, generator=self.generator)
            actions = torch.tanh(z / 2).numpy().astype(np.float32)  # (N, k)
            obs, reward, terminated, truncated, infos = self.env.step(actions)
            run_infos = unbatch_infos(infos, n)
            for i in range(n):
                if not active[i]:
                    continue  # run i's episode has ended; this transition belongs to its next one
                done = bool(terminated[i] or truncated[i])
                info = run_infos[i]["final_info"] if done else run_infos[i]
                obs_lists[i].append(obs_t[i])
                z_lists[i].append(z[i])
                rewards[i].append(float(reward[i]))
                self.num_timesteps += 1
                if self.logger is not None:
                    log_step_info(self.logger, info, keys)
                if done:
                    active[i] = False
                    if self.logger is not None:
                        log_episode_end(self.logger, info, sum(rewards[i]), len(rewards[i]))
        self.num_episodes += n
        return [(torch.stack(obs_lists[i]), torch.stack(z_lists[i]), rewards[i]) for i in range(n)]

    def _returns_to_go(self, rewards: list[float]) -> torch.Tensor:
        g, out = 0.0, []
        for r in reversed(rewards):
            g = r + self.hyperparams["gamma"] * g
            out.append(g)
        return torch.tensor(out[::-1], dtype=torch.float32)

    def _update(self, episodes) -> dict[str, float]:
        obs = torch.cat([e[0] for e in episodes])
        z = torch.cat([e[1] for e in episodes])
        returns = torch.cat([self._returns_to_go(e[2]) for e in episodes])
        adv = returns - returns.mean()
        if len(adv) > 1 and adv.std() > 0:
            adv = adv / adv.std()
        mu, log_std = self.policy(obs)
        logp = gaussian_log_prob(z, mu, log_std)
        kl = kl_to_standard_normal(mu, log_std)
        pg_loss = -(logp * adv).mean()
        loss = pg_loss + self.hyperparams["kl_coef"] * kl.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return {
            "loss": loss.item(),
            "pg_loss": pg_loss.item(),
            "kl": kl.mean().item(),
            "std": log_std.exp().mean().item(),
        }

    def learn(self, total_timesteps: int, *, progress_bar: bool = False, checkpoint=None):
        """Run whole episodes until ``num_timesteps`` reaches ``total_timesteps`` (counted in env steps of
        every run; a vector env's last collection finishes all N episodes).

        ``checkpoint``: optional ``callable(self)`` called after each update (the trainer saves there).
        """
        bar = tqdm(total=total_timesteps, initial=self.num_timesteps, disable=not progress_bar, desc="MCPG")
        while self.num_timesteps < total_timesteps:
            episodes = []
            while len(episodes) < self.hyperparams["episodes_per_update"]:
                before = self.num_timesteps
                episodes += self._collect()
                bar.update(self.num_timesteps - before)
                if self.num_timesteps >= total_timesteps:
                    break
            stats = self._update(episodes)
            if self.logger is not None:
                for k, v in stats.items():
                    self.logger.record(f"train/{k}", v)
                self.logger.record("time/total_timesteps", self.num_timesteps)
                self.logger.record("time/episodes", self.num_episodes)
                self.logger.dump(self.num_timesteps)
            if checkpoint is not None:
                checkpoint(self)
        bar.close()
        return self

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Policy, Adam state, counters and the sampling generator in one safetensors file (atomic)."""
        tensors = {f"policy.{k}": v.detach().clone() for k, v in self.policy.state_dict().items()}
        for i, state in self.optimizer.state_dict()["state"].items():
            for k, v in state.items():
                tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).clone()
        tensors["generator"] = self.generator.get_state()
        meta = {
            "hyperparams": json.dumps(self.hyperparams),
            "seed": str(self.seed),
            "num_timesteps": str(self.num_timesteps),
            "num_episodes": str(self.num_episodes),
            "num_updates": str(self.num_updates),
        }
        save_tensors_atomic(tensors, path, metadata=meta)

    def load(self, path: str | Path) -> MCPG:
        """Restore what :meth:`save` wrote (into a model built with the same hyperparameters)."""
        tensors, meta = load_tensors(path)
        self.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
        opt = self.optimizer.state_dict()
        opt["state"] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                opt["state"].setdefault(int(i), {})[name] = v
        self.optimizer.load_state_dict(opt)
        self.generator.set_state(tensors["generator"].to(torch.uint8))
        self.num_timesteps = int(meta["num_timesteps"])
        self.num_episodes = int(meta["num_episodes"])
        self.num_updates = int(meta["num_updates"])
        return self
