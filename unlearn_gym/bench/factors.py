"""Training seeds as a factor: agents trained by one recipe with different seeds, read as one treatment.

An RL result from one training seed says how that agent does, not how the recipe does (Henderson et
al., 2018; Agarwal et al., 2021). When a bench runs k ≥ 2 exported agents whose ``agent.json`` agree
in everything but ``seed`` (algorithm, env, env settings, timesteps, network), they form a group,
and for each outcome metric x the report gives:

- each agent's mean x̄_j over its n_j episodes (j = 1 … k);
- the recipe's mean over training seeds, (1/k)·Σ_j x̄_j, with the Student-t interval over the k agent
  means (k − 1 degrees of freedom): the spread a new training run would land in, which the pooled
  episodes' interval (every episode one draw) understates when agents differ;
- the one-way analysis of variance of the episodes by agent: the between-agent and within-agent
  standard deviations and the F test's p-value (H₀: the training seed does not change the mean);
- against the bench's reference policy, paired over the episodes (seed, instance) that every agent
  and the reference ran: d_e = (1/k)·Σ_j x_{j,e} − x_{ref,e}, mean ± t-interval and verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .stats import VERDICT_METRICS, confidence_interval, paired_difference, verdict

__all__ = ["FACTOR_METRICS", "training_seed_factor", "training_seed_groups"]

FACTOR_METRICS = ("forget_rate", "retain_accuracy", "adjusted_forget_rate", "return")
"""The metrics read with the training seed as a factor."""


def training_seed_groups(policies: Mapping[str, object]) -> dict[str, list[str]]:
    """Group name → the policies (≥ 2) that are exported agents of one recipe with distinct training seeds.

    An agent is a policy with an ``info`` dict holding ``algo`` and ``seed`` (``load_agent``'s
    :class:`~unlearn_gym.agents.policy.AgentPolicy`); its recipe is that dict without ``seed``. The
    group is named ``"{algo} (training seeds s1, s2, …)"``.
    """
    recipes: dict[str, list[tuple[int, str]]] = {}
    for name, policy in policies.items():
        info = getattr(policy, "info", None)
        if not isinstance(info, dict) or "algo" not in info or "seed" not in info:
            continue
        recipe = json.dumps({k: v for k, v in info.items() if k != "seed"}, sort_keys=True, default=str)
        recipes.setdefault(recipe, []).append((int(info["seed"]), name))
    groups = {}
    for recipe, members in recipes.items():
        seeds = [s for s, _ in members]
        if len(members) < 2 or len(set(seeds)) != len(seeds):
            continue
        members.sort()
        algo = json.loads(recipe)["algo"]
        groups[f"{algo} (training seeds {', '.join(str(s) for s, _ in members)})"] = [n for _, n in members]
    return groups


def _anova(samples: Sequence[np.ndarray]) -> dict[str, float]:
    """One-way ANOVA of ``samples`` (one array per group): between and within s.d., F and its p-value."""
    from scipy.stats import f as f_dist

    k = len(samples)
    n = sum(len(x) for x in samples)
    grand = float(np.concatenate(samples).mean())
    ss_between = sum(len(x) * (float(x.mean()) - grand) ** 2 for x in samples)
    ss_within = sum(float(((x - x.mean()) ** 2).sum()) for x in samples)
    if k < 2 or n - k < 1:
        return {"sd_between": float("nan"), "sd_within": float("nan"), "f": float("nan"), "p": float("nan")}
    ms_between, ms_within = ss_between / (k - 1), ss_within / (n - k)
    f = ms_between / ms_within if ms_within > 0 else (math.inf if ms_between > 0 else float("nan"))
    p = float(f_dist.sf(f, k - 1, n - k)) if np.isfinite(f) else (0.0 if f == math.inf else float("nan"))
    return {
        "sd_between": float(np.std([x.mean() for x in samples], ddof=1)),
        "sd_within": math.sqrt(ms_within),
        "f": float(f),
        "p": p,
    }


def training_seed_factor(
    episodes: Sequence[Mapping], groups: Mapping[str, Sequence[str]], reference: str | None
) -> dict[str, dict]:
    """Group → metric → the module docstring's figures: ``per_agent`` (name → mean), ``mean``, ``ci95``
    (over the agents' means), ``k``, ``sd_between``, ``sd_within``, ``f``, ``p`` and, with a reference
    that ran the same episodes, ``vs_reference`` ({diff, ci95, verdict, n})."""
    key = lambda e: (e["seed"], e["instance"])  # noqa: E731
    out: dict[str, dict] = {}
    for group, members in groups.items():
        by_agent = {m: {key(e): e for e in episodes if e["policy"] == m} for m in members}
        ref = {key(e): e for e in episodes if e["policy"] == reference} if reference else {}
        out[group] = {}
        for metric in FACTOR_METRICS:
            values = {
                m: np.asarray(
                    [e[metric] for e in rows.values() if e.get(metric) is not None and np.isfinite(e[metric])]
                )
                for m, rows in by_agent.items()
            }
            if any(len(v) == 0 for v in values.values()):
                continue
            means = {m: float(v.mean()) for m, v in values.items()}
            mean, half = confidence_interval(list(means.values()))
            cell = {"per_agent": means, "mean": mean, "ci95": half, "k": len(members)}
            cell |= _anova(list(values.values()))
            rows_with_metric = [ref, *by_agent.values()]
            shared = [u for u in ref if all(u in rows and rows[u].get(metric) is not None for rows in rows_with_metric)]
            if reference not in members and len(shared) >= 2:
                group_mean = [float(np.mean([by_agent[m][u][metric] for m in members])) for u in shared]
                diff, half_d = paired_difference(group_mean, [ref[u][metric] for u in shared])
                cell["vs_reference"] = {
                    "diff": diff,
                    "ci95": half_d,
                    "verdict": verdict(diff, half_d, VERDICT_METRICS[metric] > 0),
                    "n": len(shared),
                }
            out[group][metric] = cell
    return out
