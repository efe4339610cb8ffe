import json
import math
import runpy
from pathlib import Path

from conftest import SMALL_SAMPLED_PROBE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_static_lambda_example_runs(tiny_checkpoint, capsys, monkeypatch):
    module = runpy.run_path(str(EXAMPLES / "static_lambda.py"))
    ret = module["main"](["--steps", "2", "--checkpoint", str(tiny_checkpoint), "--batch-size", "4"])
    out = capsys.readouterr().out
    assert out.count("step ") == 2 and "return" in out and "forget rate" in out
    assert math.isfinite(ret)


def test_train_ppo_example_writes_a_model_and_tensorboard_logs(tiny_checkpoint, tmp_path, capsys):
    module = runpy.run_path(str(EXAMPLES / "train_ppo.py"))
    out = module["main"](
        ["--timesteps", "32", "--n-steps", "16", "--batch-size", "2", "--horizon", "4"]
        + [
            "--checkpoint",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path),
            "--env-kwargs",
            json.dumps(SMALL_SAMPLED_PROBE),
        ]
    )
    assert (out / "model.zip").is_file() and (out / "vecnormalize.pkl").is_file()
    assert list((out / "tb").rglob("events.out.tfevents.*"))


def test_custom_policy_example_benchmarks_against_the_baselines(tiny_checkpoint, capsys):
    module = runpy.run_path(str(EXAMPLES / "custom_policy.py"))
    result = module["main"](
        ["--seeds", "2", "--checkpoint", str(tiny_checkpoint), "--batch-size", "2", "--horizon", "2"]
        + ["--samples", "1", "--contaminated-samples", "2", "--ddim-steps", "1"]
        + ["--env-kwargs", json.dumps(SMALL_SAMPLED_PROBE)]
    )
    assert list(result["summary"]) == ["forget-loss-feedback", "static:0.5", "random", "vi-adaptive"]
    lams = [e["lambdas"][0] for e in result["episodes"] if e["policy"] == "forget-loss-feedback"]
    assert len(lams) == 2 and all(abs(x - 0.8) < 1e-6 for x in lams)  # ℓ_f at its reset value: λ_high
    assert "| forget-loss-feedback | 2 |" in capsys.readouterr().out


def test_evaluate_agent_example(tiny_checkpoint, tmp_path, capsys):
    from unlearn_gym.agents import train_agent

    env_kwargs = dict(
        checkpoint=str(tiny_checkpoint), batch_size=2, probe_size=1, horizon=2, device="cpu", **SMALL_SAMPLED_PROBE
    )
    train_agent("mcpg", total_timesteps=4, out=tmp_path, env_kwargs=env_kwargs, progress_bar=False, sample_every=0)
    module = runpy.run_path(str(EXAMPLES / "evaluate_agent.py"))
    result = module["main"](
        [
            "--agent",
            str(tmp_path),
            "--episodes",
            "2",
            "--samples",
            "1",
            "--contaminated-samples",
            "2",
            "--ddim-steps",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "evaluate_policy: return" in out and "forget_rate" in out
    assert result["summary"]["mcpg"]["return"]["n"] == 2
