"""The forget rate and retain accuracy along static-λ SISS episodes, for several learning rates.

The measured curve behind the main job's settings (``unlearn_gym.bench.BENCH_ENV_KWARGS``): for each
learning rate and seed, one SISS-v0 episode at λ = 0.5 (S = 5, "norm" surgery), evaluated by
sampling every ``--eval-every`` updates with one fixed evaluation seed (the same initial noise for
every model). Writes ``curve.json`` and ``curve.png`` into ``--out``.

    python benchmarks/unlearning_curve.py --lrs 3e-4,1e-3 --steps 100 --eval-every 10 --out runs/curve
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def evaluation_row(unet, classifier, eval_kw: dict, step: int) -> dict:
    """Forget rate, retain accuracy, the worst retain label's accuracy and label 1's own accuracy."""
    from unlearn_gym.metrics.forget import evaluate_model

    fig = evaluate_model(unet, classifier, **eval_kw).figures
    contaminated = str(eval_kw["contaminated_label"])
    per = {y: r["accuracy"] for y, r in fig["per_label"].items() if y != contaminated}
    return {
        "step": step,
        "forget_rate": fig["forget_rate"],
        "retain_accuracy": fig["retain_accuracy"],
        "worst_class_accuracy": min(per.values()),
        "contaminated_label_accuracy": fig["contaminated_label_accuracy"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="model directory (default: the bundled default)")
    p.add_argument("--classifier", default=None, help="classifier directory (default: the checkpoint's)")
    p.add_argument("--lrs", default="3e-4,1e-3")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lam", type=float, default=0.5, help="static λ")
    p.add_argument("--scales", default="5", help="forget strengths S of 'norm' surgery (comma-separated)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--samples", type=int, default=20, help="samples per retain label")
    p.add_argument("--contaminated-samples", type=int, default=100)
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/curve")
    args = p.parse_args()

    import gymnasium as gym
    import torch

    import unlearn_gym  # noqa: F401
    from unlearn_gym.assets import bundled_model_dir
    from unlearn_gym.metrics.classifier import classifier_dir_for, load_classifier
    from unlearn_gym.models.checkpoint import load_model_config

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_model_dir()
    model_config = load_model_config(checkpoint)
    scen = model_config["scenario"]
    classifier = load_classifier(classifier_dir_for(checkpoint, model_config, args.classifier))
    eval_kw = dict(
        num_labels=scen["num_labels"],
        contaminated_label=scen["contaminated_label"],
        contaminant_class=scen["contaminant_class"],
        samples_per_label=args.samples,
        contaminated_label_samples=args.contaminated_samples,
        num_inference_steps=args.ddim_steps,
        seed=0,
        scheduler_config=model_config.get("scheduler"),
        progress=False,
    )
    lrs = [float(x) for x in args.lrs.split(",")]
    scales = [float(x) for x in args.scales.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    curves: dict = {}
    action = np.array([2 * args.lam - 1], np.float32)
    configs = [(lr, scale) for lr in lrs for scale in scales]
    for lr, scale in configs:
        env = gym.make(
            "unlearn_gym/SISS-v0",
            checkpoint=str(checkpoint),
            device="cpu",
            batch_size=args.batch_size,
            lr=lr,
            scale=scale,
            horizon=args.steps,
        )
        unet = env.unwrapped.engine.model()
        for seed in seeds:
            env.reset(seed=seed)
            rows, t0 = [], time.perf_counter()

            rows.append(evaluation_row(unet, classifier, eval_kw, 0))
            print(f"lr {lr:g} S {scale:g} seed {seed}: {rows[-1]}", flush=True)
            for step in range(1, args.steps + 1):
                env.step(action)
                if step % args.eval_every == 0:
                    rows.append(evaluation_row(unet, classifier, eval_kw, step))
                    print(f"lr {lr:g} S {scale:g} seed {seed}: {rows[-1]}", flush=True)
            curves[f"{lr:g}/{scale:g}/{seed}"] = {
                "lr": lr,
                "scale": scale,
                "seed": seed,
                "rows": rows,
                "seconds": time.perf_counter() - t0,
            }
        env.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps({"args": vars(args), "curves": curves}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (lr, scale) in enumerate(configs):
        for c in (c for c in curves.values() if (c["lr"], c["scale"]) == (lr, scale)):
            steps = [r["step"] for r in c["rows"]]
            axes[0].plot(steps, [r["forget_rate"] for r in c["rows"]], color=f"C{k}", alpha=0.8)
            axes[1].plot(steps, [r["retain_accuracy"] for r in c["rows"]], color=f"C{k}", alpha=0.8)
            axes[1].plot(steps, [r["worst_class_accuracy"] for r in c["rows"]], color=f"C{k}", ls=":", alpha=0.8)
        axes[0].plot([], [], color=f"C{k}", label=f"lr {lr:g}, S {scale:g}")
    axes[0].set(xlabel="SISS update", ylabel="forget rate (label 1 → contaminant)", ylim=(-0.02, None))
    axes[1].set(xlabel="SISS update", ylabel="retain accuracy (solid), worst class (dotted)")
    axes[0].legend()
    fig.suptitle(f"static λ = {args.lam}, batch {args.batch_size}; one line per seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    print(f"wrote {out / 'curve.json'} and {out / 'curve.png'}")


if __name__ == "__main__":
    main()
