"""The forget curve's scores (hand-computed cases) and the runner's curve points (single env and vector env)."""

import dataclasses
import json

import pytest
from test_bench import _config, _strip_seconds

from unlearn_gym.bench import EpisodeRunner, policy_from_spec, run_benchmark, to_markdown, write_report
from unlearn_gym.bench.curve import check_curve_steps, curve_scores


def test_curve_scores_match_hand_computed_cases():
    # F⁰ = 0.4, points (10, 0.3), (25, 0.15), (50, 0.05), (100, 0): trapezoids 10·0.35 + 15·0.225 + 25·0.1
    # + 50·0.025 = 3.5 + 3.375 + 2.5 + 1.25 = 10.625, over T = 100
    s = curve_scores([(10, 0.3), (25, 0.15), (50, 0.05), (100, 0.0)], 0.4, 100)
    assert s["forget_auc"] == pytest.approx(0.10625, abs=1e-15)
    assert (s["steps_to_half"], s["reached_half"]) == (25.0, True)  # first F ≤ 0.2
    assert (s["steps_to_tenth"], s["reached_tenth"]) == (100.0, True)  # first F ≤ 0.04: the end point
    # ended at t = 20 (diverged) with F = 0.5: held to T; 10·0.35 + 10·0.4 + 80·0.5 = 47.5; never half: T
    s = curve_scores([(10, 0.3), (20, 0.5)], 0.4, 100)
    assert s["forget_auc"] == pytest.approx(0.475, abs=1e-15)
    assert (s["steps_to_half"], s["reached_half"], s["steps_to_tenth"], s["reached_tenth"]) == (
        100.0,
        False,
        100.0,
        False,
    )
    # nothing to forget: 0 steps
    s = curve_scores([(5, 0.0)], 0.0, 5)
    assert s == {
        "forget_auc": 0.0,
        "steps_to_half": 0.0,
        "reached_half": True,
        "steps_to_tenth": 0.0,
        "reached_tenth": True,
    }
    with pytest.raises(ValueError, match="expected increasing steps in 1..5"):
        curve_scores([(3, 0.1), (2, 0.1)], 0.2, 5)
    with pytest.raises(ValueError, match="needs at least its end point"):
        curve_scores([], 0.2, 5)
    assert check_curve_steps([50, 10, 25, 10], 100) == (10, 25, 50)
    with pytest.raises(ValueError, match=r"every step must lie in 1..99 .* got \[100\]"):
        check_curve_steps([10, 100], 100)


def test_the_forget_curve_of_the_single_and_the_vector_env(tiny_checkpoint, one_thread, tmp_path):
    """Curve points after steps 1 and 2 and at the end, on the contaminated label's samples; the vector
    env's records equal the single env's (diverged runs included: no point after the end); the bench
    scores them and prints the curve table."""
    config = dataclasses.replace(
        _config(tiny_checkpoint),
        seeds=(1, 2),
        curve_steps=(1, 2),
        executor="loop",
        num_envs=2,
        contaminated_label_samples=8,
    )
    runner = EpisodeRunner({"static:0.5": policy_from_spec("static:0.5")}, config)
    record, _, _ = runner.episode("static:0.5", 1, None)
    assert [t for t, _ in record["forget_curve"]] == [1, 2, 3]
    # the end point: the model the single env keeps, on the same noises
    assert record["forget_curve"][-1][1] == runner.curve_forget_rate(runner.base.unlearned_model())
    assert all(f in {k / 8 for k in range(9)} for _, f in record["forget_curve"])  # resolution 1/8
    batched = runner.episodes([("static:0.5", 1, None), ("static:0.5", 2, None)])
    assert _strip_seconds(batched[0].record) == _strip_seconds(record)
    assert _strip_seconds(batched[1].record) == _strip_seconds(runner.episode("static:0.5", 2, None).record)
    runner.close()
    # diverging at lr 3 (seed 1 at step 2, seed 2 at step 3): a run's curve ends where it ended
    diverging = dataclasses.replace(config, env_kwargs={**config.env_kwargs, "lr": 3.0, "horizon": 4})
    runner = EpisodeRunner({"static:0.5": policy_from_spec("static:0.5")}, diverging)
    batched = runner.episodes([("static:0.5", 1, None), ("static:0.5", 2, None)])
    assert [[t for t, _ in r.record["forget_curve"]] for r in batched] == [[1, 2], [1, 2, 3]]
    for unit, out in zip([1, 2], batched):
        want = runner.episode("static:0.5", unit, None).record
        assert json.dumps(_strip_seconds(out.record)) == json.dumps(_strip_seconds(want))  # NaN efficacy alike
    runner.close()
    result = run_benchmark({"static:0.5": policy_from_spec("static:0.5")}, config, progress=False, log=None)
    start = result["pretrained"]["curve_forget_rate"]
    for e in result["episodes"]:
        assert e | curve_scores(e["forget_curve"], start, 3) == e  # scored with F⁰ of the same noises
    summary = result["summary"]["static:0.5"]
    assert set(summary) >= {"forget_auc", "steps_to_half", "steps_to_tenth", "reached_half", "reached_tenth"}
    assert "| policy | F(1) | F(2) | F(3) | AUC ↓ | steps to F⁰/2 ↓ | steps to F⁰/10 ↓ |" in to_markdown(result)
    paths = write_report(result, tmp_path / "report")
    assert paths["forget_curve"].is_file() and paths["forget_curve"].stat().st_size > 1000
    with pytest.raises(ValueError, match="every step must lie in 1..2"):
        EpisodeRunner({}, dataclasses.replace(config, curve_steps=(3,)))
    with pytest.raises(ValueError, match="curve_steps needs the sample evaluation"):
        EpisodeRunner({}, dataclasses.replace(config, samples_per_label=0))
    with pytest.raises(ValueError, match="curve_steps must be ints >= 1"):
        dataclasses.replace(config, curve_steps=(0,))
