"""Opt-in wrappers: work that ``step`` does not do unless somebody asks for it."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["EpisodeEndSamples"]


class EpisodeEndSamples(gym.Wrapper):
    """Put a sample grid of the unlearned model into ``info["episode_samples"]`` at episode ends.

    On the last step of every ``every``-th episode (truncated or terminated), the wrapped env's
    ``render()`` (an H×W×3 uint8 grid, one row per label) is added to that step's info, before a
    vectorised env's auto-reset restores the pretrained weights. The env must be made with
    ``render_mode="rgb_array"``. Training callbacks log it to TensorBoard.
    """

    def __init__(self, env: gym.Env, every: int = 1):
        super().__init__(env)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if env.render_mode != "rgb_array":
            raise ValueError("EpisodeEndSamples needs an env made with render_mode='rgb_array'")
        self.every = every
        self._episodes = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self._episodes += 1
            if self._episodes % self.every == 0:
                info = {**info, "episode_samples": self.env.render()}
        return obs, reward, terminated, truncated, info
