"""Step profiles: a plain DDPM training step, the bare SISS update and ``env.step``; and N batched runs.

:func:`profile_step` times the three on one model preset and batch size, on one device.
:func:`profile_runs` times one step of the batched vector env for each N and executor against N
sequential steps of the single env in the same process. Each figure is the median over
``repeats`` timed calls after ``warmup`` untimed ones (CUDA is synchronised around each call).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["profile_step", "profile_runs"]


_UNEVALUATED_PROBE = dict(sample_forget=1, sample_retain=1, sample_ddim_steps=1)
"""The sampled reward's probe of the timed envs: their episodes never end (horizon 10⁹), so it is
only measured once at reset (the smallest one; a step does the same work with any probe size)."""


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _median_ms_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """:func:`_median_ms` of several calls timed in turn (one call of each per repeat), so that a
    change of the machine's load while they run weighs on all of them alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


def profile_step(
    preset: str = "small",
    batch_size: int = 64,
    device: str = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    seed: int = 0,
) -> dict:
    """Median milliseconds of a plain DDPM step, the bare SISS update and ``SISSEnv.step``.

    - plain: forward, ε-MSE, backward, AdamW on B retain images;
    - SISS: :meth:`UnlearningEngine.update` (draw, one forward, two backwards, surgery, clip,
      AdamW, one host copy) with the probe off;
    - SISS with the probe: the same update with the env's fixed probe (one no-grad forward on its
      2·``probe_size`` images after the step), the engine part of ``env.step``;
    - env: ``SISSEnv.step`` (the update with the probe, then observation and reward).

    The three are timed in turn, one call of each per repeat (:func:`_median_ms_interleaved`). So
    ``env_over_siss`` = the probe's share plus the env's own share (``env_over_siss_probe``:
    observation, reward, info). The weights are a fresh initialisation of ``preset`` (speed does
    not depend on them); the data is the ``default`` scenario.
    """
    from .data.scenarios import load_scenario
    from .engines import UnlearningEngine
    from .envs.siss_env import SISSEnv
    from .models.checkpoint import save_model
    from .models.unet import PRESETS, make_unet, noise_schedule, scheduler_config
    from .objectives.common import forward_noise
    from .objectives.siss import SISSConfig

    dev = torch.device(device)
    scenario = load_scenario("default")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = make_unet(preset).to(dev)
    g = torch.Generator(dev).manual_seed(seed)

    # plain DDPM step
    images = scenario.retain.images.to(dev)
    labels = scenario.retain.labels.to(dev)
    sched = noise_schedule()
    gamma, sigma = sched.gamma.to(dev, torch.float32), sched.sigma.to(dev, torch.float32)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def plain() -> None:
        idx = torch.randint(len(images), (batch_size,), generator=g, device=dev)
        t = torch.randint(1000, (batch_size,), generator=g, device=dev)
        eps = torch.randn((batch_size, 1, 28, 28), generator=g, device=dev)
        x_t = forward_noise(images[idx], t, eps, gamma, sigma)
        loss = F.mse_loss(unet(x_t, t, class_labels=labels[idx]).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    plain_ms = _median_ms(plain, repeats, warmup, dev)

    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "unet": PRESETS[preset].to_dict(),
            "scheduler": scheduler_config(),
            "scenario": {
                "name": "default",
                "args": {},
                "num_labels": scenario.num_labels,
                "contaminated_label": scenario.contaminated_label,
                "contaminant_class": scenario.contaminant_class,
            },
        }
        save_model(unet, tmp, config)
        env = SISSEnv(checkpoint=tmp, batch_size=batch_size, device=str(dev), horizon=10**9, **_UNEVALUATED_PROBE)
        env.reset(seed=seed)
        action = np.zeros(1, dtype=np.float32)
        probe_size = env.config.probe_size
        engines = {}
        for name, probe in (("siss", 0), ("siss_probe", probe_size)):
            engines[name] = UnlearningEngine(
                copy.deepcopy(unet),
                scenario.retain,
                scenario.forget,
                SISSConfig(batch_size=batch_size),
                device=dev,
                probe_size=probe,
            )
            engines[name].seed(seed)
        ms = _median_ms_interleaved(
            {
                "siss": lambda: engines["siss"].update(0.5),
                "siss_probe": lambda: engines["siss_probe"].update(0.5),
                "env": lambda: env.step(action),
            },
            repeats,
            warmup,
            dev,
        )
        siss_ms, siss_probe_ms, env_ms = ms["siss"], ms["siss_probe"], ms["env"]

    return {
        "preset": preset,
        "batch_size": batch_size,
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "probe_size": probe_size,
        "plain_ms": round(plain_ms, 2),
        "siss_ms": round(siss_ms, 2),
        "siss_probe_ms": round(siss_probe_ms, 2),
        "env_ms": round(env_ms, 2),
        "siss_over_plain": round(siss_ms / plain_ms, 3),
        "env_over_siss": round(env_ms / siss_ms, 3),
        "env_over_siss_probe": round(env_ms / siss_probe_ms, 3),
        "torch": torch.__version__,
    }


def _checkpoint_dir(directory: str, preset: str, seed: int) -> None:
    """A fresh initialisation of ``preset`` saved as a checkpoint of the ``default`` scenario."""
    from .data.scenarios import load_scenario
    from .models.checkpoint import save_model
    from .models.unet import PRESETS, make_unet, scheduler_config

    scenario = load_scenario("default")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = make_unet(preset)
    config = {
        "unet": PRESETS[preset].to_dict(),
        "scheduler": scheduler_config(),
        "scenario": {
            "name": "default",
            "args": {},
            "num_labels": scenario.num_labels,
            "contaminated_label": scenario.contaminated_label,
            "contaminant_class": scenario.contaminant_class,
        },
    }
    save_model(unet, directory, config)


def profile_runs(
    preset: str = "tiny",
    batch_size: int = 16,
    device: str = "cpu",
    num_envs: tuple[int, ...] = (1, 4, 16),
    executors: tuple[str, ...] = ("loop", "vmap"),
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict:
    """Milliseconds per batched step of the vector env for each N and executor, and the speed-up.

    - single: ``SISSEnv.step`` (one run, the single env);
    - batched: ``UnlearningVectorEnv.step`` with N runs (one engine update of all N runs, the
      observations, rewards and infos), with the engine's ``executor``;
    - speed-up: N·single_ms / batched_ms, the throughput over N single runs stepped one after another.

    Episodes never end (``horizon`` 10⁹); the weights are a fresh initialisation of ``preset``.
    """
    from .envs.siss_env import SISSEnv
    from .envs.vector import make_siss_vector_env

    dev = torch.device(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _checkpoint_dir(tmp, preset, seed)
        kw = dict(checkpoint=tmp, batch_size=batch_size, device=str(dev), horizon=10**9, **_UNEVALUATED_PROBE)
        env = SISSEnv(**kw)
        env.reset(seed=seed)
        single_ms = _median_ms(partial(env.step, np.zeros(1, dtype=np.float32)), repeats, warmup, dev)
        probe_size = env.config.probe_size
        for executor in executors:
            for n in num_envs:
                venv = make_siss_vector_env(n, executor=executor, **kw)
                venv.reset(seed=list(range(seed, seed + n)))
                ms = _median_ms(partial(venv.step, np.zeros((n, 1), dtype=np.float32)), repeats, warmup, dev)
                rows.append(
                    {
                        "num_envs": n,
                        "executor": executor,
                        "batched_ms": round(ms, 2),
                        "ms_per_run": round(ms / n, 2),
                        "env_steps_per_s": round(1000.0 * n / ms, 2),
                        "speedup_vs_sequential": round(n * single_ms / ms, 3),
                    }
                )
                venv.close()
    return {
        "preset": preset,
        "batch_size": batch_size,
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "probe_size": probe_size,
        "single_ms": round(single_ms, 2),
        "runs": rows,
        "torch": torch.__version__,
    }
