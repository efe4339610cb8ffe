"""The N-run engine: run i of N equals a one-run engine seeded like it; the loop and vmap executors agree."""

import numpy as np
import pytest
import torch

from unlearn_gym.engines import HybridEngine, UnlearningEngine
from unlearn_gym.models import load_model
from unlearn_gym.objectives.hybrid import HybridConfig
from unlearn_gym.objectives.siss import SISSConfig

LR = 1e-4
# float32 on the CPU: the loop and vmap executors run different kernels (batched convolutions), so
# their statistics agree to rtol 1e-3 (atol 1e-4 for the near-cancelling variance derivatives), and
# their weights to within 2·lr per update (AdamW's step m̂/√v̂ turns a rounding difference in a
# near-zero gradient into at most a step of size ~lr).
STATS_TOL = dict(rtol=1e-3, atol=1e-4)


def _engine(checkpoint, scenario, kind, num_runs, executor):
    unet, _ = load_model(checkpoint)
    kw = dict(probe_size=2, num_runs=num_runs, executor=executor)
    if kind == "hybrid":
        cfg = HybridConfig(siss=SISSConfig(batch_size=2, lr=LR))
        return HybridEngine(unet, scenario.retain, scenario.forget, hybrid=cfg, target_classes=(0, 2, 3), **kw)
    return UnlearningEngine(
        unet, scenario.retain, scenario.forget, SISSConfig(batch_size=2, lr=LR, objective=kind), **kw
    )


def _script(engine, lams, seeds, reset_run):
    """Seed, evaluate, 3 updates with run ``reset_run`` (if any) restored and reseeded after the second."""
    engine.seed(seeds)
    rows = [engine.evaluate(lams).values]
    for step in range(3):
        rows.append(engine.update(lams, 0.5 + lams).values)
        if step == 1 and reset_run is not None:
            engine.restore([reset_run])
            engine.seed([99], [reset_run])
            rows.append(engine.evaluate(0.5, runs=[reset_run]).values)
    return rows, {n: p.clone() for n, p in engine.params.items()}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kind", ["siss", "hybrid"])
def test_run_i_of_n_is_the_single_run_seeded_like_it(tiny_checkpoint, default_scenario, kind):
    lams, seeds = np.array([0.1, 0.9]), [1, 2]
    rows, params = _script(_engine(tiny_checkpoint, default_scenario, kind, 2, "loop"), lams, seeds, reset_run=1)
    for i in range(2):
        single = _engine(tiny_checkpoint, default_scenario, kind, 1, "loop")
        single_rows, single_params = _script(single, lams[i : i + 1], [seeds[i]], reset_run=0 if i == 1 else None)
        # the loop executor computes run i exactly as a one-run engine does (bit for bit)
        if i != 1:
            rows_i = rows[:3] + rows[4:]  # the evaluation after the masked restore covers run 1 only
        else:
            rows_i = rows[:3] + [rows[3][[0, 0]]] + rows[4:]
        for r, s in zip(rows_i, single_rows, strict=True):
            np.testing.assert_array_equal(r[i], s[0])
        for name, p in params.items():
            assert torch.equal(p[i], single_params[name][0]), name


@pytest.mark.parametrize("kind", ["siss", "erasediff", "hybrid"])
def test_vmap_and_loop_executors_agree(tiny_checkpoint, default_scenario, kind):
    lams, seeds = np.array([0.2, 0.8]), [5, 6]
    loop_rows, loop_params = _script(_engine(tiny_checkpoint, default_scenario, kind, 2, "loop"), lams, seeds, 0)
    vmap_rows, vmap_params = _script(_engine(tiny_checkpoint, default_scenario, kind, 2, "vmap"), lams, seeds, 0)
    for a, b in zip(loop_rows, vmap_rows):
        np.testing.assert_allclose(b, a, **STATS_TOL)
    for name, p in loop_params.items():
        torch.testing.assert_close(vmap_params[name], p, rtol=0, atol=2 * LR * 3)


def test_restore_and_seed_touch_only_the_selected_runs(tiny_checkpoint, default_scenario):
    engine = _engine(tiny_checkpoint, default_scenario, "siss", 3, "loop")
    engine.seed([1, 2, 3])
    engine.update([0.5, 0.5, 0.5])
    before = {n: p.clone() for n, p in engine.params.items()}
    state = engine.state_dict()["tensors"]
    engine.restore(np.array([False, True, False]))
    assert engine.step_count.tolist() == [1, 0, 1]
    for name, p in engine.params.items():
        assert torch.equal(p[0], before[name][0]) and torch.equal(p[2], before[name][2])
        assert torch.equal(p[1], engine._pretrained[name])
    assert state["adam_steps"].tolist() == [1.0, 0.0, 1.0]
    # model(i) is run i's weights, live
    model = engine.model(2)
    engine.update(0.3)
    for (name, p), q in zip(engine.params.items(), model.parameters()):
        assert torch.equal(p[2], q), name


def test_state_dict_round_trip_of_n_runs(tiny_checkpoint, default_scenario, tmp_path):
    engine = _engine(tiny_checkpoint, default_scenario, "siss", 2, "loop")
    engine.seed([3, 4])
    engine.update([0.3, 0.6])
    engine.save(tmp_path / "runs.safetensors")
    continued = engine.update([0.7, 0.2]).values
    engine.restore()
    engine.seed([0, 0])
    engine.load(tmp_path / "runs.safetensors")
    assert engine.step_count.tolist() == [1, 1]
    np.testing.assert_array_equal(engine.update([0.7, 0.2]).values, continued)


def test_n_run_input_errors(tiny_checkpoint, default_scenario):
    unet, _ = load_model(tiny_checkpoint)
    r, f = default_scenario.retain, default_scenario.forget
    with pytest.raises(ValueError, match="num_runs must be an int >= 1, got 0"):
        UnlearningEngine(unet, r, f, num_runs=0)
    with pytest.raises(ValueError, match=r"executor must be one of \['auto', 'vmap', 'loop', 'graph'\], got 'gpu'"):
        UnlearningEngine(unet, r, f, executor="gpu")
    with pytest.raises(
        ValueError,
        match=r"executor='graph' needs a CUDA device .*got device 'cpu'; use executor='loop' \(the CPU default\) or 'vmap'",
    ):
        UnlearningEngine(unet, r, f, executor="graph")
    engine = _engine(tiny_checkpoint, default_scenario, "siss", 2, "loop")
    assert engine.executor == "loop"  # "auto" on the CPU
    with pytest.raises(ValueError, match=r"expected 2 seed\(s\), one per run, got 3"):
        engine.seed([1, 2, 3])
    engine.seed([1, 2])
    with pytest.raises(ValueError, match=r"lam: expected a scalar or one value per run, shape \(2,\), got \(3,\)"):
        engine.update([0.1, 0.2, 0.3])
    assert engine.step_count.tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"runs must be indices in \[0, 2\), got \[5\]"):
        engine.restore([5])
    with pytest.raises(ValueError, match=r"run must be in \[0, 2\), got 2"):
        engine.model(2)
    superfactor = UnlearningEngine(
        load_model(tiny_checkpoint)[0], r, f, SISSConfig(batch_size=2, surgery="superfactor"), num_runs=2,
        executor="vmap",
    )  # fmt: skip
    superfactor.set_forget(f.subset(np.arange(3)), runs=[1])
    superfactor.seed([0, 1])
    with pytest.raises(ValueError, match="one forget-set size k for all runs under 'superfactor' surgery"):
        superfactor.update(0.5)


def test_graph_warm_up_state_round_trip(tiny_checkpoint, default_scenario):
    """What the graph executor does around its warm-up, on the CPU: saving the runs' weights, moments,
    step counts and generators, stepping, and putting them back leaves the next update unchanged."""
    lams = np.array([0.3, 0.7])
    reference = _engine(tiny_checkpoint, default_scenario, "siss", 2, "vmap")
    reference.seed([3, 4])
    reference.update(lams)
    expected = reference.update(lams).values
    engine = _engine(tiny_checkpoint, default_scenario, "siss", 2, "vmap")
    engine.seed([3, 4])
    engine.update(lams)
    saved = engine._save_step_state()
    for _ in range(2):  # the warm-up steps (on the CPU, the eager body of the capture)
        engine._step(torch.full((2,), 0.5, dtype=torch.float64), torch.ones(2, dtype=torch.float64), "vmap")
    engine._load_step_state(saved)
    np.testing.assert_array_equal(engine.update(lams).values, expected)
    for name, p in reference.params.items():
        assert torch.equal(engine.params[name], p), name


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: the graph executor captures a torch.cuda.CUDAGraph"
)
@pytest.mark.parametrize("kind", ["siss", "hybrid"])
def test_graph_executor_matches_eager_vmap_on_a_gpu(tiny_checkpoint, default_scenario, kind):
    """The captured update replays what the eager vmap update computes: statistics to rtol 1e-4
    (the same kernels, the same random numbers; atol for near-cancelling variance terms), weights
    within 2·lr per update; through a masked restore, a reseed and a new forget set (a new capture)."""

    def script(engine):
        engine.seed([5, 6])
        rows = []
        for step in range(4):
            rows.append(engine.update(np.array([0.2, 0.8]), np.array([1.0, 0.5])).values)
            if step == 1:
                engine.restore([0])
                engine.seed([9], [0])
        engine.set_forget(default_scenario.forget.subset(np.arange(3)), runs=[1])
        rows.append(engine.update(0.5).values)
        return rows, {n: p.clone() for n, p in engine.params.items()}

    unet, _ = load_model(tiny_checkpoint)
    eager_rows, eager_params = script(_engine_on(unet, default_scenario, kind, "vmap"))
    unet, _ = load_model(tiny_checkpoint)
    graph = _engine_on(unet, default_scenario, kind, "graph")
    graph_rows, graph_params = script(graph)
    assert len(graph._graphs) == 2  # one capture per combination of forget sets
    for a, b in zip(eager_rows, graph_rows, strict=True):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for name, p in eager_params.items():
        torch.testing.assert_close(graph_params[name], p, rtol=0, atol=2 * LR * 5)


def _engine_on(unet, scenario, kind, executor):
    kw = dict(probe_size=2, num_runs=2, executor=executor, device="cuda")
    if kind == "hybrid":
        cfg = HybridConfig(siss=SISSConfig(batch_size=2, lr=LR))
        return HybridEngine(unet, scenario.retain, scenario.forget, hybrid=cfg, target_classes=(0, 2, 3), **kw)
    return UnlearningEngine(unet, scenario.retain, scenario.forget, SISSConfig(batch_size=2, lr=LR), **kw)
