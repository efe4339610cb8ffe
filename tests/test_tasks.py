"""The declared task set: its tasks, building their models, and ``bench --task``."""

import dataclasses
import json

import pytest

from unlearn_gym.splits import SPLITS
from unlearn_gym.tasks import TASKS, ModelRecipe, build_task_model, get_task, is_built, task_model_dir


def test_the_task_set_differs_from_the_main_job_in_one_thing_each():
    assert list(TASKS) == ["trousers", "trousers-T25", "trousers-k16", "trousers-k64", "trousers-c50", "mislabelled-7s"]
    main = TASKS["trousers"]
    assert dict(main.env_kwargs) == {} and main.model is None and main.seeds == 8  # the main job itself
    assert dict(TASKS["trousers-T25"].env_kwargs) == {"horizon": 25}
    for k in (16, 64):
        task = TASKS[f"trousers-k{k}"]
        assert dict(task.env_kwargs) == {"forget_subset": k} and task.instances == 4 and task.model is None
    c50 = TASKS["trousers-c50"]
    assert c50.model == ModelRecipe("default", contamination=0.5) and c50.retrained == "bundled"
    m7 = TASKS["mislabelled-7s"]
    assert m7.model.own_classifier and m7.retrained == "none"
    assert c50.model.key == "default-c0.5-tiny-4000-s0" and m7.model.key == "mislabelled-7s-c0.3-tiny-4000-s0"
    assert m7.model.commands("M") == [
        "unlearn-gym pretrain --scenario mislabelled-7s --contamination 0.3 --preset tiny --steps 4000 --seed 0 "
        "--threads 1 --out M",
        "unlearn-gym train-classifier --scenario mislabelled-7s --contamination 0.3 --epochs 12 --seed 0 "
        "--threads 1 --out M/classifier",
    ]
    with pytest.raises(ValueError, match="unknown task 'trousers-k8'; the task set: trousers, trousers-T25"):
        get_task("trousers-k8")
    with pytest.raises(ValueError, match="forget_subset and instances go together"):
        dataclasses.replace(TASKS["trousers-k16"], instances=0)


def test_a_task_model_is_built_by_its_recipe_and_found_only_when_complete(tmp_path, monkeypatch):
    import torch

    from unlearn_gym.metrics.classifier import load_classifier
    from unlearn_gym.models import load_model

    monkeypatch.setenv("UNLEARN_GYM_CACHE", str(tmp_path))
    task = TASKS["mislabelled-7s"]
    assert task_model_dir(task) == tmp_path / "models" / "mislabelled-7s-c0.3-tiny-4000-s0" and not is_built(task)
    recipe = dataclasses.replace(task.model, steps=3, classifier_epochs=1)
    path = build_task_model(task, recipe=recipe, progress=False)
    assert path == tmp_path / "models" / "mislabelled-7s-c0.3-tiny-3-s0-e1"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [path.name]  # no .partial left behind
    small = dataclasses.replace(task, model=recipe)
    assert is_built(small) and not is_built(task)
    config = json.loads((path / "config.json").read_text())
    assert config["step"] == 3 and config["scenario"]["name"] == "mislabelled-7s"
    assert config["scenario"]["args"]["contamination"] == 0.3
    classifier = load_classifier(path / "classifier")
    assert classifier.num_classes == 10  # the 7s are a digit: no extra class
    weights = {k: v.clone() for k, v in load_model(path)[0].state_dict().items()}
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build_task_model(task, recipe=recipe, progress=False) == path  # built: returned as it is
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    # the same recipe again from scratch is the same model (pretraining is seeded)
    again = build_task_model(task, recipe=recipe, cache_dir=tmp_path / "again", progress=False)
    for k, v in load_model(again)[0].state_dict().items():
        assert torch.equal(v, weights[k]), k
    # the env runs on it: the scenario from its config.json, the sampled reward judged by its own classifier
    import gymnasium as gym
    import numpy as np

    env = gym.make(
        "unlearn_gym/SISS-v0", checkpoint=str(path), device="cpu", batch_size=2, horizon=1, sample_forget=4,
        sample_retain=1, sample_ddim_steps=2, probe_size=1,
    )  # fmt: skip
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert truncated and not terminated and np.isfinite(reward)
    assert env.unwrapped.scenario.contaminant_class == 7 and len(env.unwrapped.scenario.forget) == 193
    env.close()
    # a folder without its classifier is not a built model
    (again / "classifier" / "classifier.safetensors").unlink()
    assert not is_built(small, tmp_path / "again")


def _bench_args(*argv):
    from unlearn_gym.cli.parser import build_parser

    return build_parser().parse_args(["bench", *argv])


def test_bench_task_sets_the_model_settings_seeds_instances_and_reference(tmp_path, monkeypatch):
    from unlearn_gym.assets import bundled_retrained_dir
    from unlearn_gym.cli.benchmark import _bench_config, _bench_env_kwargs, _bench_tasks

    monkeypatch.setenv("UNLEARN_GYM_CACHE", str(tmp_path))

    def resolved(*argv):
        args = _bench_args(*argv)
        (task,) = _bench_tasks(args)
        env_kwargs = _bench_env_kwargs(args, task)
        return env_kwargs, _bench_config(args, env_kwargs, task)

    env_kwargs, config = resolved("--task", "trousers-k16", "--split", "test", "--device", "cpu")
    assert env_kwargs == {"batch_size": 16, "horizon": 100, "lr": 1.5e-4, "forget_subset": 16, "device": "cpu"}
    assert config.seeds == SPLITS["test"].first_seeds(2) and config.instances == (2000, 2001, 2002, 2003)
    assert config.retrained == "bundled"  # the bundled model: the bundled reference
    env_kwargs, config = resolved("--task", "trousers-k16", "--instances", "1", "--seeds", "3", "--horizon", "25")
    assert env_kwargs["horizon"] == 25 and config.seeds == (0, 1, 2) and config.instances == (0,)  # options win
    # a model to build: refused with the command that builds it, until it is there
    with pytest.raises(FileNotFoundError, match=r"run `unlearn-gym tasks build trousers-c50`"):
        resolved("--task", "trousers-c50")
    built = task_model_dir(TASKS["trousers-c50"])
    built.mkdir(parents=True)
    (built / "config.json").write_text("{}")
    (built / "model.safetensors").write_bytes(b"")
    env_kwargs, config = resolved("--task", "trousers-c50", "--device", "cpu")
    assert env_kwargs["checkpoint"] == str(built) and config.seeds == tuple(range(8)) and config.instances == (None,)
    assert config.retrained == str(bundled_retrained_dir())  # the same retain set as the bundled model
    assert resolved("--task", "trousers-c50", "--retrained", "none")[1].retrained is None
    with pytest.raises(ValueError, match="--task trousers brings its own model; drop --checkpoint"):
        resolved("--task", "trousers", "--checkpoint", str(built))


def test_the_tasks_command_lists_the_set_and_what_is_built(tmp_path, monkeypatch, capsys):
    from unlearn_gym.cli import main

    monkeypatch.setenv("UNLEARN_GYM_CACHE", str(tmp_path))
    assert main(["tasks", "--json"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(TASKS)
    assert rows["trousers"]["model"] == "bundled" and rows["trousers"]["build"] == []
    assert rows["mislabelled-7s"]["built"] is False
    assert rows["mislabelled-7s"]["model"] == str(tmp_path / "models" / "mislabelled-7s-c0.3-tiny-4000-s0")
    assert main(["tasks"]) == 0
    assert "build: unlearn-gym tasks build trousers-c50" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown task 'nope'"):
        main(["tasks", "build", "nope"])
    with pytest.raises(SystemExit, match="tasks build needs task names"):
        main(["tasks", "build"])


def test_bench_over_several_tasks_writes_each_report_and_the_task_set_table(tmp_path, capsys):
    from unlearn_gym.cli import main

    argv = ["bench", "--task", "trousers-T25,trousers-k16", "--policies", "static:0.5,static:0.9", "--seeds", "1"]
    argv += ["--env-kwargs", '{"probe_size": 1, "sample_forget": 4, "sample_retain": 1, "sample_ddim_steps": 2}']
    argv += ["--batch-size", "2", "--horizon", "2", "--samples", "1", "--contaminated-samples", "4"]
    argv += ["--ddim-steps", "2", "--device", "cpu", "--retrained", "none", "--bootstrap-reps", "50"]
    argv += ["--threads", "1", "--workers", "1", "--no-progress", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary) == ["trousers-T25", "trousers-k16"]
    assert summary["trousers-T25"]["static:0.9"]["forget_rate"]["n"] == 1
    assert summary["trousers-k16"]["static:0.9"]["forget_rate"]["n"] == 4  # 1 seed x the task's 4 instances
    k16 = json.loads((tmp_path / "trousers-k16" / "bench.json").read_text())
    assert k16["settings"]["env_kwargs"]["forget_subset"] == 16 and k16["task"] == "trousers-k16"
    assert {e["instance"] for e in k16["episodes"]} == {0, 1, 2, 3}
    table = (tmp_path / "tasks.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| trousers")]
    assert [r.split(" | ")[1] for r in rows] == ["pretrained", "static:0.5", "static:0.9"] * 2
    assert rows[1].endswith("| (reference) | (reference) |")
    diff = k16["summary"]["static:0.9"]["vs_reference"]["forget_rate"]["diff"]
    assert f"| {diff:+.3f} ± " in rows[5]
    # resumed: every episode is in the logs, so nothing runs again and the table is the same
    assert main(argv[: argv.index("--out")] + ["--resume", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "resume: 2 of 2 episodes already in" in err and "resume: 8 of 8 episodes already in" in err
    assert [line for line in (tmp_path / "tasks.md").read_text().splitlines() if line.startswith("| trousers")] == rows
