"""Compare agents' training curves from the TensorBoard logs that ``unlearn-gym train`` writes.

    python benchmarks/compare_training_curves.py "eval_every None=runs/ppo-a/tb" "eval_every 25=runs/ppo-b/tb" \
        --out docs/figures/ppo_eval_every.png

One curve per run (LABEL=LOGDIR), against env steps: the running mean of the true episode return
(``episode/return``), of the sampled probe's forget rate and retain accuracy of each episode's
unlearned model (``episode/sampled_forget_rate``, ``episode/sampled_retain_accuracy``), and the mean
λ per logging interval (``unlearn/lam``). Prints each run's means over its last ``--window`` values
and its wall-clock seconds per env step (from the event timestamps).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from plot_training_curve import read_events

TAGS = ("episode/return", "episode/sampled_forget_rate", "episode/sampled_retain_accuracy", "unlearn/lam")


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each value and the ``window`` − 1 before it (fewer at the start)."""
    c = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    return (c[end] - c[start]) / (end - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="LABEL=LOGDIR")
    p.add_argument("--out", required=True)
    p.add_argument("--window", type=int, default=20, help="values in each running mean")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TAGS), figsize=(4.2 * len(TAGS), 3.6))
    for k, spec in enumerate(args.runs):
        label, _, logdir = spec.partition("=")
        if not logdir:
            raise SystemExit(f"error: expected LABEL=LOGDIR, got {spec!r}")
        s = {t: a[np.argsort(a[:, 0], kind="stable")] for t, a in read_events(logdir, TAGS).items()}
        summary = {}
        for ax, tag in zip(axes, TAGS):
            if tag not in s:
                continue
            steps, values = s[tag][:, 0], s[tag][:, 1]
            ax.plot(steps, values, ".", ms=2, alpha=0.25, color=f"C{k}")
            ax.plot(steps, running_mean(values, args.window), lw=2, color=f"C{k}", label=label)
            ax.set(xlabel="env steps", title=tag)
            summary[tag.split("/")[1]] = round(float(values[-args.window :].mean()), 4)
        if "episode/return" in s:
            rows = s["episode/return"]
            seconds_per_step = (rows[-1, 2] - rows[0, 2]) / max(rows[-1, 0] - rows[0, 0], 1)
            summary["seconds_per_env_step"] = round(float(seconds_per_step), 4)
        print(f"{label}: last {args.window} values' means {summary}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
