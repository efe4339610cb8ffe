import dataclasses
import json
import math

import numpy as np
import pytest
from conftest import SMALL_SAMPLED_PROBE

from unlearn_gym.bench import (
    FIDELITY_METRICS,
    BenchConfig,
    EpisodeRunner,
    add_outcome_scores,
    compare_with_reference,
    confidence_interval,
    paired_difference,
    policy_from_spec,
    return_agreement,
    run_benchmark,
    spread_vs_reference,
    verdict,
    worst_class_drop,
)


def test_confidence_interval_matches_a_hand_computed_case():
    # x = 1..5: mean 3, s = √2.5, t_{0.975, 4} = 2.7764451 → 2.7764451·√2.5/√5 = 1.9632432
    mean, half = confidence_interval([1, 2, 3, 4, 5])
    assert mean == 3.0 and half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-7)
    assert half == pytest.approx(1.9632432, rel=1e-7)
    # two values 0 and 2: s = √2, t_{0.975, 1} = 12.7062047 → 12.7062047·√2/√2 = 12.7062047
    assert confidence_interval([0.0, 2.0])[1] == pytest.approx(12.7062047, rel=1e-7)
    assert confidence_interval([2.0, 2.0, 2.0]) == (2.0, 0.0)
    m, h = confidence_interval([4.0])
    assert m == 4.0 and math.isnan(h)
    assert confidence_interval([1.0, float("nan"), 3.0])[0] == 2.0


def test_paired_difference_and_verdicts_match_hand_computed_cases():
    # differences a − b = (1, 2, 3): mean 2, s = 1, t_{0.975, 2} = 4.3026527 → half = 4.3026527/√3 = 2.4841377
    mean, half = paired_difference([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(2.4841377, rel=1e-7)
    assert verdict(mean, half, higher_is_better=True) == "indistinguishable"  # 2 − 2.48 < 0
    # differences (1.0, 1.1, 0.9): mean 1, s = 0.1 → half = 0.2484138: the interval excludes 0
    mean, half = paired_difference([1.0, 1.1, 0.9], [0.0, 0.0, 0.0])
    assert half == pytest.approx(0.24841377, rel=1e-6)
    assert verdict(mean, half, higher_is_better=True) == "better"
    assert verdict(mean, half, higher_is_better=False) == "worse"
    assert verdict(-mean, half, higher_is_better=False) == "better"
    assert verdict(float("nan"), half, higher_is_better=True) == "indistinguishable"
    # a metric with no better direction (IS in Table 1): the side of the difference
    assert verdict(mean, half, higher_is_better=None) == "higher"
    assert verdict(-mean, half, higher_is_better=None) == "lower"
    assert verdict(0.1, half, higher_is_better=None) == "indistinguishable"
    with pytest.raises(ValueError, match="expected equal lengths"):
        paired_difference([1.0], [1.0, 2.0])


def test_holm_adjust_and_paired_p_value_match_hand_computed_cases():
    from unlearn_gym.bench import holm_adjust, paired_p_value

    # sorted 0.005, 0.01, 0.03, 0.04 → 4·0.005, 3·0.01, 2·0.03, max(1·0.04, 0.06): back in the input's order
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm_adjust([0.01, float("nan"), 0.04])  # NaN stays NaN and is not counted: m = 2
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    np.testing.assert_allclose(holm_adjust([0.6, 0.7]), [1.0, 1.0])  # capped at 1
    # t with 2 degrees of freedom: F(t) = ½ + t/(2√(t² + 2)); differences (1, 2, 3): t = 2√3
    t = 2 * np.sqrt(3)
    assert paired_p_value([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(1 - t / np.sqrt(t * t + 2), rel=1e-9)
    # differences (1, 1.1, 0.9): t = 10√3, p < 0.05 exactly where the interval excluded 0 (the test above)
    t = 10 * np.sqrt(3)
    assert paired_p_value([1.0, 1.1, 0.9], [0.0, 0.0, 0.0]) == pytest.approx(1 - t / np.sqrt(t * t + 2), rel=1e-6)
    assert paired_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0 and paired_p_value([2.0, 2.0], [1.0, 1.0]) == 0.0
    assert np.isnan(paired_p_value([1.0], [0.0]))


def ep(policy, seed, ret, fr, ra, damage=0.0):
    """An episode record with the summary metrics (the runner's keys; β = 1)."""
    return {
        "policy": policy,
        "seed": seed,
        "instance": None,
        "return": ret,
        "forget_rate": fr,
        "retain_accuracy": ra,
        "damage": damage,
        "adjusted_forget_rate": fr + damage,
    }


def test_compare_with_reference_pairs_by_seed_and_reads_the_direction_of_each_metric():
    episodes = [ep("static:0.5", s, 0.1 * s, 0.30 + 0.1 * s, 0.9) for s in range(3)]
    # the same seeds shifted: forget rate lower by 0.10 ± 0.01 (better), return equal, retain spread around 0
    episodes += [ep("p", s, 0.1 * s, 0.20 + 0.1 * s + 0.01 * (s - 1), 0.9 + 0.01 * (s - 1)) for s in reversed(range(3))]
    out = compare_with_reference(episodes, ["static:0.5", "p"], "static:0.5")
    assert set(out) == {"p"}
    assert out["p"]["forget_rate"]["verdict"] == "better"
    assert out["p"]["forget_rate"]["diff"] == pytest.approx(-0.10)
    assert out["p"]["return"]["verdict"] == "indistinguishable" and out["p"]["return"]["ci95"] == 0.0
    assert out["p"]["retain_accuracy"]["verdict"] == "indistinguishable"
    # Holm over the 4 comparisons: forget rate and adjusted forget rate p = 1 − t/√(t² + 2) at t = 10√3,
    # return and retain accuracy p = 1 (mean difference 0) → 4p, max(3p, 4p), 1, 1
    t = 10 * np.sqrt(3)
    p_forget = 1 - t / np.sqrt(t * t + 2)
    assert out["p"]["forget_rate"]["p"] == pytest.approx(p_forget, rel=1e-6)
    assert out["p"]["forget_rate"]["p_holm"] == pytest.approx(4 * p_forget, rel=1e-6)
    assert out["p"]["adjusted_forget_rate"]["p_holm"] == pytest.approx(4 * p_forget, rel=1e-6)
    assert out["p"]["forget_rate"]["verdict_holm"] == "better"
    assert out["p"]["return"]["p_holm"] == 1.0 and out["p"]["return"]["verdict_holm"] == "indistinguishable"
    assert compare_with_reference(episodes, ["p"], "static:0.5") == {}
    assert compare_with_reference(episodes, ["static:0.5", "p"], None) == {}


def test_add_outcome_scores_matches_a_hand_computed_case():
    pretrained = {
        "forget_rate": 0.3,
        "per_label": {"0": {"accuracy": 1.0}, "1": {"accuracy": 0.6}, "2": {"accuracy": 0.9}},
    }
    episodes = [
        # K⁰ = (1.0, 0.6 + 0.3, 0.9), K = (0.9, 0.8 + 0.1, 0.9): δ = (0.1, 0, 0), D = ½(0.1 + 0.1/3) = 0.0666…
        {"forget_rate": 0.1, "per_label_accuracy": {"0": 0.9, "1": 0.8, "2": 0.9}},
        # every label better than pretrained: D < 0, D⁺ = 0
        {"forget_rate": 0.0, "per_label_accuracy": {"2": 1.0, "0": 1.0, "1": 1.0}},
        # label 1 broken into samples nobody recognises (F falls, K_1 falls alike): δ_1 = 0.3 − 0.0 + 0.6
        {"forget_rate": 0.0, "per_label_accuracy": {"0": 1.0, "1": 0.0, "2": 0.9}},
        {"forget_rate": None, "per_label_accuracy": {"0": 1.0, "1": 0.0, "2": 0.9}},  # not evaluated: untouched
    ]
    add_outcome_scores(episodes, pretrained, contaminated_label=1, beta=2.0)
    assert episodes[0]["damage"] == pytest.approx(0.5 * (0.1 + 0.1 / 3))
    assert episodes[0]["adjusted_forget_rate"] == pytest.approx(0.1 + 2.0 * 0.5 * (0.1 + 0.1 / 3))
    assert episodes[1]["damage"] == 0.0 and episodes[1]["adjusted_forget_rate"] == 0.0
    assert episodes[2]["damage"] == pytest.approx(0.5 * (0.9 + 0.9 / 3))
    assert episodes[2]["adjusted_forget_rate"] == pytest.approx(2.0 * 0.6)  # breaking label 1 does not pay
    assert "damage" not in episodes[3]


def test_return_agreement_checks_the_pairs_whose_outcomes_differ():
    episodes = []
    for s in range(3):
        jitter = 0.01 * (s - 1)
        episodes += [
            ep("static", s, 0.30 + jitter, 0.05 + jitter, 0.90),  # the good unlearner, high return
            ep("hack", s, 0.50 + jitter, 0.30 - jitter, 0.70 + jitter, damage=0.2),  # worse outcome, higher return
            ep("twin", s, 0.28 - jitter, 0.05 - jitter, 0.90 + jitter),  # the same outcome as static
            # forget rate lower than static's by 0.03 but damage 0.10 more: worse at equal damage
            ep("blunt", s, 0.40 + jitter, 0.02 + 0.5 * jitter, 0.85, damage=0.10 + jitter),
        ]
    names = ["static", "hack", "twin", "blunt"]
    pairs = {(p["better"], p["worse"]): p for p in return_agreement(episodes, names)}
    # static and twin do not differ at 95%: no pair; each beats hack and blunt on F + β·D⁺
    assert set(pairs) == {
        ("static", "hack"),
        ("twin", "hack"),
        ("static", "blunt"),
        ("twin", "blunt"),
        ("blunt", "hack"),
    }
    p = pairs[("static", "hack")]
    assert p["adjusted_forget_rate"]["diff"] == pytest.approx(-0.45)
    assert p["forget_rate"]["diff"] == pytest.approx(-0.25) and p["retain_accuracy"]["diff"] == pytest.approx(0.20)
    assert p["damage"]["diff"] == pytest.approx(-0.20)
    assert p["return"]["diff"] == pytest.approx(-0.20) and p["agrees"] is False  # the hacked return ranks it first
    p = pairs[("static", "blunt")]
    assert p["forget_rate"]["diff"] == pytest.approx(0.03) and p["adjusted_forget_rate"]["diff"] == pytest.approx(-0.07)
    assert p["agrees"] is False
    # every pair is one test of the family (4 policies: 6 pairs); Holm adjusts over all 6, reported or not
    assert all(q["pairs_tested"] == 6 and q["p_holm"] >= q["p"] for q in pairs.values())
    assert pairs[("static", "hack")]["differs_holm"] is True  # differences −0.45 ± tiny: p ≈ 0
    episodes = [dict(e, **{"return": -e["return"]}) if e["policy"] in ("hack", "blunt") else e for e in episodes]
    assert all(p["agrees"] for p in return_agreement(episodes, names))
    assert return_agreement([e for e in episodes if e["seed"] == 0], names) == []  # one pair each: no interval


def test_sample_intervals_are_exact_binomial_intervals():
    from types import SimpleNamespace

    import torch

    from unlearn_gym.bench import sample_intervals

    # label 1 (contaminated): 3 of 4 samples called the contaminant (class 10); labels 0 and 2: 3 of 4 right
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
    predictions = torch.tensor([0, 0, 10, 10, 10, 1, 2, 9])
    out = sample_intervals(SimpleNamespace(labels=labels, predictions=predictions), 1, 10)
    # Clopper–Pearson for 3 of 4: [Beta⁻¹(0.025; 3, 2), Beta⁻¹(0.975; 4, 1)] = [0.194120, 0.993691]
    assert out["forget_rate"]["value"] == 0.75
    assert out["forget_rate"]["ci_low"] == pytest.approx(0.194120, abs=1e-6)
    assert out["forget_rate"]["ci_high"] == pytest.approx(0.993691, abs=1e-6)
    assert out["retain_accuracy"]["value"] == 0.75  # pooled over labels 0 and 2
    # none of 100 called the contaminant: [0, 1 − 0.025^(1/100)] = [0, 0.036217], not a point at 0
    none = sample_intervals(SimpleNamespace(labels=torch.ones(100), predictions=torch.ones(100)), 1, 10)
    assert none["forget_rate"]["ci_low"] == 0.0 and none["forget_rate"]["ci_high"] == pytest.approx(0.036217, abs=1e-6)
    assert np.isnan(none["retain_accuracy"]["value"])  # no retain samples


def test_spread_vs_reference_pairs_by_seed():
    wild = [0.0, 0.4, 0.05, 0.5, 0.1, 0.45]  # a policy whose outcome depends on the seed
    episodes = [ep("static:0.5", s, 0.3, 0.05 + 0.01 * (s % 2), 0.9) for s in range(6)]
    episodes += [ep("random", s, 0.1, wild[s], 0.9) for s in reversed(range(6))]
    episodes += [ep("twin", s, 0.3, 0.06 - 0.01 * (s % 2), 0.9) for s in range(6)]
    out = spread_vs_reference(episodes, ["static:0.5", "random", "twin"], "static:0.5")
    assert set(out) == {"random", "twin"}
    assert out["random"]["sd"] == pytest.approx(np.std(wild, ddof=1)) and out["random"]["n"] == 6
    assert out["random"]["p_value"] < 0.05 and out["random"]["ratio"] > 10
    assert out["twin"]["ratio"] == pytest.approx(1.0) and out["twin"]["p_value"] > 0.05
    assert spread_vs_reference(episodes, ["random"], "static:0.5") == {}


def test_worst_class_drop_skips_the_contaminated_label():
    pretrained = {"per_label": {"0": {"accuracy": 1.0}, "1": {"accuracy": 0.4}, "2": {"accuracy": 0.9}}}
    rows = [
        {"per_label_accuracy": {"0": 0.95, "1": 0.9, "2": 0.7}},
        {"per_label_accuracy": {"0": 0.85, "1": 1.0, "2": 0.8}},
    ]
    worst = worst_class_drop(pretrained, rows, contaminated_label=1)
    assert worst["label"] == 2 and worst["after"] == pytest.approx(0.75) and worst["drop"] == pytest.approx(0.15)


def test_policy_specs():
    assert policy_from_spec("static:0.3").value == 0.3
    assert policy_from_spec("linear:0.9:0.1").end == 0.1
    assert policy_from_spec("random").name == "random"
    assert policy_from_spec("vi-adaptive").name == "vi-adaptive"
    assert policy_from_spec("vi-variance").name == "vi-variance"
    assert policy_from_spec("vi-variance:fixed").derivative == "fixed"
    with pytest.raises(ValueError, match="expected vi-variance, vi-variance:resampled or vi-variance:fixed"):
        policy_from_spec("vi-variance:exact")
    with pytest.raises(ValueError, match="unknown policy"):
        policy_from_spec("greedy")
    with pytest.raises(ValueError, match="not numbers"):
        policy_from_spec("static:half")
    with pytest.raises(ValueError, match="bootstrap_reps must be >= 1, got 0"):
        BenchConfig(bootstrap_reps=0)


def _config(tiny_checkpoint, **kw):
    env_kwargs = dict(
        checkpoint=str(tiny_checkpoint), batch_size=2, probe_size=1, horizon=3, device="cpu", **SMALL_SAMPLED_PROBE
    )
    return BenchConfig(
        env_kwargs=env_kwargs, seeds=(0, 1), samples_per_label=2, contaminated_label_samples=3, ddim_steps=2, **kw
    )


def _policies():
    return {name: policy_from_spec(name) for name in ("static:0.5", "random", "vi-adaptive")}


def test_runner_gives_equal_results_for_equal_seeds(tiny_checkpoint):
    a = run_benchmark(_policies(), _config(tiny_checkpoint), progress=False, log=None)
    b = run_benchmark(_policies(), _config(tiny_checkpoint), progress=False, log=None)
    strip = lambda eps: [{k: v for k, v in e.items() if not k.startswith("seconds")} for e in eps]  # noqa: E731
    assert strip(a["episodes"]) == strip(b["episodes"])
    assert len(a["episodes"]) == 3 * 2
    static = [e for e in a["episodes"] if e["policy"] == "static:0.5"]
    assert all(lam == 0.5 for e in static for lam in e["lambdas"])
    assert (
        static[0]["efficacy"] != static[1]["efficacy"]
    )  # the seeds differ (the sampled return may not, at 4 + 9 samples)
    random_lams = [e["lambdas"] for e in a["episodes"] if e["policy"] == "random"]
    assert random_lams[0] != random_lams[1]
    # the true return is the sum of the rewards, and the summary is mean ± t-interval over the seeds
    for e in a["episodes"]:
        assert e["return"] == pytest.approx(sum(e["rewards"])) and e["length"] == 3
    mean, half = confidence_interval([e["return"] for e in static])
    assert a["summary"]["static:0.5"]["return"] == {"mean": mean, "ci95": half, "n": 2}
    assert 0.0 <= a["summary"]["random"]["forget_rate"]["mean"] <= 1.0
    # paired verdicts against static λ = 0.5, and the worst retain class of each policy
    assert set(a["summary"]["random"]["vs_reference"]) == {
        "return",
        "adjusted_forget_rate",
        "forget_rate",
        "retain_accuracy",
    }
    assert "vs_reference" not in a["summary"]["static:0.5"]
    assert a["summary"]["random"]["worst_class"]["label"] != 1


def test_report_files_and_the_json_command(tiny_checkpoint, tmp_path, capsys):
    from unlearn_gym.bench.aggregates import iqm
    from unlearn_gym.cli import main

    argv = ["bench", "--policies", "static:0.5,linear:0.9:0.1", "--checkpoint", str(tiny_checkpoint)]
    argv += [
        "--env-kwargs",
        '{"probe_size": 1, "sample_forget": 4, "sample_retain": 1, "sample_ddim_steps": 2}',
        "--batch-size",
        "2",
        "--horizon",
        "2",
        "--seeds",
        "2",
    ]
    argv += ["--samples", "2", "--contaminated-samples", "4", "--ddim-steps", "2", "--device", "cpu"]
    argv += ["--out", str(tmp_path), "--json", "--no-progress", "--metrics", "full", "--bootstrap-reps", "100"]
    argv += ["--threads", "1", "--workers", "1", "--num-envs", "2", "--executor", "loop"]  # seeds as batched runs
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"pretrained", "static:0.5", "linear:0.9:0.1"}
    assert set(summary["pretrained"]) == {
        "forget_rate",
        "retain_accuracy",
        "per_label_accuracy",
        "damage",
        "adjusted_forget_rate",
        "intervals",
    }
    for metric in ("forget_rate", "retain_accuracy"):  # over the pretrained evaluation's own samples
        cell = summary["pretrained"]["intervals"][metric]
        assert cell["value"] == pytest.approx(summary["pretrained"][metric])
        assert 0.0 <= cell["ci_low"] <= cell["value"] <= cell["ci_high"] <= 1.0
    assert summary["pretrained"]["damage"] == 0.0
    assert summary["pretrained"]["adjusted_forget_rate"] == summary["pretrained"]["forget_rate"]
    assert summary["pretrained"]["forget_rate"] in {0.0, 0.25, 0.5, 0.75, 1.0}  # 4 samples of label 1
    assert set(summary["static:0.5"]) == {
        "return",
        "forget_rate",
        "retain_accuracy",
        "damage",
        "adjusted_forget_rate",
        "worst_class",
        "iqm",
        "fidelity",
    }
    assert set(summary["linear:0.9:0.1"]["vs_reference"]) == {
        "return",
        "adjusted_forget_rate",
        "forget_rate",
        "retain_accuracy",
    }
    assert summary["linear:0.9:0.1"]["spread_vs_reference"]["n"] == 2  # the seeds, paired with static's
    # rliable's aggregates: IQM (of 2 episodes: their mean) and P(improvement over static:0.5), with intervals
    for name in ("static:0.5", "linear:0.9:0.1"):
        assert set(summary[name]["iqm"]) == {"return", "adjusted_forget_rate", "forget_rate", "retain_accuracy"}
        cell = summary[name]["iqm"]["return"]
        assert set(cell) == {"value", "ci_low", "ci_high"} and cell["ci_low"] <= cell["value"] <= cell["ci_high"]
        assert cell["value"] == pytest.approx(summary[name]["return"]["mean"])
    poi = summary["linear:0.9:0.1"]["prob_improvement"]
    assert set(poi) == {"return", "adjusted_forget_rate", "forget_rate", "retain_accuracy"}
    assert all(0.0 <= c["ci_low"] <= c["value"] <= c["ci_high"] <= 1.0 for c in poi.values())
    for name in ("static:0.5", "linear:0.9:0.1"):
        row = summary[name]
        assert row["return"]["n"] == 2 and np.isfinite(row["return"]["mean"]) and np.isfinite(row["return"]["ci95"])
    for name in ("bench.md", "bench.csv", "bench.json", "curves.png", "samples.png", "profile.png", "episodes.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    full = json.loads((tmp_path / "bench.json").read_text())
    returns = [e["return"] for e in full["episodes"] if e["policy"] == "static:0.5"]
    assert full["summary"]["static:0.5"]["iqm"]["return"]["value"] == pytest.approx(float(iqm(np.array(returns))))
    assert set(full["summary"]["static:0.5"]["mean_bootstrap"]) == {
        "return",
        "adjusted_forget_rate",
        "forget_rate",
        "retain_accuracy",
    }
    for e in full["episodes"]:  # β = 1: F + D⁺
        assert e["adjusted_forget_rate"] == pytest.approx(e["forget_rate"] + e["damage"]) and e["damage"] >= 0.0
    assert (tmp_path / "episodes.jsonl").read_text().count("\n") == 1 + 4  # the header and each episode
    assert "| linear:0.9:0.1 | " in (tmp_path / "bench.md").read_text().split("IQM (mean of the middle 50%")[1]
    assert full["pretrained"]["samples_per_label"] == 2 and len(full["episodes"]) == 4
    assert (full["settings"]["num_envs"], full["settings"]["executor"]) == (2, "loop")
    assert full["pretrained"]["per_label"]["1"]["n"] == 4 and full["pretrained"]["per_label"]["0"]["n"] == 2
    assert (tmp_path / "bench.csv").read_text().count("\n") == 1 + 4
    assert "| static:0.5 | 2 |" in (tmp_path / "bench.md").read_text()
    assert "- linear:0.9:0.1: return " in (tmp_path / "bench.md").read_text()  # the verdict line
    assert "Spread over the seeds (forget_rate" in (tmp_path / "bench.md").read_text()
    assert "| damage D⁺ ↓ | F + 1·D⁺ ↓ |" in (tmp_path / "bench.md").read_text()
    # --metrics full: Table 1 over each policy's pooled samples, and the pretrained model
    assert set(full["fidelity"]["models"]) == {"pretrained", "static:0.5", "linear:0.9:0.1"}
    assert set(full["fidelity"]["models"]["static:0.5"]["per_class"]) == {str(y) for y in range(10)}  # Appendix B
    assert "Table 1" in (tmp_path / "bench.md").read_text()
    # ... and Table 1 of each episode's own samples: mean ± CI over the seeds, verdicts against static
    rows = full["fidelity_episodes"]
    assert [(r["policy"], r["seed"]) for r in rows] == [(e["policy"], e["seed"]) for e in full["episodes"]]
    for name in ("static:0.5", "linear:0.9:0.1"):
        mine = [r for r in rows if r["policy"] == name]
        for metric in ("forget_fid", "retain_fid", "retain_ssim"):
            cell = summary[name]["fidelity"][metric]
            assert cell["n"] == 2 and cell["mean"] == pytest.approx(np.mean([r[metric] for r in mine]))
    assert set(summary["linear:0.9:0.1"]["fidelity_vs_reference"]) == set(FIDELITY_METRICS)
    ref = {r["seed"]: r for r in rows if r["policy"] == "static:0.5"}
    diff = np.mean([r["retain_fid"] - ref[r["seed"]]["retain_fid"] for r in rows if r["policy"] != "static:0.5"])
    assert full["summary"]["linear:0.9:0.1"]["fidelity_vs_reference"]["retain_fid"]["diff"] == pytest.approx(diff)
    assert "### Table 1 per episode" in (tmp_path / "bench.md").read_text()


def test_bench_with_robustness_adds_its_columns(tiny_checkpoint, tmp_path):
    import torch

    from unlearn_gym.bench import json_summary, to_markdown, write_report
    from unlearn_gym.metrics.membership import MembershipConfig
    from unlearn_gym.metrics.relearn import RelearnConfig
    from unlearn_gym.metrics.robustness import RobustnessConfig

    torch.set_num_threads(1)
    rcfg = RobustnessConfig(
        membership=MembershipConfig(num_samples=3, timesteps=(100,), noises_per_timestep=1, bootstrap=10),
        relearn=RelearnConfig(steps=2, eval_every=1, batch_size=2, forget_per_batch=1, samples=2, ddim_steps=1),
    )
    # the pretrained checkpoint stands in for the retrained model: its attack figures must be the pretrained model's
    config = _config(tiny_checkpoint, robustness=True, robustness_config=rcfg, retrained=str(tiny_checkpoint))
    config = dataclasses.replace(config, samples_per_label=1, ddim_steps=1)
    result = run_benchmark({"static:0.5": policy_from_spec("static:0.5")}, config, progress=False, log=None)
    keys = {"mia_forget_auc", "mia_forget_tpr", "mia_retain_auc", "mia_retain_tpr", "relearn_retain_forget_rate",
            "relearn_retain_steps_to_half", "relearn_mixed_forget_rate", "relearn_mixed_steps_to_half"}  # fmt: skip
    for e in result["episodes"]:
        assert keys <= set(e) and e["robustness"]["relearn"]["curves"]["mixed"]["steps"] == [0, 1, 2]
        # the level that "steps to half" refers to is the pretrained model's, measured once
        assert e["robustness"]["relearn"]["pretrained_forget_rate"] == result["pretrained_robustness"]["relearn_level"]
    row = result["summary"]["static:0.5"]["robustness"]
    assert set(row) == keys
    mean, half = confidence_interval([e["mia_forget_auc"] for e in result["episodes"]])
    assert row["mia_forget_auc"] == {"mean": mean, "ci95": half, "n": 2}
    assert set(result["pretrained_robustness"]) == {"mia_forget_auc", "mia_forget_tpr", "mia_retain_auc",
                                                    "mia_retain_tpr", "relearn_level"}  # fmt: skip
    # the retrained model is attacked once, as an unlearned model is, against the pretrained level
    retrained = result["retrained_robustness"]
    assert set(retrained) == keys
    for metric in ("mia_forget_auc", "mia_forget_tpr", "mia_retain_auc", "mia_retain_tpr"):
        assert retrained[metric] == result["pretrained_robustness"][metric]
    assert keys <= set(json_summary(result)["static:0.5"])
    markdown = to_markdown(result)
    assert "## Robustness: membership inference and relearning" in markdown
    assert "| retrained without the forget set (learning, not relearning) |" in markdown
    paths = write_report(result, tmp_path)
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert keys <= set(header) and "seconds_robustness" in header
    assert json.loads(paths["json"].read_text())["settings"]["robustness_config"]["relearn"]["steps"] == 2


def test_workers_give_the_episodes_of_one_process(tiny_checkpoint):
    """Two spawned worker processes run the same episodes as one process (floats up to the thread count's
    summation order), in the same order, with the same grids."""
    import dataclasses

    import torch

    torch.set_num_threads(1)  # the workers' thread count: then the floats agree closely
    config = dataclasses.replace(_config(tiny_checkpoint), seeds=(0, 1, 2))
    one = run_benchmark(_policies(), config, progress=False, log=None)
    two = run_benchmark(_policies(), dataclasses.replace(config, workers=2), progress=False, log=None)
    assert [(e["policy"], e["seed"]) for e in two["episodes"]] == [(e["policy"], e["seed"]) for e in one["episodes"]]
    for a, b in zip(one["episodes"], two["episodes"]):
        assert a["lambdas"] == pytest.approx(b["lambdas"], abs=1e-5)
        assert a["return"] == pytest.approx(b["return"], abs=1e-5)
        assert a["forget_rate"] == b["forget_rate"] and a["per_label_accuracy"] == b["per_label_accuracy"]
    assert set(two["_grids"]) == set(one["_grids"])
    assert torch.allclose(two["_grids"]["random"], one["_grids"]["random"], atol=1e-4)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        dataclasses.replace(config, workers=0)


# -- resumable runs -------------------------------------------------------------------------------

_SLOW_MAIN = (
    "import sys, time\n"
    "from unlearn_gym.baselines.policies import StaticLambda\n"
    "lam = StaticLambda.lam\n"
    "StaticLambda.lam = lambda self, obs, deterministic=True: (time.sleep(0.1), lam(self, obs, deterministic))[1]\n"
    "from unlearn_gym.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
"""`unlearn-gym` with static λ slowed down (0.1 s a step; the numbers unchanged), so that a kill lands mid-run."""


def _kill_when(proc, ready, timeout=300.0):
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it ends first or ``timeout`` passes."""
    import signal
    import time

    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before it could be killed"
        assert time.monotonic() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _subprocess_env():
    import os
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}


def _episode_lines(path):
    return path.read_bytes().count(b"\n") - 1 if path.is_file() else 0  # less the header


def test_bench_killed_mid_run_resumes_to_the_uninterrupted_report(tiny_checkpoint, tmp_path, capsys):
    import subprocess
    import sys

    from unlearn_gym.cli import main

    argv = ["bench", "--policies", "static:0.5,random,vi-adaptive", "--checkpoint", str(tiny_checkpoint)]
    argv += [
        "--env-kwargs",
        '{"probe_size": 1, "sample_forget": 4, "sample_retain": 1, "sample_ddim_steps": 2}',
        "--batch-size",
        "2",
        "--horizon",
        "3",
        "--seeds",
        "3",
    ]
    argv += ["--samples", "2", "--contaminated-samples", "3", "--ddim-steps", "2", "--device", "cpu"]
    argv += ["--threads", "1", "--workers", "1", "--no-progress", "--json", "--bootstrap-reps", "200"]  # one process
    killed = tmp_path / "killed"
    log = killed / "episodes.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_MAIN, *argv, "--out", str(killed)],
        env=_subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _kill_when(proc, lambda: _episode_lines(log) >= 1)
    logged = _episode_lines(log)
    assert 1 <= logged < 9 and not (killed / "bench.json").exists()  # killed mid-run
    with open(log, "ab") as f:  # as if killed while writing the next line
        f.write(b'{"policy": "static:0.5", "seed": 2, "instance": nu')

    assert main([*argv, "--resume", str(killed)]) == 0
    err = capsys.readouterr().err
    assert f"resume: {logged} of 9 episodes already in {log}" in err and "dropping the half-written last line" in err
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0  # the uninterrupted run
    capsys.readouterr()

    def episodes(folder):
        data = json.loads((folder / "bench.json").read_text())
        return [{k: v for k, v in e.items() if not k.startswith("seconds")} for e in data["episodes"]], data

    (resumed, a), (whole, b) = episodes(killed), episodes(tmp_path / "whole")
    assert len(resumed) == 9 and resumed == whole
    assert a["summary"] == b["summary"] and a["pretrained"]["per_label"] == b["pretrained"]["per_label"]
    assert a["episode_log"]["resumed_episodes"] == logged and b["episode_log"]["resumed_episodes"] == 0
    # the log now holds every episode once; the report's grids came from the logged samples
    assert _episode_lines(log) == 9 and (killed / "samples.png").stat().st_size > 0
    assert (killed / "bench.md").read_text().split("```")[2] == (tmp_path / "whole" / "bench.md").read_text().split(
        "```"
    )[2]


def test_resume_refuses_other_settings_and_corrupt_logs(tiny_checkpoint, tmp_path):
    import torch

    from unlearn_gym.bench import read_episode_log
    from unlearn_gym.cli import main

    torch.set_num_threads(1)

    config = dataclasses.replace(_config(tiny_checkpoint), samples_per_label=0, seeds=(0,))
    policies = {"static:0.5": policy_from_spec("static:0.5")}
    log = tmp_path / "episodes.jsonl"
    first = run_benchmark(policies, config, progress=False, log=None, log_path=log)
    header, records, valid = read_episode_log(log)
    assert header["settings"]["seeds"] == [0] and header["episodes"] == 1 and valid == log.stat().st_size
    assert [r for _, r in records] == first["episodes"]
    # another horizon, other seeds: refused, naming the settings
    other = dataclasses.replace(config, seeds=(0, 1), env_kwargs={**config.env_kwargs, "horizon": 4})
    with pytest.raises(ValueError, match=r"other settings \(env_kwargs.horizon: 3 in the log, 4 now; seeds: \[0\] in"):
        run_benchmark(policies, other, progress=False, log=None, log_path=log, resume=True)
    with pytest.raises(ValueError, match=r"policies: \[\"static:0.5\"\] in the log, \[\"random\"\] now"):
        run_benchmark({"random": policy_from_spec("random")}, config, log=None, log_path=log, resume=True)
    # the reference and the bootstrap settings shape only the report: they may change
    again = dataclasses.replace(config, reference=None, bootstrap_reps=10)
    assert run_benchmark(policies, again, progress=False, log=None, log_path=log, resume=True)["episodes"] == [
        r for _, r in records
    ]
    # a corrupt line before the last is an error naming it; the last one is dropped as half-written
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"episodes.jsonl, line 2: corrupt episode log"):
        read_episode_log(log)
    messages = []
    log.write_text("\n".join([lines[0], lines[1], "{not json"]) + "\n")
    assert len(read_episode_log(log, messages.append)[1]) == 1
    assert messages == [f"resume: dropping the half-written last line 3 of {log}"]
    log.write_text(lines[1] + "\n")
    with pytest.raises(ValueError, match="line 1: not an unlearn-gym bench episode log"):
        read_episode_log(log)
    log.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"line 3: episode \('static:0.5', 0, None\) is logged twice"):
        run_benchmark(policies, config, log=None, log_path=log, resume=True)
    with pytest.raises(FileNotFoundError, match="no episode log"):
        run_benchmark(policies, config, log=None, log_path=tmp_path / "none.jsonl", resume=True)
    with pytest.raises(SystemExit, match="continues the run in that folder; drop --out"):
        main(["bench", "--resume", str(tmp_path), "--out", str(tmp_path / "other")])


# -- batched episodes (num_envs) ------------------------------------------------------------------


def _strip_seconds(record):
    return {k: v for k, v in record.items() if not k.startswith("seconds")}


def test_batched_episodes_equal_the_single_env_episodes(tiny_checkpoint, one_thread):
    """With num_envs 2 (loop executor) the runner runs a policy's seeds as the runs of one vector env, each
    with its own copy of the (stateful) policy: the same records (returns, λ, rewards, evaluation) and
    evaluation samples as the single env's episodes; 3 seeds make a full batch of 2 and a short batch of 1
    (padded), as ``run_benchmark`` cuts them; runs that diverge at different steps end early, evaluated
    before the autoreset restores their weights."""
    import dataclasses

    import torch

    from unlearn_gym.bench.runner import _batches

    policies = {name: policy_from_spec(name) for name in ("random", "vi-adaptive")}
    config = dataclasses.replace(_config(tiny_checkpoint), seeds=(0, 1, 2), executor="loop", num_envs=2)
    runs = [(n, s, None) for n in policies for s in config.seeds]
    assert _batches(runs, range(6), 2) == [[0, 1], [2], [3, 4], [5]]
    assert _batches(runs, [1, 2, 3, 5], 4) == [[1, 2], [3, 5]]
    runner = EpisodeRunner(policies, config)
    assert runner.num_envs == 2
    for batch in _batches(runs, range(3, 6), 2):  # vi-adaptive: a stateful policy, one copy per run
        units = [runs[k] for k in batch]
        batched = runner.run_units(units)
        for unit, (record, ev, steps) in zip(units, batched):
            want, want_ev, _ = runner.episode(*unit)
            assert _strip_seconds(record) == _strip_seconds(want) and steps is None
            assert torch.equal(ev.images, want_ev.images) and torch.equal(ev.labels, want_ev.labels)
            assert record["length"] == 3 and "forget_rate" in record
    with pytest.raises(ValueError, match="episodes: expected the units of one policy"):
        runner.episodes([runs[0], runs[3]])
    with pytest.raises(ValueError, match="episodes: expected 1 to 2 units, got 3"):
        runner.episodes(runs[:3])
    runner.close()
    # at lr 3 the tiny model diverges: seed 1 at step 2, seed 2 at step 3 (the sampled reward reads no
    # denoising probe before the last step, so the next update's losses show it); run 0 ends first and
    # steps on (reset) while run 1 finishes, and each diverged model is evaluated before the vector env restores it
    diverging = dataclasses.replace(config, env_kwargs={**config.env_kwargs, "lr": 3.0, "horizon": 4})
    runner = EpisodeRunner({"static:0.5": policy_from_spec("static:0.5")}, diverging)
    units = [("static:0.5", 1, None), ("static:0.5", 2, None)]
    batched = runner.episodes(units)
    assert [r["length"] for r, _, _ in batched] == [2, 3] and all(r["diverged"] for r, _, _ in batched)
    for unit, (record, ev, _) in zip(units, batched):
        want, want_ev, _ = runner.episode(*unit)
        assert json.dumps(_strip_seconds(record)) == json.dumps(_strip_seconds(want))  # NaN efficacy alike
        torch.testing.assert_close(ev.images, want_ev.images, rtol=0, atol=0, equal_nan=True)
    runner.close()
    with pytest.raises(ValueError, match="num_envs must be an int >= 1, got 0"):
        dataclasses.replace(config, num_envs=0)
    with pytest.raises(ValueError, match="executor must be 'auto', 'vmap', 'loop' or 'graph', got 'gpu'"):
        dataclasses.replace(config, executor="gpu")


def test_the_retrained_reference_row_and_the_distance_column(tiny_checkpoint, one_thread):
    """With the pretrained model itself as the "retrained" reference, its row equals the pretrained
    row and the pretrained model's retain FID/KID to it is 0 (the same weights, the same noises)."""
    config = dataclasses.replace(_config(tiny_checkpoint, retrained=str(tiny_checkpoint)), seeds=(0, 1, 2))
    result = run_benchmark({"static:0.5": policy_from_spec("static:0.5")}, config, progress=False, log=None)
    pre, ret = result["pretrained"], result["retrained"]
    assert ret["forget_rate"] == pre["forget_rate"] and ret["per_label"] == pre["per_label"]
    assert pre["retain_fid_retrained"] == pytest.approx(0.0, abs=1e-6)
    # (KID's unbiased estimate of two equal sets is not 0: its cross term keeps the diagonal)
    assert np.isfinite(ret["retain_kid_retrained"])
    for e in result["episodes"]:
        assert e["retain_fid_retrained"] > 0.0 and np.isfinite(e["retain_kid_retrained"])
    row = result["summary"]["static:0.5"]["retain_fid_retrained"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(
        np.mean([e["retain_fid_retrained"] for e in result["episodes"]])
    )
    from unlearn_gym.bench import to_markdown

    text = to_markdown(result)
    assert "| retrained without the forget set | – | – |" in text and "retain FID to retrained ↓" in text
    with pytest.raises(FileNotFoundError, match="retrained: /nowhere is not a model directory"):
        run_benchmark(
            {"static:0.5": policy_from_spec("static:0.5")},
            _config(tiny_checkpoint, retrained="/nowhere"),
            progress=False,
            log=None,
        )
    # "bundled" names the bundled model's reference only: none for another checkpoint
    assert (
        run_benchmark(
            {"static:0.5": policy_from_spec("static:0.5")}, _config(tiny_checkpoint), progress=False, log=None
        )["retrained"]
        is None
    )
