"""Write your own λ-policy and benchmark it against the baselines on the same seeds.

    python examples/custom_policy.py --seeds 5

A λ-policy maps an observation to λ ∈ [0, 1]; subclass ``LambdaPolicy`` and implement ``lam``.
This one reads the forget-loss feature log ℓ_f/ℓ_f⁰ (observation entry 1): it pushes hard (λ
high: more forget samples per batch) while the forget loss has not risen yet, and eases off
(λ low: protect the retain set) once it has.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from unlearn_gym.baselines import LambdaPolicy
from unlearn_gym.bench import BENCH_ENV_KWARGS, BenchConfig, policy_from_spec, run_benchmark, to_markdown


class ForgetLossFeedback(LambdaPolicy):
    """λ_t = λ_high − (λ_high − λ_low)·clip(log(ℓ_f/ℓ_f⁰)/target, 0, 1)."""

    def __init__(self, high: float = 0.8, low: float = 0.3, target: float = 0.1):
        self.high, self.low, self.target = high, low, target
        self.name = "forget-loss-feedback"

    def lam(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        progress = np.clip(obs[:, 1] / self.target, 0.0, 1.0)
        return self.high - (self.high - self.low) * progress


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--checkpoint", default=None, help="pretrained model directory (default: bundled)")
    parser.add_argument("--batch-size", type=int, default=BENCH_ENV_KWARGS["batch_size"])
    parser.add_argument("--horizon", type=int, default=BENCH_ENV_KWARGS["horizon"])
    parser.add_argument("--samples", type=int, default=20, help="evaluation samples per retain label")
    parser.add_argument("--contaminated-samples", type=int, default=100, help="evaluation samples of label 1")
    parser.add_argument("--ddim-steps", type=int, default=10)
    parser.add_argument(
        "--env-kwargs",
        default="{}",
        help="other SISS-v0 keywords as JSON, e.g. '{\"sample_forget\": 16}' (a smaller sampled probe)",
    )
    args = parser.parse_args(argv)

    mine = ForgetLossFeedback()
    policies = {mine.name: mine} | {spec: policy_from_spec(spec) for spec in ("static:0.5", "random", "vi-adaptive")}
    env_kwargs = {"checkpoint": args.checkpoint, "batch_size": args.batch_size, "horizon": args.horizon}
    env_kwargs |= json.loads(args.env_kwargs)
    config = BenchConfig(
        env_kwargs=env_kwargs,
        seeds=tuple(range(args.seeds)),
        samples_per_label=args.samples,
        contaminated_label_samples=args.contaminated_samples,
        ddim_steps=args.ddim_steps,
    )
    result = run_benchmark(policies, config)
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
