import math
from dataclasses import dataclass, fields

import pytest
import torch

from unlearn_gym.engines import STAT_NAMES, HostStats, HybridEngine, UnlearningEngine
from unlearn_gym.engines.run_axis import StatsLayout, result_statistics
from unlearn_gym.models import load_model
from unlearn_gym.objectives.common import global_norm
from unlearn_gym.objectives.hybrid import HybridConfig, hybrid_objective
from unlearn_gym.objectives.siss import OBJECTIVES, EstimatorVariances, ObjectiveResult, SISSConfig, draw_batch


@pytest.fixture
def engine(tiny_checkpoint, default_scenario):
    unet, _ = load_model(tiny_checkpoint)
    eng = UnlearningEngine(
        unet, default_scenario.retain, default_scenario.forget, SISSConfig(batch_size=4), probe_size=2
    )
    eng.seed(0)
    return eng


def _params(eng):
    return [p.detach().clone() for p in eng.model().parameters()]


def test_update_changes_the_model_and_reports_every_statistic(engine):
    before = _params(engine)
    stats = engine.update(0.5)[0]
    assert stats.finite and list(stats.as_dict()) == list(STAT_NAMES)  # as_array follows this order
    assert stats.loss_r > 0 and stats.loss_f > 0 and stats.grad_r_norm > 0 and stats.grad_f_norm > 0
    assert 0.0 <= stats.forget_share <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, engine.model().parameters()))
    assert engine.step_count.tolist() == [1]
    # the objective's variance statistics arrive under their own names (r = retain, f = forget)
    assert {f.name for f in fields(EstimatorVariances)} <= set(STAT_NAMES)
    assert stats.var_loss_r > 0 and stats.var_loss_f > 0 and stats.var_loss > 0
    assert 0 < stats.rel_var_loss_r <= 1 and 0 < stats.rel_var_loss_f <= 1


@pytest.mark.parametrize("executor", ["loop", "vmap"])
def test_an_update_without_the_probe_skips_only_the_probe(tiny_checkpoint, default_scenario, executor):
    """``update(measure_probe=False)``: the probe statistics are NaN, every other statistic and the
    weights are those of the same update with the probe (the probe draws no randomness)."""
    unet, _ = load_model(tiny_checkpoint)
    engines = []
    for _ in range(2):
        eng = UnlearningEngine(
            unet, default_scenario.retain, default_scenario.forget, SISSConfig(batch_size=4), probe_size=2,
            num_runs=2, executor=executor,
        )  # fmt: skip
        eng.seed([0, 1])
        engines.append(eng)
    for step in range(2):
        measured, skipped = engines[0].update(0.5), engines[1].update(0.5, measure_probe=step == 1)
        for a, b in zip(measured, skipped):
            if step == 0:
                assert math.isnan(b.probe_r) and math.isnan(b.probe_f) and not b.finite
                assert b.finite_except(("probe_r", "probe_f"))
            for name in STAT_NAMES:
                if step == 1 or name not in ("probe_r", "probe_f"):
                    assert getattr(a, name) == getattr(b, name), (step, name)
    for i in range(2):
        for p, q in zip(engines[0].model(i).parameters(), engines[1].model(i).parameters()):
            assert torch.equal(p, q)


def _result_values(res) -> dict[str, float]:
    """name → value of every statistic of an objective's result (its tensor fields and its variances')."""
    values = {f.name: getattr(res, f.name) for f in fields(res) if isinstance(getattr(res, f.name), torch.Tensor)}
    if hasattr(res, "variances"):
        values |= {f.name: getattr(res.variances, f.name) for f in fields(res.variances)}
    return {name: float(v) for name, v in values.items()}


@pytest.mark.parametrize("executor", ["loop", "vmap"])
@pytest.mark.parametrize("objective", ["siss", "naive-deletion", "hybrid"])
def test_the_statistics_row_is_the_objectives_result_by_name(tiny_checkpoint, default_scenario, objective, executor):
    """One update's StepStats (HybridStepStats) against the objective called directly on the same
    batch and weights: every statistic the result provides arrives under its name, ``update_norm`` is
    ‖g‖ of its direction; nothing else is in the row but the probe."""
    unet, _ = load_model(tiny_checkpoint)
    scen, lam, scale = default_scenario, 0.3, 0.7
    if objective == "hybrid":
        hybrid = HybridConfig(siss=SISSConfig(batch_size=4))
        eng = HybridEngine(
            unet, scen.retain, scen.forget, hybrid=hybrid, target_classes=(0, 2, 3), probe_size=2, executor=executor
        )
    else:
        cfg = SISSConfig(objective=objective, batch_size=4)
        eng = UnlearningEngine(unet, scen.retain, scen.forget, cfg, probe_size=2, executor=executor)
    eng.seed(5)
    params = {name: p.detach().clone().requires_grad_() for name, p in eng.model().named_parameters()}
    rng = eng.generators[0].get_state()
    stats = eng.update(lam, forget_scale=scale)[0]
    # the same batch, from the generator's state before the update, and the weights before the step
    g = torch.Generator()
    g.set_state(rng)
    forget_images, forget_labels = eng.forget_set()
    batch = draw_batch(eng.retain_images, eng.retain_labels, forget_images, forget_labels, 4, eng.num_timesteps, g)
    lam_t, scale_t = (torch.tensor(v, dtype=torch.float64) for v in (lam, scale))
    k = len(forget_images)
    if objective == "hybrid":
        target = (eng.target_classes, eng.target_weights)
        res = hybrid_objective(
            unet, params, eng.teacher_params, batch, lam_t, eng.gamma, eng.sigma, hybrid, target, scale_t,
            eng.dataset_size, k,
        )  # fmt: skip
    else:
        res = OBJECTIVES[objective](unet, params, batch, lam_t, eng.gamma, eng.sigma, cfg, scale_t, eng.dataset_size, k)
    expected = {**_result_values(res), "update_norm": float(global_norm(res.grads))}
    row = stats.as_dict()
    assert set(row) == {*expected, "probe_r", "probe_f"}
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
        if executor == "loop":  # the same operations: the same numbers
            assert row[name] == value, name


def test_a_statistic_the_objective_does_not_provide_fails_at_construction(tiny_checkpoint, default_scenario):
    @dataclass(frozen=True)
    class OldNames(HostStats):
        loss_r: float
        loss_x: float  # the objective's name before issue 23: nobody provides it
        probe_r: float

    class OldNamesEngine(UnlearningEngine):
        stats_class = OldNames

    unet, _ = load_model(tiny_checkpoint)
    with pytest.raises(TypeError, match=r"OldNames has statistics that nobody provides: \['loss_x'\].*ObjectiveResult"):
        OldNamesEngine(unet, default_scenario.retain, default_scenario.forget)


def test_the_layout_reads_by_name_not_by_position():
    @dataclass(frozen=True)
    class Inner:
        b: torch.Tensor

    @dataclass(frozen=True)
    class Result:  # declared in another order than the row
        grads: tuple[torch.Tensor, ...]
        c: torch.Tensor
        inner: Inner
        unused: torch.Tensor

    @dataclass(frozen=True)
    class Row(HostStats):
        a: float
        b: float
        c: float

    assert result_statistics(Result) == {"c": ("c",), "b": ("inner", "b"), "unused": ("unused",)}
    layout = StatsLayout.build(Row, Result, ("a",))
    res = Result((), torch.tensor(3.0), Inner(torch.tensor(2.0)), torch.tensor(9.0))
    row = layout.row({**layout.from_result(res), "a": torch.tensor(1.0)})
    assert row.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match=r"statistics \['c'\] come both from the objective's result"):
        StatsLayout.build(Row, Result, ("a", "c"))

    @dataclass(frozen=True)
    class Twice:
        c: torch.Tensor
        inner: Inner
        more: Inner

    with pytest.raises(TypeError, match="Twice declares the statistic 'b' twice, at inner.b and more.b"):
        result_statistics(Twice)
    assert set(result_statistics(ObjectiveResult)) | {"update_norm", "probe_r", "probe_f"} == set(STAT_NAMES)


def test_restore_is_in_place_and_complete(engine):
    pretrained = _params(engine)
    state = engine.state_dict()["tensors"]
    ptrs = {k: v.data_ptr() for k, v in state.items() if k.split(".")[0] in ("param", "exp_avg", "exp_avg_sq")}
    engine.seed(1)
    first = [engine.update(0.5)[0] for _ in range(3)]
    engine.restore()
    state = engine.state_dict()["tensors"]
    assert {k: state[k].data_ptr() for k in ptrs} == ptrs  # same storage: nothing reallocated
    assert all(not state[k].any() for k in ptrs if k.startswith("exp_avg")) and not state["adam_steps"].any()
    for p, q in zip(engine.model().parameters(), pretrained):
        assert torch.equal(p, q)
    # a restored engine replays the same run as a fresh one (fresh AdamW state)
    engine.seed(1)
    again = [engine.update(0.5)[0] for _ in range(3)]
    assert [s.as_dict() for s in again] == [s.as_dict() for s in first]


def test_save_and_load_resume_a_run_exactly(engine, tmp_path):
    engine.seed(3)
    for _ in range(2):
        engine.update(0.3)
    engine.save(tmp_path / "run.safetensors")
    continued = [engine.update(0.7)[0].as_dict() for _ in range(2)]
    final = _params(engine)
    engine.restore()
    engine.seed(99)  # anything: load must bring back generator, probe, weights and optimizer
    engine.load(tmp_path / "run.safetensors")
    assert engine.step_count.tolist() == [2]
    resumed = [engine.update(0.7)[0].as_dict() for _ in range(2)]
    assert resumed == continued
    for p, q in zip(engine.model().parameters(), final):
        assert torch.equal(p, q)


def test_evaluate_changes_nothing(engine):
    before = _params(engine)
    stats = engine.evaluate(0.5)[0]
    assert stats.finite
    for p, q in zip(engine.model().parameters(), before):
        assert torch.equal(p, q)
    assert engine.step_count.tolist() == [0] and not engine.state_dict()["tensors"]["adam_steps"].any()


def test_engine_input_errors(tiny_checkpoint, default_scenario):
    unet, _ = load_model(tiny_checkpoint)
    empty = default_scenario.forget.subset(torch.arange(0))
    with pytest.raises(ValueError, match="non-empty retain and forget sets"):
        UnlearningEngine(unet, default_scenario.retain, empty)
    with pytest.raises(ValueError, match="probe_size must be >= 0"):
        UnlearningEngine(unet, default_scenario.retain, default_scenario.forget, probe_size=-1)
