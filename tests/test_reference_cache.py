"""The reference model's evaluation: sampled once, then read from the on-disk cache."""

import dataclasses
import json
import shutil

import pytest
import torch

from unlearn_gym.metrics.reference import ReferenceEvalSettings, evaluate_reference_model, reference_cache_dir

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ReferenceEvalSettings(samples_per_label=2, contaminated_label_samples=3, ddim_steps=2, seed=0)


def _figures(figures):
    return {k: v for k, v in figures.items() if k != "seconds"}  # timings of the sampling that made them


def _equal(a, b):
    assert _figures(a.figures) == _figures(b.figures)
    for k in ("images", "labels", "predictions"):
        assert torch.equal(getattr(a.evaluation, k), getattr(b.evaluation, k)), k


def test_a_second_evaluation_is_a_cache_hit_and_a_new_weight_or_setting_a_miss(tiny_checkpoint, tmp_path, monkeypatch):
    import unlearn_gym.metrics.forget as forget
    from unlearn_gym.models.checkpoint import load_tensors, save_tensors_atomic

    checkpoint, cache = tmp_path / "model", tmp_path / "cache"
    shutil.copytree(tiny_checkpoint, checkpoint)
    messages = []
    first = evaluate_reference_model(checkpoint, None, SETTINGS, cache_dir=cache, log=messages.append)
    assert not first.hit and first.path.parent == cache and first.path.is_file()
    assert messages == [f"reference evaluation of {checkpoint}: sampled, cached in {first.path}"]
    # the figures of a plain evaluation (JSON's types), with the samples they came from
    assert first.figures["samples_per_label"] == 2 and first.figures["contaminated_label_samples"] == 3
    assert first.figures["per_label"]["1"]["n"] == 3 and first.figures["ddim_steps"] == 2
    assert first.evaluation.images.shape == (9 * 2 + 3, 1, 28, 28) and first.evaluation.labels.dtype == torch.int64
    stored = json.loads(first.path.read_text())
    assert stored["key"]["settings"] == dataclasses.asdict(SETTINGS) and set(stored["key"]["model"]) == {
        "config.json",
        "model.safetensors",
    }

    def no_sampling(*args, **kwargs):
        raise AssertionError("a cache hit must not sample")

    with monkeypatch.context() as m:
        m.setattr(forget, "evaluate_model", no_sampling)
        second = evaluate_reference_model(checkpoint, None, SETTINGS, cache_dir=cache)
    assert second.hit and second.path == first.path
    _equal(first, second)
    uncached = evaluate_reference_model(checkpoint, None, SETTINGS, cache=False)
    assert not uncached.hit and uncached.path is None
    _equal(first, uncached)  # what the cache holds is what sampling gives
    # another setting: a miss with its own file
    other = evaluate_reference_model(checkpoint, None, dataclasses.replace(SETTINGS, seed=1), cache_dir=cache)
    assert not other.hit and other.path != first.path
    assert not torch.equal(other.evaluation.images, first.evaluation.images)
    # another weights file (one weight changed): a miss
    tensors, metadata = load_tensors(checkpoint / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_tensors_atomic(tensors, checkpoint / "model.safetensors", metadata=metadata)
    changed = evaluate_reference_model(checkpoint, None, SETTINGS, cache_dir=cache)
    assert not changed.hit and changed.path not in (first.path, other.path)
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in (first.path, other.path, changed.path))
    # a corrupt file is a miss, and is rewritten
    changed.path.write_text('{"kind": "unlearn-gym reference evaluation", "figures": ')
    again = evaluate_reference_model(checkpoint, None, SETTINGS, cache_dir=cache)
    assert not again.hit and again.path == changed.path
    _equal(changed, again)
    assert evaluate_reference_model(checkpoint, None, SETTINGS, cache_dir=cache).hit
    with pytest.raises(ValueError, match="samples_per_label, ddim_steps and batch_size must be >= 1, got 0, 2 and 125"):
        dataclasses.replace(SETTINGS, samples_per_label=0)


def test_the_bench_reads_its_pretrained_row_from_the_cache(tiny_checkpoint, monkeypatch):
    """The bench's pretrained evaluation equals its env's model sampled at reset, and a second bench's is a hit."""
    from unlearn_gym.bench import BenchConfig, EpisodeRunner, policy_from_spec

    env_kwargs = dict(checkpoint=str(tiny_checkpoint), batch_size=2, probe_size=1, horizon=2, device="cpu")
    config = BenchConfig(
        env_kwargs=env_kwargs, seeds=(0,), samples_per_label=2, contaminated_label_samples=3, ddim_steps=2, eval_seed=3
    )
    runner = EpisodeRunner({"static:0.5": policy_from_spec("static:0.5")}, config)
    runner.env.reset(seed=0)
    messages = []
    cached = runner.evaluate_pretrained(messages.append)
    sampled = runner._evaluate()  # the env's pretrained model, sampled now
    assert _figures(json.loads(json.dumps(sampled.figures))) == _figures(cached.figures)
    assert torch.equal(sampled.images, cached.images) and torch.equal(sampled.predictions, cached.predictions)
    assert messages[-1].startswith(
        f"reference evaluation of {tiny_checkpoint}: sampled, cached in {reference_cache_dir()}"
    )
    messages.clear()
    assert runner.evaluate_pretrained(messages.append).figures == cached.figures
    assert messages[-1].startswith(f"reference evaluation of {tiny_checkpoint}: cached in")
    runner.close()
