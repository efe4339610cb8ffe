"""The benchmark's report: ``bench.md`` (:func:`to_markdown`), ``bench.csv``, ``bench.json`` and the
plots (:func:`write_report`), and the object ``unlearn-gym bench --json`` prints (:func:`json_summary`)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .curve import forget_rates_at
from .plots import write_plots
from .stats import FIDELITY_METRICS, SPREAD_METRIC, VERDICT_METRICS, confidence_interval

__all__ = ["json_summary", "task_set_markdown", "to_markdown", "write_report", "write_task_set_report"]


def _fmt(cell: dict | None, digits: int = 3) -> str:
    if not cell or not np.isfinite(cell.get("mean", float("nan"))):
        return "–"
    half = cell.get("ci95", float("nan"))
    return f"{cell['mean']:.{digits}f} ± {half:.{digits}f}" if np.isfinite(half) else f"{cell['mean']:.{digits}f}"


def to_markdown(result: dict, command: str | None = None) -> str:
    """``bench.md``: the settings; the summary table (mean ± 95% CI half-width per policy, with the
    reference rows); each policy's worst retain class, verdicts and spread against the reference; the
    return's agreement with the outcome; rliable's aggregates; the warnings; the robustness and
    Table-1 sections where the result has them."""
    lines = ["# unlearn-gym bench", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [_settings_line(result["settings"]), ""]
    lines += _summary_table(result)
    lines += _curve_lines(result)
    lines += _worst_class_lines(result)
    lines += _verdict_lines(result)
    lines += _spread_lines(result)
    lines += _training_seed_lines(result)
    lines += _agreement_lines(result)
    if any(row.get("iqm") for row in result["summary"].values()):
        lines += ["", _aggregates_markdown(result)]
    for w in result.get("warnings", []):
        lines += ["", f"Warning: {w}"]
    if "pretrained_robustness" in result:
        lines += ["", _robustness_markdown(result)]
    if "fidelity" in result:
        lines += _fidelity_lines(result)
    return "\n".join(lines) + "\n"


def _settings_line(s: dict) -> str:
    """The env, seeds, instances, device and evaluation settings, and what the cells are."""
    return (
        f"{s['env_id']} {s['env_kwargs']}, seeds {list(s['seeds'])}, instances {list(s['instances'])}, "
        f"device {s['device']}; evaluation: {s.get('contaminated_label_samples') or s['samples_per_label']} samples "
        f"of the contaminated label and {s['samples_per_label']} of every other label, "
        + (
            f"{s['ddim_steps']} DDIM steps"
            if s.get("sampler", {}).get("kind", "ddim") == "ddim"
            else "one-step generator"
        )
        + f", seed {s['eval_seed']}. Cells: mean ± 95% CI half-width (Student t) over the episodes; reference "
        "rows: the one evaluation's figure [exact 95% binomial interval over its own samples]."
    )


def _summary_table(result: dict) -> list[str]:
    """The summary table: the reference rows (pretrained, retrained), then one row per policy."""
    s = result["settings"]
    columns = [("forget_rate ↓", "forget_rate"), ("retain_accuracy ↑", "retain_accuracy")]
    if any("adjusted_forget_rate" in row for row in result["summary"].values()):
        columns += [("damage D⁺ ↓", "damage"), (f"F + {s.get('beta', 1.0):g}·D⁺ ↓", "adjusted_forget_rate")]
    if any("unlearning_accuracy" in row for row in result["summary"].values()):
        columns += [("unlearning_accuracy ↑", "unlearning_accuracy"), ("remaining_accuracy ↑", "remaining_accuracy")]
    if result.get("retrained"):
        columns += [("retain FID to retrained ↓", "retain_fid_retrained")]
    names = " | ".join(c for c, _ in columns)
    lines = [f"| policy | n | return | {names} | efficacy | degradation | diverged |"]
    lines += ["|---|---|---|" + "---|" * len(columns) + "---|---|---|"]
    for label, key in (("pretrained (no unlearning)", "pretrained"), ("retrained without the forget set", "retrained")):
        ref = result.get(key)
        if ref:
            cells = " | ".join(_reference_cell(ref, k) for _, k in columns)
            lines.append(f"| {label} | – | – | {cells} | – | – | – |")
    for name, row in result["summary"].items():
        cells = " | ".join(_fmt(row.get(k)) for _, k in columns)
        lines.append(
            f"| {name} | {row['return']['n']} | {_fmt(row['return'], 4)} | {cells} | {_fmt(row['efficacy'], 4)} | "
            f"{_fmt(row['degradation'], 4)} | {row['diverged']} |"
        )
    return lines


def _curve_lines(result: dict) -> list[str]:
    """The forget curve's table (``curve_steps``): per policy the mean F(t) at every sampled step, the
    area under the curve and the steps to half and a tenth of F⁰ (:mod:`unlearn_gym.bench.curve`)."""
    rows = {n: row for n, row in result["summary"].items() if "forget_auc" in row}
    if not rows:
        return []
    steps = forget_rates_at(result, next(iter(rows)))[0][1:]  # the curve steps and T (F(0) = F⁰ is in the text)
    start = result["pretrained"]["curve_forget_rate"]
    lines = [
        "",
        f"Forget curve: F(t) on the contaminated label's {result['settings'].get('contaminated_label_samples')} "
        f"evaluation samples after t updates (F⁰ = {start:.3f}, the pretrained model on the same noises); AUC = "
        "(1/T)·∫F dt (trapezoid); steps to F⁰/2 and F⁰/10 on this grid, never = T (reached: episodes that got "
        "there). Cells: mean ± 95% CI over the episodes.",
        "",
        "| policy | " + " | ".join(f"F({t})" for t in steps) + " | AUC ↓ | steps to F⁰/2 ↓ | steps to F⁰/10 ↓ |",
        "|---|" + "---|" * (len(steps) + 3),
    ]
    for name, row in rows.items():
        values = forget_rates_at(result, name)[1][1:]
        at = [_fmt(dict(zip(("mean", "ci95"), confidence_interval(v)))) for v in values]
        n = row["forget_auc"]["n"]
        half = f"{_fmt(row['steps_to_half'], 1)} ({row.get('reached_half', 0)}/{n})"
        tenth = f"{_fmt(row['steps_to_tenth'], 1)} ({row.get('reached_tenth', 0)}/{n})"
        lines.append(f"| {name} | " + " | ".join(at) + f" | {_fmt(row['forget_auc'])} | {half} | {tenth} |")
    return lines


def _worst_class_lines(result: dict) -> list[str]:
    """Each policy's worst retain class (:func:`~unlearn_gym.bench.stats.worst_class_drop`)."""
    worst = {n: row["worst_class"] for n, row in result["summary"].items() if row.get("worst_class")}
    if not worst:
        return []
    lines = ["", "Worst retain class (largest drop of mean per-label sample accuracy from the pretrained model):"]
    return (
        lines
        + [""]
        + [
            f"- {n}: label {w['label']}, {w['pretrained']:.3f} → {w['after']:.3f} (drop {w['drop']:+.3f})"
            for n, w in worst.items()
        ]
    )


def _verdict_lines(result: dict) -> list[str]:
    """Each policy's verdicts against the reference (:func:`~unlearn_gym.bench.stats.compare_with_reference`)."""
    verdicts = {n: row["vs_reference"] for n, row in result["summary"].items() if row.get("vs_reference")}
    if not verdicts:
        return []
    ref = result["settings"].get("reference")
    lines = ["", f"Against {ref} (paired over equal seeds; mean difference ± 95% CI):", ""]
    for n, v in verdicts.items():
        parts = [f"{m} {c['verdict']} ({c['diff']:+.3f} ± {c['ci95']:.3f})" for m, c in v.items()]
        lines.append(f"- {n}: " + "; ".join(parts))
    return lines + _holm_lines(verdicts)


def _holm_lines(verdicts: dict[str, dict]) -> list[str]:
    """The verdicts above are per comparison; which of the significant ones survive Holm's correction
    over all of them (``p_holm`` of :func:`~unlearn_gym.bench.stats.compare_with_reference`)."""
    cells = [(n, m, c) for n, v in verdicts.items() for m, c in v.items() if "p_holm" in c]
    significant = [(n, m, c) for n, m, c in cells if c["verdict"] != "indistinguishable"]
    if not significant:
        return []
    kept = [
        f"{n} {m} {c['verdict']} (p {c['p']:.4f}, Holm {c['p_holm']:.4f})"
        for n, m, c in significant
        if c["verdict_holm"] != "indistinguishable"
    ]
    lost = [
        f"{n} {m} (p {c['p']:.4f}, Holm {c['p_holm']:.4f})"
        for n, m, c in significant
        if c["verdict_holm"] == "indistinguishable"
    ]
    line = f"These verdicts are per comparison at 95%, uncorrected; under Holm's correction over the {len(cells)} comparisons: "
    line += ("kept: " + "; ".join(kept)) if kept else "none is kept"
    line += (". Not kept: " + "; ".join(lost) + ".") if lost else "."
    return ["", line]


def _spread_lines(result: dict) -> list[str]:
    """Each policy's spread over the seeds against the reference's (:func:`~unlearn_gym.bench.stats.spread_vs_reference`)."""
    s = result["settings"]
    spreads = {n: row["spread_vs_reference"] for n, row in result["summary"].items() if row.get("spread_vs_reference")}
    if not spreads:
        return []
    lines = [
        "",
        f"Spread over the seeds ({SPREAD_METRIC}: standard deviation; Pitman–Morgan test of paired variances "
        f"against {s.get('reference')}'s on the same seeds):",
        "",
    ]
    for n, sp in spreads.items():
        line = f"- {n}: {sp['sd']:.3f} ({s.get('reference')}: {sp['reference_sd']:.3f}), ratio {sp['ratio']:.2f}"
        line += f", p {sp['p_value']:.3f}" if np.isfinite(sp["p_value"]) else ""
        if np.isfinite(sp["p_value"]) and sp["p_value"] < 0.05 and sp["ratio"] > 1:
            line += " — larger at 95%: the policy's own spread (its interval narrows with more seeds, not samples)"
        lines.append(line)
    return lines


def _agreement_lines(result: dict) -> list[str]:
    """Whether the return ranks the policies as their outcomes do (:func:`~unlearn_gym.bench.stats.return_agreement`)."""
    agreement = result.get("return_agreement")
    if agreement is None or len(result["summary"]) <= 1:
        return []
    agree = sum(p["agrees"] for p in agreement)
    beta = result["settings"].get("beta", 1.0)
    lines = [
        "",
        f"Return against outcome: {len(agreement)} pair(s) of policies differ at 95% in the damage-adjusted "
        f"forget rate F + β·D⁺ (β = {beta:g}; paired over equal seeds); the return ranks {agree} of them "
        "the same way.",
    ]
    return (
        lines
        + [""] * bool(agreement)
        + [
            f"- {p['better']} over {p['worse']}: F + β·D⁺ {_pair_cell(p, 'adjusted_forget_rate')} "
            f"(forget_rate {_pair_cell(p, 'forget_rate')}, damage {_pair_cell(p, 'damage')}, retain_accuracy "
            f"{_pair_cell(p, 'retain_accuracy')}), return {_pair_cell(p, 'return')}"
            + _holm_pair_note(p)
            + ("" if p["agrees"] else " — the return ranks them the other way")
            for p in agreement
        ]
    )


def _holm_pair_note(pair: dict) -> str:
    """The pair's p-value and its Holm adjustment over every pair tested."""
    if "p_holm" not in pair:
        return ""
    kept = "differs" if pair["differs_holm"] else "does not differ"
    return f"; p {pair['p']:.4f}, Holm over the {pair['pairs_tested']} pairs {pair['p_holm']:.4f} ({kept} after the correction)"


def _fidelity_lines(result: dict) -> list[str]:
    """The Table-1 section: the table of the pooled samples, then the per-episode one where the summary has it."""
    from ..metrics.table import to_markdown as fidelity_markdown

    lines = [
        "",
        "## Table 1 metrics (samples of all episodes pooled per policy)",
        "",
        fidelity_markdown(result["fidelity"]),
    ]
    if any("fidelity" in row for row in result["summary"].values()):
        lines += ["", _fidelity_episodes_markdown(result)]
    return lines


def _training_seed_lines(result: dict) -> list[str]:
    """Training seeds as a factor (:mod:`unlearn_gym.bench.factors`): per group of agents of one recipe,
    each metric's per-agent means, the mean over training seeds with its interval over the agents, the
    between/within spread with the ANOVA p-value, and the paired difference from the reference."""
    groups = result.get("training_seeds") or {}
    if not groups:
        return []
    reference = result["settings"].get("reference")
    lines = [
        "",
        "Training seeds as a factor: agents of one recipe trained with different seeds. Mean over training seeds "
        "± 95% CI over the k agents' means (t, k − 1 df); s.d. between agents' means and within (episodes); "
        f"ANOVA p (H₀: the seed does not matter); vs {reference}: paired over the episodes every agent ran, the "
        "agents averaged.",
        "",
        "| group | metric | per agent | mean over seeds | s.d. between / within | ANOVA p | vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for group, metrics in groups.items():
        for metric, c in metrics.items():
            per_agent = ", ".join(f"{v:.3f}" for v in c["per_agent"].values())
            vs = c.get("vs_reference")
            vs_cell = f"{vs['diff']:+.3f} ± {vs['ci95']:.3f} ({vs['verdict']})" if vs else "–"
            lines.append(
                f"| {group} | {metric} | {per_agent} | {_fmt(c)} | {c['sd_between']:.3f} / {c['sd_within']:.3f} | "
                f"{c['p']:.3g} | {vs_cell} |"
            )
    return lines


def _reference_cell(ref: dict, metric: str) -> str:
    """A reference row's figure, with its interval over the row's own samples where there is one."""
    if metric not in ref:
        return "–"
    cell = ref.get("intervals", {}).get(metric)
    if cell is None or not np.isfinite(cell["ci_low"]):
        return f"{ref[metric]:.3f}"
    return f"{ref[metric]:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"


def _pair_cell(pair: dict, metric: str) -> str:
    return f"{pair[metric]['diff']:+.3f} ± {pair[metric]['ci95']:.3f}"


def _fidelity_episodes_markdown(result: dict) -> str:
    """Table 1 per episode: mean ± 95% CI over the episodes, and the verdicts against the reference."""
    models = result["fidelity"]["models"]
    arrows = {+1: " ↑", -1: " ↓", 0: ""}
    header = ["policy", "n"] + [
        f"{m.split('_')[0]} {m.split('_')[1].upper()}{arrows[sign]}" for m, sign in FIDELITY_METRICS.items()
    ]
    lines = [
        "### Table 1 per episode (each episode's own samples; mean ± 95% CI over the episodes)",
        "",
        "Every episode's evaluation samples scored alone against the real sets (the pooled table above "
        "scores all of a policy's samples at once). FID and KID at this sample count are biased upward "
        "and comparable only between rows.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    if "pretrained" in models:
        pre = models["pretrained"]
        keys = {"fid": "fid", "kid": "kid_mean", "is": "is_mean", "ssim": "ssim"}
        cells = []
        for m in FIDELITY_METRICS:
            part, figure = m.split("_")
            value = pre[part][keys[figure]]
            cells.append("–" if value is None else _fidelity_value(m, value))
        lines.append("| pretrained (no unlearning) | – | " + " | ".join(cells) + " |")
    for name, row in result["summary"].items():
        if "fidelity" not in row:
            continue
        cells = row["fidelity"]
        n = next(iter(cells.values()))["n"]
        body = [
            f"{_fidelity_value(m, cells[m]['mean'])} ± {_fidelity_value(m, cells[m]['ci95'])}" for m in FIDELITY_METRICS
        ]
        lines.append(f"| {name} | {n} | " + " | ".join(body) + " |")
    verdicts = {
        n: row["fidelity_vs_reference"] for n, row in result["summary"].items() if "fidelity_vs_reference" in row
    }
    if verdicts:
        ref = result["settings"].get("reference")
        lines += ["", f"Against {ref} (paired over equal seeds; mean difference ± 95% CI):", ""]
        for n, v in verdicts.items():
            parts = [
                f"{m} {c['verdict']} ({_fidelity_value(m, c['diff'], signed=True)} ± {_fidelity_value(m, c['ci95'])})"
                for m, c in v.items()
            ]
            lines.append(f"- {n}: " + "; ".join(parts))
        lines += _holm_lines(verdicts)
    return "\n".join(lines)


def _fidelity_value(metric: str, value: float | None, signed: bool = False) -> str:
    """One Table-1 figure: FID and KID with 4 significant digits, IS and SSIM with 3 decimals."""
    if value is None or not np.isfinite(value):
        return "–"
    sign = "+" if signed else ""
    if metric.endswith(("_fid", "_kid")):
        return f"{value:{sign}.4g}"
    return f"{value:{sign}.3f}"


def _interval(cell: dict | None, digits: int = 3) -> str:
    if not cell or cell.get("value") is None or not np.isfinite(cell["value"]):
        return "–"
    return f"{cell['value']:.{digits}f} [{cell['ci_low']:.{digits}f}, {cell['ci_high']:.{digits}f}]"


def _aggregates_markdown(result: dict) -> str:
    """The rliable table: IQM and P(improvement over the reference), each with its 95% interval."""
    s, summary = result["settings"], result["summary"]
    metrics = [m for m in VERDICT_METRICS if any(m in row.get("iqm", {}) for row in summary.values())]
    better = {m: "higher" if VERDICT_METRICS[m] > 0 else "lower" for m in metrics}
    strata = "the instances" if len(s["instances"]) > 1 else "one stratum: the plain bootstrap"
    lines = [
        f"IQM (mean of the middle 50% of the episodes) and P(improvement) = P(policy's episode better than "
        f"{s.get('reference')}'s) (Mann–Whitney U/(n·m), ties 1/2, averaged over the instances; better = "
        + ", ".join(f"{m} {b}" for m, b in better.items())
        + f"); [95% interval] from {s.get('bootstrap_reps', 2000)} stratified-bootstrap resamples (strata: {strata}).",
        "",
        "| policy | " + " | ".join(f"{m} IQM" for m in metrics) + " | "
        + " | ".join(f"P({m} {better[m]})" for m in metrics) + " |",
        "|---|" + "---|" * (2 * len(metrics)),
    ]  # fmt: skip
    for name, row in summary.items():
        iqm_cells = [_interval(row.get("iqm", {}).get(m), 4 if m == "return" else 3) for m in metrics]
        poi = row.get("prob_improvement", {})
        poi_cells = [_interval(poi.get(m), 2) if poi else "(reference)" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(iqm_cells + poi_cells) + " |")
    return "\n".join(lines)


def _robustness_markdown(result: dict) -> str:
    """The robustness section: membership inference and relearning per policy (mean ± 95% CI)."""
    from ..metrics.robustness import ROBUSTNESS_METRICS

    rcfg = result["episodes"][0]["robustness"]
    mia, rel = rcfg["membership"]["settings"], rcfg["relearn"]["settings"]
    pre = result["pretrained_robustness"]
    metrics = [
        m for m in ROBUSTNESS_METRICS if any(m in row.get("robustness", {}) for row in result["summary"].values())
    ]
    lines = [
        "## Robustness: membership inference and relearning",
        "",
        f"Membership inference ({mia['attack']} attack): members (training images) against held-out images of the "
        f"same kind, up to {mia['num_samples']} each; AUC (0.5 = chance) and TPR at {mia['fpr']:.0%} FPR. "
        f"Relearning: {rel['steps']} steps of DDPM fine-tuning (AdamW, lr {rel['lr']}, batch {rel['batch_size']}) on "
        f"retain data (retain) and on retain data with {rel['forget_per_batch']} of each batch from "
        f"{rel['forget_images']} forget images (mixed); forget rate after K steps from {rel['samples']} samples of "
        f"the contaminated label; steps to half: the first evaluation (every {rel['eval_every']} steps) at which "
        f"the forget rate reaches half the pretrained level {pre['relearn_level']:.3f}, mean over the episodes "
        "that got there (k/n).",
        "",
        "| policy | " + " | ".join(ROBUSTNESS_METRICS[m] for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    cells = [f"{pre[m]:.3f}" if pre.get(m) is not None else "–" for m in metrics]
    lines.append("| pretrained (no unlearning) | " + " | ".join(cells) + " |")
    retrained = result.get("retrained_robustness")
    if retrained is not None:
        cells = [_fmt_reference_robustness(retrained.get(m), m) for m in metrics]
        lines.append("| retrained without the forget set (learning, not relearning) | " + " | ".join(cells) + " |")
    for name, row in result["summary"].items():
        rob, n = row.get("robustness", {}), row["return"]["n"]
        cells = []
        for m in metrics:
            cell = _fmt(rob.get(m), 1 if m.endswith("steps_to_half") else 3)
            cells.append(f"{cell} ({rob[m]['n']}/{n})" if m.endswith("steps_to_half") and m in rob else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if retrained is not None:
        lines += [
            "",
            "The retrained row is a model that never saw the forget set, attacked the same way: its relearning "
            "columns are how fast the concept is *learned* from the attack's images. An unlearned model that "
            "regains it faster (a higher forget rate after K, fewer steps to half) relearns what unlearning hid.",
        ]
    return "\n".join(lines)


def _fmt_reference_robustness(value: float | None, metric: str) -> str:
    """A reference row's robustness figure: one model, no interval ("not within K" for a steps-to-half of None)."""
    if value is None:
        return "not within K" if metric.endswith("steps_to_half") else "–"
    return f"{value:.1f}" if metric.endswith("steps_to_half") else f"{value:.3f}"


def json_summary(result: dict) -> dict:
    """What ``unlearn-gym bench --json`` prints: policy → {return, forget_rate, retain_accuracy, damage,
    adjusted_forget_rate} → {mean, ci95, n}, with ``vs_reference`` (metric → verdict),
    ``vs_reference_holm`` (metric → the verdict after Holm's correction), ``spread_vs_reference`` (:func:`spread_vs_reference`), ``worst_class``, ``iqm`` and
    ``prob_improvement`` (metric → {value, ci_low, ci_high}) where computed, ``fidelity`` (Table 1
    per episode: :data:`FIDELITY_METRICS` → {mean, ci95, n}) and ``fidelity_vs_reference`` with
    ``metrics="full"``, the robustness figures with ``robustness``; ``pretrained`` →
    {forget_rate, retain_accuracy, per_label_accuracy, intervals (:func:`sample_intervals`)} for the
    model at reset, and ``retrained``
    likewise for the model retrained without the forget set (with ``retain_fid_retrained``,
    ``retain_kid_retrained``, as every policy has them, when it is the reference); ``training_seeds``
    where agents of one recipe ran (:func:`~unlearn_gym.bench.factors.training_seed_factor`)."""
    out = {}
    for key in ("pretrained", "retrained"):
        ref = result.get(key)
        if ref:
            out[key] = {
                "forget_rate": _finite(ref["forget_rate"]),
                "retain_accuracy": _finite(ref["retain_accuracy"]),
                "per_label_accuracy": {y: row["accuracy"] for y, row in ref["per_label"].items()},
            } | {
                k: _finite(ref[k])
                for k in ("damage", "adjusted_forget_rate", "retain_fid_retrained", "retain_kid_retrained")
                if k in ref
            }
            if "intervals" in ref:
                out[key]["intervals"] = {m: {k: _finite(v) for k, v in c.items()} for m, c in ref["intervals"].items()}
    if result.get("training_seeds"):
        out["training_seeds"] = _jsonable(result["training_seeds"])
    for name, row in result["summary"].items():
        out[name] = {
            k: {"mean": _finite(row[k]["mean"]), "ci95": _finite(row[k]["ci95"]), "n": row[k]["n"]}
            for k in (
                "return",
                "forget_rate",
                "retain_accuracy",
                "damage",
                "adjusted_forget_rate",
                "retain_fid_retrained",
                "retain_kid_retrained",
            )
            if k in row
        }
        if row.get("vs_reference"):
            out[name]["vs_reference"] = {m: c["verdict"] for m, c in row["vs_reference"].items()}
            out[name]["vs_reference_holm"] = {
                m: c["verdict_holm"] for m, c in row["vs_reference"].items() if "verdict_holm" in c
            }
        if row.get("spread_vs_reference"):
            spread = row["spread_vs_reference"]
            out[name]["spread_vs_reference"] = {k: v if k == "n" else _finite(v) for k, v in spread.items()}
        if row.get("worst_class"):
            out[name]["worst_class"] = row["worst_class"]
        for key in ("iqm", "prob_improvement"):
            if row.get(key):
                out[name][key] = {m: {k: _finite(v) for k, v in c.items()} for m, c in row[key].items()}
        out[name] |= {
            k: {"mean": _finite(v["mean"]), "ci95": _finite(v["ci95"]), "n": v["n"]}
            for k, v in row.get("robustness", {}).items()
        }
        if row.get("fidelity"):
            out[name]["fidelity"] = {
                k: {"mean": _finite(v["mean"]), "ci95": _finite(v["ci95"]), "n": v["n"]}
                for k, v in row["fidelity"].items()
            }
        if row.get("fidelity_vs_reference"):
            out[name]["fidelity_vs_reference"] = {m: c["verdict"] for m, c in row["fidelity_vs_reference"].items()}
    return out


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def write_report(result: dict, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """bench.md, bench.csv (one row per episode), bench.json and the PNG plots (curves.png,
    profile.png, samples.png), into ``out``."""
    from ..models.checkpoint import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grids = result.pop("_grids", {})
    paths = {"markdown": out / "bench.md", "csv": out / "bench.csv", "json": out / "bench.json"}
    paths["markdown"].write_text(to_markdown(result, command))
    cols = ["policy", "seed", "instance", "return", "length", "diverged", "efficacy", "degradation", "mean_lambda"]
    metrics = (
        "forget_rate",
        "retain_accuracy",
        "contaminated_label_accuracy",
        "unlearning_accuracy",
        "remaining_accuracy",
    )
    cols += [c for c in metrics if c in result["episodes"][0]]
    cols += list(result["episodes"][0].get("robustness", {}).get("summary", {}))
    cols += [c for c in ("seconds_unlearn", "seconds_evaluate", "seconds_robustness") if c in result["episodes"][0]]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result["episodes"])
    write_json_atomic(_jsonable(result | {"command": command}), paths["json"])
    paths |= write_plots(result, grids, out)
    result["_grids"] = grids
    return paths


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def task_set_markdown(results: dict[str, dict], command: str | None = None) -> str:
    """``tasks.md``: one table over the task set (:mod:`unlearn_gym.tasks`): per task its reference rows
    and each policy's forget rate, retain accuracy and F + β·D⁺ (mean ± 95% CI over its episodes), with
    the forget rate's and F + β·D⁺'s paired difference from the task's reference policy and the verdict
    (Holm within the task's own report)."""
    lines = ["# unlearn-gym bench: the task set", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        "| task | policy | n | forget_rate ↓ | retain_accuracy ↑ | F + β·D⁺ ↓ | F vs reference | F + β·D⁺ vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, result in results.items():
        for label, key in (("pretrained", "pretrained"), ("retrained", "retrained")):
            ref = result.get(key)
            if ref:
                cells = " | ".join(_reference_cell(ref, m) for m in ("forget_rate", "retain_accuracy"))
                lines.append(f"| {task} | {label} | – | {cells} | – | – | – |")
        reference = result["settings"].get("reference")
        for name, row in result["summary"].items():
            pair = row.get("vs_reference") or {}
            verdicts = []
            for metric in ("forget_rate", "adjusted_forget_rate"):
                cell = pair.get(metric)
                if name == reference:
                    verdicts.append("(reference)")
                elif cell is None:
                    verdicts.append("–")
                else:
                    holm = "" if cell.get("verdict_holm", cell["verdict"]) == cell["verdict"] else ", not under Holm"
                    verdicts.append(f"{_pair_cell(pair, metric)} ({cell['verdict']}{holm})")
            lines.append(
                f"| {task} | {name} | {row['forget_rate']['n']} | {_fmt(row.get('forget_rate'))} | "
                f"{_fmt(row.get('retain_accuracy'))} | {_fmt(row.get('adjusted_forget_rate'))} | {' | '.join(verdicts)} |"
            )
    seconds = sum(r.get("seconds", 0.0) for r in results.values())
    lines += ["", f"{len(results)} tasks, {seconds:.0f} s; each task's full report in its own folder (bench.md)."]
    return "\n".join(lines) + "\n"


def write_task_set_report(results: dict[str, dict], out: str | Path, command: str | None = None) -> Path:
    """Write :func:`task_set_markdown` to ``out/tasks.md`` and return its path."""
    path = Path(out) / "tasks.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(task_set_markdown(results, command))
    return path
