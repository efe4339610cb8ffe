import math
from dataclasses import fields

import pytest
import torch

from unlearn_gym.engines import STAT_NAMES, UnlearningEngine
from unlearn_gym.models import load_model
from unlearn_gym.objectives.siss import EstimatorVariances, SISSConfig


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
    # the objective's variance statistics arrive in order, renamed x → r (retain), a → f (forget)
    names = [f.name.replace("_x", "_r").replace("_a", "_f") for f in fields(EstimatorVariances)]
    assert list(STAT_NAMES[-len(names) :]) == names
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
