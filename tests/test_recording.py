"""bench --record: every episode as a Minari dataset per (env, policy), read back with Minari's own API."""

import dataclasses
import json
import sys

import numpy as np
import pytest
from conftest import SMALL_SAMPLED_PROBE

from unlearn_gym.bench import EPISODE_LOG, BenchConfig, policy_from_spec, run_benchmark
from unlearn_gym.bench.recording import EpisodeSteps, StepRecorder, dataset_id


def _config(tiny_checkpoint, **kw):
    env_kwargs = dict(
        checkpoint=str(tiny_checkpoint), batch_size=2, probe_size=1, horizon=3, device="cpu", **SMALL_SAMPLED_PROBE
    )
    return BenchConfig(env_kwargs=env_kwargs, seeds=(0, 1), samples_per_label=0, bootstrap_reps=50, **kw)


def _policies():
    return {name: policy_from_spec(name) for name in ("static:0.5", "random")}


def test_dataset_ids_follow_minaris_syntax():
    from minari.dataset.minari_dataset import parse_dataset_id

    assert dataset_id("unlearn_gym/SISS-v0", "static:0.5") == "unlearn_gym/SISS-v0/static-0_5-v0"
    assert dataset_id("unlearn_gym/SISS-v0", "ppo (bundled)") == "unlearn_gym/SISS-v0/ppo_bundled-v0"
    assert dataset_id("unlearn_gym:SFD-v0", "linear:0.9:0.1") == "unlearn_gym/SFD-v0/linear-0_9-0_1-v0"
    assert parse_dataset_id(dataset_id("unlearn_gym/SISS-v0", "vi-adaptive")) == (
        "unlearn_gym/SISS-v0",
        "vi-adaptive",
        0,
    )


def test_step_recorder_types_the_step_statistics_and_fills_the_reset_row():
    rec = StepRecorder((1,))
    rec.reset(np.zeros(2, np.float32))
    rec.step(np.array([0.5]), np.ones(2, np.float32), 0.25, False, False, {"lam": 0.7, "step": 1, "diverged": False})
    rec.step([[-1.0]], np.ones(2, np.float32), -0.5, False, True, {"lam": 0.2, "step": 2, "diverged": True, "x": "a"})
    steps = rec.finish(seed=3, instance=None)
    assert steps.observations.shape == (3, 2) and steps.actions.shape == (2, 1) and steps.actions.dtype == np.float32
    assert steps.truncations.tolist() == [False, True] and steps.rewards.tolist() == [0.25, -0.5]
    assert set(steps.infos) == {"lam", "step", "diverged"}  # the non-scalar "x" is not a statistic
    assert np.isnan(steps.infos["lam"][0]) and steps.infos["lam"][1:].tolist() == [0.7, 0.2]
    assert steps.infos["step"].tolist() == [0, 1, 2] and steps.infos["step"].dtype == np.int64
    assert steps.infos["diverged"].tolist() == [False, False, True]
    back = EpisodeSteps.from_arrays(steps.to_arrays(), 3, None)
    assert back.infos.keys() == steps.infos.keys() and np.array_equal(back.actions, steps.actions)
    with pytest.raises(KeyError, match="no recorded steps"):
        EpisodeSteps.from_arrays({"grid": np.zeros(1)}, 0, None)


def test_recorded_datasets_round_trip_through_minari(tiny_checkpoint, tmp_path, monkeypatch):
    import minari
    import torch

    torch.set_num_threads(1)
    config = _config(tiny_checkpoint)
    result = run_benchmark(_policies(), config, progress=False, log=None, record=tmp_path / "rec")
    ids = result["datasets"]["ids"]
    assert ids == {"static:0.5": "unlearn_gym/SISS-v0/static-0_5-v0", "random": "unlearn_gym/SISS-v0/random-v0"}
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "rec"))
    assert sorted(minari.list_local_datasets()) == sorted(ids.values())
    for name, did in ids.items():
        dataset = minari.load_dataset(did)
        runs = [e for e in result["episodes"] if e["policy"] == name]
        assert dataset.total_episodes == 2 and dataset.total_steps == 2 * 3
        assert dataset.storage.metadata["algorithm_name"] == name
        for ep, run in zip(dataset.iterate_episodes(), runs):
            assert ep.observations.shape == (4, 6) and ep.actions.shape == (3, 1)
            assert ep.rewards.tolist() == pytest.approx(run["rewards"], abs=0)
            assert ep.terminations.tolist() == [False] * 3 and ep.truncations.tolist() == [False, False, True]
            assert ep.infos["lam"][1:].tolist() == pytest.approx(run["lambdas"], abs=0)
            assert ep.infos["step"].tolist() == [0, 1, 2, 3] and np.isnan(ep.infos["efficacy"][0])
            assert ep.infos["efficacy"][-1] == pytest.approx(run["efficacy"], abs=0)
            assert {"loss_r", "loss_f", "reward_efficacy_gain", "diverged"} <= set(ep.infos)
    # the env's spec is stored: recover_environment() rebuilds it, and replaying the recorded actions
    # from the recorded seed gives the recorded episode again
    dataset = minari.load_dataset(ids["random"])
    env = dataset.recover_environment()
    assert env.spec.id == "unlearn_gym/SISS-v0" and env.spec.kwargs["checkpoint"] == str(tiny_checkpoint)
    ep = next(dataset.iterate_episodes())
    obs, _ = env.reset(seed=0)
    assert np.allclose(obs, ep.observations[0])
    for t, action in enumerate(ep.actions):
        obs, reward, terminated, truncated, _ = env.step(action)
        assert np.allclose(obs, ep.observations[t + 1], atol=1e-5) and reward == pytest.approx(ep.rewards[t], abs=1e-6)
    assert truncated and not terminated
    env.close()
    # Minari never overwrites a dataset: a second run into the folder is refused before any work
    with pytest.raises(ValueError, match=r"the Minari dataset 'unlearn_gym/SISS-v0/static-0_5-v0' already exists"):
        run_benchmark(_policies(), config, progress=False, log=None, record=tmp_path / "rec")


def test_a_resumed_run_records_the_datasets_of_an_uninterrupted_one(tiny_checkpoint, tmp_path, monkeypatch):
    import minari
    import torch

    torch.set_num_threads(1)
    config = _config(tiny_checkpoint)
    log = tmp_path / "run" / EPISODE_LOG
    whole = run_benchmark(_policies(), config, progress=False, log=None, log_path=log, record=tmp_path / "a")
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n")  # as if killed after two episodes
    resumed = run_benchmark(
        _policies(), config, progress=False, log=None, log_path=log, resume=True, record=tmp_path / "b"
    )
    assert resumed["episode_log"]["resumed_episodes"] == 2
    for did in whole["datasets"]["ids"].values():
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "a"))
        want = list(minari.load_dataset(did).iterate_episodes())
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "b"))
        got = list(minari.load_dataset(did).iterate_episodes())
        assert len(got) == len(want) == 2
        for a, b in zip(got, want):
            assert np.array_equal(a.observations, b.observations) and np.array_equal(a.rewards, b.rewards)
            assert a.infos.keys() == b.infos.keys()
    # a log whose episodes were not recorded cannot give their steps
    plain = tmp_path / "plain" / EPISODE_LOG
    run_benchmark(_policies(), dataclasses.replace(config, seeds=(0,)), progress=False, log=None, log_path=plain)
    with pytest.raises(ValueError, match=r"the logged episode \('static:0.5', 0, None\) has no recorded steps"):
        run_benchmark(
            _policies(),
            dataclasses.replace(config, seeds=(0,)),
            progress=False,
            log=None,
            log_path=plain,
            resume=True,
            record=tmp_path / "c",
        )


def test_bench_record_command_and_without_minari(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from unlearn_gym.cli import main

    argv = ["bench", "--policies", "static:0.5", "--checkpoint", str(tiny_checkpoint), "--seeds", "1"]
    argv += [
        "--env-kwargs",
        '{"probe_size": 1, "sample_forget": 4, "sample_retain": 1, "sample_ddim_steps": 2}',
        "--batch-size",
        "2",
        "--horizon",
        "2",
        "--samples",
        "1",
    ]
    argv += ["--contaminated-samples", "1", "--ddim-steps", "1", "--device", "cpu", "--threads", "1"]
    argv += ["--workers", "1", "--no-progress", "--json", "--bootstrap-reps", "10", "--out", str(tmp_path / "out")]
    assert main([*argv, "--record", str(tmp_path / "rec")]) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert data["datasets"] == {
        "path": str(tmp_path / "rec"),
        "ids": {"static:0.5": "unlearn_gym/SISS-v0/static-0_5-v0"},
    }
    assert (tmp_path / "rec" / "unlearn_gym" / "SISS-v0" / "static-0_5-v0" / "data" / "main_data.hdf5").is_file()
    monkeypatch.setitem(sys.modules, "minari", None)  # `import minari` raises ImportError
    with pytest.raises(SystemExit, match=r'recording episodes needs Minari .*pip install "unlearn-gym\[minari\]"'):
        main([*argv, "--record", str(tmp_path / "other")])
