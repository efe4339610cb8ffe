"""The benchmark's plots: λ trajectories and cumulative rewards, performance profiles, forget curves, sample grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .aggregates import performance_profile
from .curve import forget_rates_at
from .stats import VERDICT_METRICS, confidence_interval

__all__ = ["write_plots"]


def _profile_plot(result: dict, out: Path, plt) -> dict[str, Path]:
    """profile.png: the performance profile of every policy per metric, with 95% bootstrap bands."""
    s, episodes, names = result["settings"], result["episodes"], list(result["summary"])
    metrics = [m for m in VERDICT_METRICS if any(m in e and e[m] is not None for e in episodes)]
    instances = s["instances"]
    reps = min(int(s.get("bootstrap_reps", 2000)), 1000)  # bands only: 1000 resamples are plenty
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        higher = VERDICT_METRICS[metric] > 0
        values = np.array([e[metric] for e in episodes if e.get(metric) is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if metric != "return":  # rates: the whole of [0, 1]
            lo, hi = min(lo, 0.0), max(hi, 1.0)
        pad = 0.03 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
        taus = np.linspace(lo - pad, hi + pad, 401)
        for k, name in enumerate(names):
            rows = [e for e in episodes if e["policy"] == name]
            strata = [
                [e[metric] for e in rows if e["instance"] == i and e.get(metric) is not None and np.isfinite(e[metric])]
                for i in instances
            ]
            profile, low, high = performance_profile(
                strata, taus, higher_is_better=higher, reps=reps, rng=s.get("bootstrap_seed", 0)
            )
            ax.plot(taus, profile, color=f"C{k}", lw=1.8, label=name, drawstyle="steps-post")
            ax.fill_between(taus, low, high, color=f"C{k}", alpha=0.15, step="post")
        ax.set(
            xlabel="τ",
            ylabel="fraction of episodes",
            title=f"{metric} {'>' if higher else '<'} τ ({'higher' if higher else 'lower'} is better)",
            ylim=(-0.02, 1.02),
        )
        ax.legend(fontsize=7)
    fig.suptitle("performance profiles (95% stratified-bootstrap bands)", fontsize=9)
    fig.tight_layout()
    path = out / "profile.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"profile": path}


def _forget_curve_plot(result: dict, out: Path, plt) -> dict[str, Path]:
    """forget_curve.png (with ``curve_steps``): each policy's mean F(t) ± 95% CI over its episodes at
    t = 0 (F⁰), the curve steps and T, with F⁰/2 and F⁰/10 marked; {} without curves."""
    if result.get("pretrained") is None or not any(e.get("forget_curve") for e in result["episodes"]):
        return {}
    start = result["pretrained"]["curve_forget_rate"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, name in enumerate(result["summary"]):
        steps, at = forget_rates_at(result, name)
        if not steps:
            continue
        mean = np.array([np.mean(v) for v in at])
        half = np.nan_to_num(np.array([confidence_interval(v)[1] for v in at]))
        ax.plot(steps, mean, marker="o", ms=3, color=f"C{k}", lw=1.8, label=name)
        ax.fill_between(steps, mean - half, mean + half, color=f"C{k}", alpha=0.15)
    for fraction, style in ((0.5, "--"), (0.1, ":")):
        ax.axhline(fraction * start, color="k", lw=0.7, ls=style, label=f"F⁰·{fraction:g}")
    ax.set(xlabel="step t", ylabel="forget rate F(t)", title="forget curve (mean ± 95% CI over the episodes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "forget_curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"forget_curve": path}


def write_plots(result: dict, grids: dict, out: Path) -> dict[str, Path]:
    """curves.png (λ_t of every episode and each policy's mean; the cumulative reward, mean ± 95% CI),
    profile.png (:func:`_profile_plot`), forget_curve.png with ``curve_steps`` (:func:`_forget_curve_plot`) and, with ``grids``, samples.png (each grid: (L, k, C, H, W)
    in [−1, 1]) into ``out``; name → path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    names = list(result["summary"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(names):
        color = f"C{k}"
        rows = [e for e in result["episodes"] if e["policy"] == name]
        lam = np.array([r["lambdas"] for r in rows if len(r["lambdas"]) == len(rows[0]["lambdas"])])
        ret = np.array([np.cumsum(r["rewards"]) for r in rows if len(r["rewards"]) == len(rows[0]["rewards"])])
        steps = np.arange(1, lam.shape[1] + 1)
        for trace in lam:
            axes[0].plot(steps, trace, color=color, alpha=0.25, lw=0.8)
        axes[0].plot(steps, lam.mean(0), color=color, lw=2, label=name)
        mean = ret.mean(0)
        half = np.array([confidence_interval(ret[:, j])[1] for j in range(ret.shape[1])]) if len(ret) > 1 else 0 * mean
        axes[1].plot(steps, mean, color=color, lw=2, label=name)
        axes[1].fill_between(steps, mean - np.nan_to_num(half), mean + np.nan_to_num(half), color=color, alpha=0.2)
    axes[0].set(xlabel="step t", ylabel="λ_t", title="λ trajectories (thin: episodes; thick: mean)", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="step t", ylabel="Σ_{k≤t} r_k", title="cumulative reward (mean ± 95% CI)")
    axes[1].axhline(0, color="k", lw=0.5)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths["curves"] = out / "curves.png"
    fig.savefig(paths["curves"], dpi=120)
    plt.close(fig)
    paths |= _profile_plot(result, out, plt)
    paths |= _forget_curve_plot(result, out, plt)
    if grids:
        panels = list(grids)
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels) + 1, 4.2), squeeze=False)
        for ax, name in zip(axes[0], panels):
            g = grids[name]  # (L, k, C, H, W) in [−1, 1]
            L, k, c, h, w = g.shape
            img = (g.clamp(-1, 1) * 0.5 + 0.5).permute(0, 3, 1, 4, 2).reshape(L * h, k * w, c).numpy()
            ax.imshow(img[..., 0] if c == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(
                name if name == "pretrained" else f"{name}\n(after, seed {result['settings']['seeds'][0]})", fontsize=8
            )
            ax.set_yticks([(y + 0.5) * h for y in range(L)], [str(y) for y in range(L)], fontsize=6)
            ax.set_xticks([])
        axes[0][0].set_ylabel("label")
        fig.suptitle("samples before (pretrained) and after unlearning; same initial noise", fontsize=9)
        fig.tight_layout()
        paths["samples"] = out / "samples.png"
        fig.savefig(paths["samples"], dpi=120)
        plt.close(fig)
    return paths
