"""The Ray backend of the runner and the agent sweep, on one local Ray session of 2 CPUs (started once)."""

import dataclasses
import json
import socket
import sys
import time

import numpy as np
import pytest
from conftest import SMALL_SAMPLED_PROBE

from unlearn_gym.bench import EPISODE_LOG, BenchConfig, EpisodeRunner, policy_from_spec, run_benchmark
from unlearn_gym.bench.ray_backend import actor_slots, check_address
from unlearn_gym.cli import main

pytestmark = pytest.mark.xdist_group("ray")  # one worker runs them all: one Ray cluster (module fixture)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _config(tiny_checkpoint, **kw):
    env_kwargs = dict(
        checkpoint=str(tiny_checkpoint), batch_size=2, probe_size=1, horizon=3, device="cpu", **SMALL_SAMPLED_PROBE
    )
    return BenchConfig(
        env_kwargs=env_kwargs,
        seeds=(0,),
        samples_per_label=2,
        contaminated_label_samples=3,
        ddim_steps=2,
        bootstrap_reps=50,
        **kw,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_actor_slots_count_what_the_cluster_holds():
    assert actor_slots({"CPU": 2.0}, 1.0, 0.0) == 2
    assert actor_slots({"CPU": 16.0, "GPU": 1.0}, 2.0, 0.5) == 2  # the GPU is the limit
    assert actor_slots({"CPU": 3.0}, 1.5, 0.0) == 2
    with pytest.raises(ValueError, match=r"\(2 CPUs, 0 GPUs\) cannot hold one trial of 1 CPUs and 1 GPUs"):
        actor_slots({"CPU": 2.0}, 1.0, 1.0)


def test_an_unreachable_address_fails_fast_with_the_address(tiny_checkpoint, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"the Ray cluster at {address} is unreachable"):
        check_address(address)
    with pytest.raises(ConnectionError, match=f"ray://{address} is unreachable"):
        check_address(f"ray://{address}")
    argv = ["bench", "--policies", "static:0.5", "--checkpoint", str(tiny_checkpoint), "--seeds", "1"]
    argv += ["--device", "cpu", "--no-progress", "--out", str(tmp_path), "--backend", "ray", "--address", address]
    with pytest.raises(SystemExit, match=f"error: the Ray cluster at {address} is unreachable"):
        main(argv)
    assert time.monotonic() - t0 < 30  # ray.init alone would wait minutes
    assert not (tmp_path / EPISODE_LOG).exists()  # refused before any work
    with pytest.raises(ValueError, match="Ray address must be HOST:PORT, ray://HOST:PORT or auto, got 'headnode'"):
        check_address("headnode")
    with pytest.raises(SystemExit, match="--address 1.2.3.4:6379 names a Ray cluster; add --backend ray"):
        main(["bench", "--address", "1.2.3.4:6379"])
    with pytest.raises(ValueError, match="backend 'ray' does not run the robustness attacks"):
        _config(tiny_checkpoint, backend="ray", robustness=True)
    with pytest.raises(ValueError, match="backend must be 'local' or 'ray', got 'dask'"):
        _config(tiny_checkpoint, backend="dask")
    with pytest.raises(ValueError, match="cpus_per_trial must be > 0 and gpus_per_trial >= 0, got 0 and 0"):
        _config(tiny_checkpoint, cpus_per_trial=0)


def test_without_ray_the_backend_and_sweep_say_how_to_install_it(tiny_checkpoint, tmp_path, monkeypatch):
    from gymnasium.error import DependencyNotInstalled

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = _config(tiny_checkpoint, backend="ray")
    with pytest.raises(DependencyNotInstalled, match=r'the Ray backend needs Ray .*pip install "unlearn-gym\[ray\]"'):
        run_benchmark({"static:0.5": policy_from_spec("static:0.5")}, config, progress=False, log=None)
    with pytest.raises(SystemExit, match=r'pip install "unlearn-gym\[ray\]"'):
        main(["sweep", "--algos", "mcpg", "--timesteps", "2", "--out", str(tmp_path)])


def test_ray_backend_runs_the_episodes_of_the_local_backend(ray_cluster, tiny_checkpoint, tmp_path, monkeypatch):
    """Two trials (2 policies × 1 seed) on Ray actors: the same episodes, log, grids and Minari steps as
    the local backend in this process."""
    import minari
    import torch

    torch.set_num_threads(1)  # the actors' thread count: then the floats agree closely
    policies = {name: policy_from_spec(name) for name in ("static:0.5", "random")}
    config = _config(tiny_checkpoint)
    local = run_benchmark(
        policies, config, progress=False, log=None, log_path=tmp_path / "local" / EPISODE_LOG, record=tmp_path / "rl"
    )

    def not_here(*_args, **_kwargs):
        raise AssertionError("an episode ran in the parent process")

    monkeypatch.setattr(EpisodeRunner, "episode", not_here)  # the actors import the module afresh
    on_ray = run_benchmark(
        policies,
        dataclasses.replace(config, backend="ray"),
        progress=False,
        log=None,
        log_path=tmp_path / "ray" / EPISODE_LOG,
        record=tmp_path / "rr",
    )
    monkeypatch.undo()
    assert ray_cluster.is_initialized()  # the module's session, used and left running
    assert [(e["policy"], e["seed"]) for e in on_ray["episodes"]] == [("static:0.5", 0), ("random", 0)]
    for a, b in zip(local["episodes"], on_ray["episodes"]):
        assert set(a) == set(b)
        assert a["lambdas"] == pytest.approx(b["lambdas"], abs=1e-5)
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-5)
        assert a["forget_rate"] == b["forget_rate"] and a["per_label_accuracy"] == b["per_label_accuracy"]
    assert on_ray["settings"]["backend"] == "ray" and local["settings"]["backend"] == "local"
    assert set(on_ray["summary"]) == set(local["summary"])
    assert torch.allclose(on_ray["_grids"]["random"], local["_grids"]["random"], atol=1e-4)
    for folder in ("local", "ray"):
        assert (tmp_path / folder / EPISODE_LOG).read_text().count("\n") == 1 + 2
    # the steps came back from the actors into the datasets
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "rl"))
    want = next(minari.load_dataset(local["datasets"]["ids"]["random"]).iterate_episodes())
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "rr"))
    got = next(minari.load_dataset(on_ray["datasets"]["ids"]["random"]).iterate_episodes())
    assert np.allclose(got.observations, want.observations, atol=1e-5) and np.allclose(got.actions, want.actions)
    assert np.allclose(got.infos["lam"][1:], on_ray["episodes"][1]["lambdas"])


def test_sweep_trains_two_trials_with_tune_and_writes_one_table(ray_cluster, tiny_checkpoint, tmp_path, capsys):
    env_kwargs = {"batch_size": 2, "probe_size": 1, "horizon": 2, "device": "cpu", **SMALL_SAMPLED_PROBE}
    argv = ["sweep", "--algos", "mcpg", "--seeds", "0", "--set", "learning_rate=1e-3,3e-4"]
    argv += ["--set", "episodes_per_update=1", "--timesteps", "2", "--eval-episodes", "2"]
    argv += ["--checkpoint", str(tiny_checkpoint), "--env-kwargs", json.dumps(env_kwargs)]
    argv += ["--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)  # stdout: one JSON object, nothing from Tune
    rows = out["trials"]
    assert [r["trial"] for r in rows] == [
        "mcpg-seed0-learning_rate=0.001-episodes_per_update=1",
        "mcpg-seed0-learning_rate=0.0003-episodes_per_update=1",
    ]
    for row, lr in zip(rows, (1e-3, 3e-4)):
        assert row["status"] == "ok" and row["learning_rate"] == lr and row["episodes_per_update"] == 1
        assert row["timesteps"] >= 2 and len(row["returns"]) == 2
        assert row["return"] == pytest.approx(np.mean(row["returns"]))
        agent = json.loads((tmp_path / "trials" / row["trial"] / "agent" / "agent.json").read_text())
        assert agent["algo"] == "mcpg" and agent["env_kwargs"]["horizon"] == 2  # train_agent wrote it
        train = json.loads((tmp_path / "trials" / row["trial"] / "train.json").read_text())
        assert train["hyperparams"]["learning_rate"] == lr
    csv_lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 and csv_lines[0].startswith(
        "trial,algo,seed,learning_rate,episodes_per_update,return"
    )
    md = (tmp_path / "sweep.md").read_text()
    assert "| algo | seed | learning_rate | episodes_per_update | return |" in md and "- mcpg: mcpg-seed0-" in md


def test_sweep_grid_and_its_bad_input():
    from unlearn_gym.sweep import SweepConfig, parse_grid, sweep_trials

    grid = parse_grid(["learning_rate=3e-4,1e-3", "ent_coef=auto,0.01", "normalize=false"])
    assert grid == {"learning_rate": (3e-4, 1e-3), "ent_coef": ("auto", 0.01), "normalize": (False,)}
    trials = sweep_trials(SweepConfig(algos=("ppo", "sac"), seeds=(0, 1), grid={"learning_rate": (3e-4, 1e-3)}))
    assert len(trials) == 8 and trials[0] == {
        "name": "ppo-seed0-learning_rate=0.0003",
        "algo": "ppo",
        "seed": 0,
        "hyperparams": {"learning_rate": 3e-4},
    }
    assert [t["algo"] for t in trials] == ["ppo"] * 4 + ["sac"] * 4
    with pytest.raises(ValueError, match=r"expected NAME=V1,V2,\.\.\. \(e\.g\. learning_rate=3e-4,1e-3\), got 'lr'"):
        parse_grid(["lr"])
    with pytest.raises(ValueError, match="learning_rate is given twice"):
        parse_grid(["learning_rate=1", "learning_rate=2"])
    with pytest.raises(ValueError, match="--set gamma: expected at least one value"):
        parse_grid(["gamma="])
    with pytest.raises(ValueError, match=r"algos must be a non-empty subset of .*got \['a2c'\]"):
        SweepConfig(algos=("a2c",))
    with pytest.raises(SystemExit, match="--seeds: expected comma-separated integers, e.g. 0,1,2, got 'x'"):
        main(["sweep", "--seeds", "x"])
