"""Shared fixtures: tiny models and scenarios; CPU only; no network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

SMALL_SAMPLED_PROBE = dict(sample_forget=4, sample_retain=1, sample_ddim_steps=2)
"""The sampled reward's probe at test scale (4 + 9 samples, 2 DDIM steps): keywords of SISS-v0/Hybrid-v0."""


@pytest.fixture(autouse=True)
def _few_threads():
    """One torch thread per test: the models are tiny, so a second OpenMP thread gains little on an
    idle machine and stalls on a busy one (and the bench tests' worker processes bring their own)."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True, scope="session")
def _reference_cache(tmp_path_factory):
    """The reference evaluations of the session go to a temporary cache, not the user's ~/.cache
    (subprocesses inherit it through the environment)."""
    import os

    before = os.environ.get("UNLEARN_GYM_CACHE")
    os.environ["UNLEARN_GYM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["UNLEARN_GYM_CACHE"]
    else:
        os.environ["UNLEARN_GYM_CACHE"] = before


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny batched models step fastest so; two OpenMP threads on a
    busy 2-core machine stall)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def default_scenario():
    from unlearn_gym.data import load_scenario

    return load_scenario("default")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist_22k.npz").is_file():
        pytest.skip(
            f"real MNIST/Fashion-MNIST .npz files not found at {SHARED_DATA} (a fresh clone has no ../shared/data)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, default_scenario) -> Path:
    """A `tiny` DDPM pretrained for 40 steps on the default scenario (a real, if crude, model)."""
    from unlearn_gym.models.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("tiny_ckpt")
    pretrain(
        default_scenario,
        out,
        preset="tiny",
        config=PretrainConfig(steps=40, batch_size=8, lr=2e-3, warmup_steps=5, seed=0),
        scenario_args={"contamination": 0.3, "seed": 0},
        progress=False,
        tensorboard=False,
    )
    (out / "train_state.safetensors").unlink()
    return out
