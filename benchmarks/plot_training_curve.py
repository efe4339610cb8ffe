"""Plot an agent's training curve from the TensorBoard log that ``unlearn-gym train`` writes.

    python benchmarks/plot_training_curve.py runs/ppo/tb --out docs/figures/ppo_training_curve.png

Left: the true episode return (``episode/return``, one point per episode) with a running mean;
right: the mean λ of each logging interval (``unlearn/lam``) and the episode's outcome: under the
sampled reward the probe's forget rate and retain accuracy of the unlearned model
(``episode/sampled_forget_rate``, ``episode/sampled_retain_accuracy``), else the denoising-loss
probe's efficacy and degradation (``episode/efficacy``, ``episode/degradation``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def read_events(logdir: str | Path, tags: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """tag → (k, 3) array of (step, value, wall time) from every event file under ``logdir``, in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list] = {t: [] for t in tags}
    for events in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags()["scalars"]:
                out[tag] += [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]
    return {t: np.array(v) for t, v in out.items() if v}


def read_scalars(logdir: str | Path, tags: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag → (steps, values) from every event file under ``logdir``."""
    return {t: (a[:, 0], a[:, 1]) for t, a in read_events(logdir, tags).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logdir")
    p.add_argument("--out", required=True)
    p.add_argument("--window", type=int, default=20, help="episodes in the running mean")
    p.add_argument("--title", default="PPO on SISS-v0")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcome = ["episode/sampled_forget_rate", "episode/sampled_retain_accuracy"]
    tags = ["episode/return", "episode/efficacy", "episode/degradation", "unlearn/lam", *outcome]
    s = read_scalars(args.logdir, tags)
    steps, ret = s["episode/return"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].plot(steps, ret, ".", ms=3, alpha=0.4, label="episode return")
    if len(ret) >= args.window:
        run = np.convolve(ret, np.ones(args.window) / args.window, mode="valid")
        axes[0].plot(steps[args.window - 1 :], run, lw=2, label=f"running mean ({args.window} episodes)")
    axes[0].set(xlabel="env steps", ylabel="return", title=args.title)
    axes[0].legend(fontsize=8)
    if "unlearn/lam" in s:
        axes[1].plot(*s["unlearn/lam"], label="mean λ per logging interval")
    sampled = [t for t in outcome if t in s]
    for tag in sampled or ("episode/efficacy", "episode/degradation"):
        if tag in s:
            axes[1].plot(*s[tag], ".", ms=3, alpha=0.4, label=tag.split("/")[1] + " (per episode)")
    axes[1].set(xlabel="env steps")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    tail = {
        t.split("/")[1]: round(float(s[t][1][-args.window :].mean()), 4) for t in sampled + ["unlearn/lam"] if t in s
    }
    print(
        f"wrote {args.out}: {len(ret)} episodes, last {args.window} mean return {ret[-args.window :].mean():.4f}; "
        f"last {args.window} logged values' means {tail}"
    )


if __name__ == "__main__":
    main()
