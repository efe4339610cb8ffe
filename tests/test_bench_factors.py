"""Training seeds as a factor (unlearn_gym.bench.factors), on a case computed by hand."""

import pytest

from unlearn_gym.bench.factors import training_seed_factor, training_seed_groups


class _Agent:
    def __init__(self, **info):
        self.info = {"algo": "ppo", "env_id": "unlearn_gym/SISS-v0", "timesteps": 20480, **info}


def test_agents_of_one_recipe_with_distinct_seeds_form_a_group():
    policies = {
        "agent:s1": _Agent(seed=1),
        "ppo": _Agent(seed=0),
        "static:0.5": object(),  # no info: not an agent
        "agent:short": _Agent(seed=2, timesteps=2048),  # another recipe, alone
        "agent:s2": _Agent(seed=2),
    }
    assert training_seed_groups(policies) == {"ppo (training seeds 0, 1, 2)": ["ppo", "agent:s1", "agent:s2"]}
    assert training_seed_groups({"a": _Agent(seed=0), "b": _Agent(seed=0)}) == {}  # the same seed twice: no factor
    assert training_seed_groups({"a": _Agent(seed=0)}) == {}


def test_training_seed_factor_by_hand():
    rates = {"A": (0.1, 0.2, 0.3), "B": (0.3, 0.4, 0.5), "R": (0.1, 0.3, 0.3)}
    episodes = [
        {"policy": p, "seed": s, "instance": None, "forget_rate": v}
        for p, vs in rates.items()
        for s, v in enumerate(vs)
    ]
    out = training_seed_factor(episodes, {"g": ["A", "B"]}, "R")
    assert list(out["g"]) == ["forget_rate"]  # the metrics the episodes have
    c = out["g"]["forget_rate"]
    assert c["per_agent"] == pytest.approx({"A": 0.2, "B": 0.4}) and c["k"] == 2
    assert c["mean"] == pytest.approx(0.3)
    assert c["ci95"] == pytest.approx(12.7062047 * 0.1)  # t_{0.975, 1} · s/√k, s = sd(0.2, 0.4) = 0.1414
    # ANOVA: SSB = 3·0.01·2 = 0.06 (1 df), SSW = 0.02 + 0.02 = 0.04 (4 df): F = 0.06 / 0.01 = 6
    assert c["f"] == pytest.approx(6.0) and c["p"] == pytest.approx(0.0704840, rel=1e-5)
    assert c["sd_between"] == pytest.approx(0.2**0.5 / 10**0.5) and c["sd_within"] == pytest.approx(0.1)
    # the agents averaged per episode: (0.2, 0.3, 0.4) − (0.1, 0.3, 0.3) = (0.1, 0, 0.1)
    vs = c["vs_reference"]
    assert vs["diff"] == pytest.approx(0.2 / 3) and vs["n"] == 3
    assert vs["ci95"] == pytest.approx(4.30265273 * 0.0577350269 / 3**0.5)
    assert vs["verdict"] == "indistinguishable"
    assert "vs_reference" not in training_seed_factor(episodes, {"g": ["A", "B"]}, None)["g"]["forget_rate"]


def test_the_bench_reports_agents_of_one_recipe_by_training_seed(tiny_checkpoint, tmp_path):
    import copy
    import dataclasses

    from test_bench import _config

    from unlearn_gym.agents import load_agent
    from unlearn_gym.assets import bundled_agent_dir
    from unlearn_gym.bench import json_summary, policy_from_spec, run_benchmark, write_report

    first = load_agent(bundled_agent_dir())
    second = copy.copy(first)
    second.info = {**first.info, "seed": 7}  # the same recipe and weights, another training seed
    policies = {"ppo": first, "agent:s7": second, "static:0.5": policy_from_spec("static:0.5")}
    result = run_benchmark(policies, dataclasses.replace(_config(tiny_checkpoint), seeds=(0, 1, 2)), progress=False)
    factor = result["training_seeds"]["ppo (training seeds 0, 7)"]
    rates = {n: [e["forget_rate"] for e in result["episodes"] if e["policy"] == n] for n in policies}
    assert rates["ppo"] == rates["agent:s7"]  # deterministic actions of equal weights on equal seeds
    cell = factor["forget_rate"]
    assert cell["per_agent"] == pytest.approx({"ppo": sum(rates["ppo"]) / 3, "agent:s7": sum(rates["ppo"]) / 3})
    assert cell["sd_between"] == 0.0 and cell["vs_reference"]["n"] == 3
    diffs = [a - b for a, b in zip(rates["ppo"], rates["static:0.5"])]
    assert cell["vs_reference"]["diff"] == pytest.approx(sum(diffs) / 3)
    assert "ppo (training seeds 0, 7)" in json_summary(result)["training_seeds"]
    markdown = write_report(result, tmp_path)["markdown"].read_text()
    assert "Training seeds as a factor" in markdown and "| ppo (training seeds 0, 7) | forget_rate |" in markdown
