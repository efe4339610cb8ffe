"""Train, validation and test splits of the episodes: reset seeds and forget-set instances.

An episode of an unlearn-gym env is fixed by its reset seed s (``reset(seed=s)``: the batches, the
probe, the sampled reward's noises) and its instance i (``reset(options={"instance": i})``: the
forget subset drawn from seed i). Following ARLBench's seed guidance (Becktepe et al., 2024), agents
are trained and tuned on some episodes and reported on others:

=========== ============================================ ======================
split       reset seeds                                  instances
=========== ============================================ ======================
train       0 … 2³² − 1                                  0 … 999
validation  2³² … 2³² + 999,999                          1,000 … 1,999
test        2³² + 1,000,000 … 2³² + 1,999,999            2,000 … 2,999
=========== ============================================ ======================

The train split's seeds are every 32-bit seed, so everything ``unlearn-gym train`` seeds lies in it
by construction: SB3 seeds copy k of the training env with ``seed + k`` (later resets continue that
env's generator), MCPG seeds every episode with a 32-bit draw of ``SeedSequence([seed, k])``; the
validation and test seeds are above 2³² and no training run can reach them. The bench's default
seeds 0 … 7 (the main job) are train-split seeds: an agent trained with seed 0 began its training on
exactly those episodes. ``unlearn-gym bench --split test`` runs the first ``--seeds`` seeds (and,
with ``--instances K``, the first K instances) of the test split instead; ``sweep`` scores its
trials on the validation split. Training uses the whole forget set (no instance); the instance
ranges split the forget-subset task (``forget_subset=k``) alike.

Pure Python: importing this module imports neither numpy, torch nor gymnasium.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SPLITS", "Split", "check_training_seeds", "split_of_seed"]


@dataclass(frozen=True)
class Split:
    """One split: its reset seeds and forget-set instances (Python ranges)."""

    name: str
    seeds: range
    instances: range

    def first_seeds(self, n: int) -> tuple[int, ...]:
        """The split's first ``n`` reset seeds."""
        if not 1 <= n <= len(self.seeds):
            raise ValueError(f"the {self.name} split has {len(self.seeds)} seeds; asked for {n}")
        return tuple(self.seeds[:n])

    def first_instances(self, n: int) -> tuple[int, ...]:
        """The split's first ``n`` instances."""
        if not 1 <= n <= len(self.instances):
            raise ValueError(f"the {self.name} split has {len(self.instances)} instances; asked for {n}")
        return tuple(self.instances[:n])


_HIGH = 2**32
SPLITS: dict[str, Split] = {
    "train": Split("train", range(0, _HIGH), range(0, 1_000)),
    "validation": Split("validation", range(_HIGH, _HIGH + 1_000_000), range(1_000, 2_000)),
    "test": Split("test", range(_HIGH + 1_000_000, _HIGH + 2_000_000), range(2_000, 3_000)),
}
"""name → :class:`Split` (the module docstring's table)."""


def split_of_seed(seed: int) -> str | None:
    """The split a reset seed belongs to (None: none of them)."""
    return next((name for name, s in SPLITS.items() if seed in s.seeds), None)


def check_training_seeds(seed: int, copies: int = 1) -> None:
    """Fail unless the reset seeds ``seed … seed + copies − 1`` of a training run lie in the train split."""
    last = seed + copies - 1
    if seed < 0 or last not in SPLITS["train"].seeds:
        raise ValueError(
            f"training seeds {seed}..{last} must lie in the train split (0..{_HIGH - 1}); the validation "
            "and test seeds are kept for tuning and reporting (unlearn_gym.splits)"
        )
