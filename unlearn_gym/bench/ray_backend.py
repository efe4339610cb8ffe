"""Ray for the benchmark runner and the agent sweeps: the session, and episodes on Ray actors.

``unlearn-gym bench --backend ray`` runs each batch of (policy, seed, instance) episodes (one
episode, or with ``--num-envs N`` up to N of one policy as the runs of one batched vector env) on a
Ray actor that holds one :class:`~unlearn_gym.bench.episodes.EpisodeRunner` (its own env and evaluator, like
a ``--workers`` process) and declares ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs; Ray places
the actors on the cluster's nodes. The parent receives each episode's outcome as it finishes and logs, resumes
and reports exactly as with the local backend. Without an address, ``ray.init()`` starts a local
cluster on this machine, so a laptop and a cluster run the same command.

Ray is an optional extra (``pip install "unlearn-gym[ray]"``), imported only here.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .config import BenchConfig, Unit
from .episodes import EpisodeRunner
from .record import EpisodeOutcome

__all__ = ["check_address", "ray_session", "require_ray", "run_on_ray"]

_INSTALL = 'pip install "unlearn-gym[ray]"'
CONNECT_TIMEOUT_S = 5.0
"""How long :func:`check_address` waits for the cluster's port (``ray.init`` itself retries for minutes)."""


def require_ray():
    """The ``ray`` module, or :class:`gymnasium.error.DependencyNotInstalled` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled(f"the Ray backend needs Ray ({e}); {_INSTALL}") from None
    return ray


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast where the Ray cluster at ``address`` ("HOST:PORT" or "ray://HOST:PORT") does not answer.

    ``ray.init(address=...)`` waits minutes for an unreachable head node; this opens one TCP
    connection to its port first. "auto" (the cluster this machine belongs to) is left to Ray.

    Raises:
        ValueError: ``address`` is not HOST:PORT.
        ConnectionError: nothing accepts connections there within ``timeout`` seconds.
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConnectionError(
            f"the Ray cluster at {address} is unreachable ({e}); start it (`ray start --head`) or check the address"
        ) from None


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """The ``ray`` module with a session: this process's own if it has one (left running), else
    ``ray.init(address)`` (a new local cluster when ``address`` is None), shut down on exit.

    Args:
        address: the cluster to join; checked with :func:`check_address` first (also when this
            process has a session already, which is then used as it is).
        num_cpus: CPUs of a new local cluster (None: all of this machine's).
    """
    ray = require_ray()
    if address is not None:
        check_address(address)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(address=address, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def actor_slots(resources: Mapping[str, float], cpus: float, gpus: float) -> int:
    """How many actors of ``cpus`` CPUs and ``gpus`` GPUs the cluster ``resources`` hold at once.

    Raises:
        ValueError: not even one (e.g. GPUs asked of a cluster without any).
    """
    slots = math.floor(resources.get("CPU", 0.0) / cpus + 1e-9)
    if gpus > 0:
        slots = min(slots, math.floor(resources.get("GPU", 0.0) / gpus + 1e-9))
    if slots < 1:
        raise ValueError(
            f"the Ray cluster ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs) cannot hold one "
            f"trial of {cpus:g} CPUs and {gpus:g} GPUs; lower cpus_per_trial/gpus_per_trial or add nodes"
        )
    return slots


class _EpisodeActor:
    """A Ray actor's body: one episode runner, torch on the actor's CPUs."""

    def __init__(self, policies: Mapping[str, Any], config: BenchConfig, record: bool) -> None:
        import torch

        torch.set_num_threads(max(1, int(config.cpus_per_trial)))
        self.runner = EpisodeRunner(policies, config, record=record)

    def run(self, units: list[Unit]) -> list[EpisodeOutcome]:
        return self.runner.remote_units(units)


def run_on_ray(
    policies: Mapping[str, Any],
    config: BenchConfig,
    runs: Sequence[Unit],
    batches: Sequence[Sequence[int]],
    *,
    record: bool = False,
) -> Iterator[tuple[int, EpisodeOutcome]]:
    """Run the batches of ``runs`` (each a list of indices k, run together by
    :meth:`~unlearn_gym.bench.episodes.EpisodeRunner.run_units`) on Ray actors; yields (k, (record,
    evaluation, steps)) for each episode of a batch as the batch finishes (what
    :func:`~unlearn_gym.bench.workers.run_in_workers` yields).

    As many actors as the cluster holds at once (:func:`actor_slots`, at most one per batch) each
    build an :class:`~unlearn_gym.bench.episodes.EpisodeRunner` once and then take the next batch as they
    free up. The session is :func:`ray_session`'s for ``config.ray_address``.
    """
    with ray_session(config.ray_address) as ray:
        slots = actor_slots(ray.cluster_resources(), config.cpus_per_trial, config.gpus_per_trial)
        actor_class = ray.remote(num_cpus=config.cpus_per_trial, num_gpus=config.gpus_per_trial)(_EpisodeActor)
        shared = (ray.put(dict(policies)), ray.put(config))
        actors = [actor_class.remote(*shared, record) for _ in range(min(slots, len(batches)))]
        queue = [list(b) for b in batches]
        in_flight: dict[Any, tuple[list[int], Any]] = {}
        try:
            for actor in actors:
                if queue:
                    batch = queue.pop(0)
                    in_flight[actor.run.remote([runs[k] for k in batch])] = (batch, actor)
            while in_flight:
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                batch, actor = in_flight.pop(ref)
                outcomes = ray.get(ref)
                if queue:
                    nxt = queue.pop(0)
                    in_flight[actor.run.remote([runs[k] for k in nxt])] = (nxt, actor)
                yield from zip(batch, outcomes)
        finally:
            for actor in actors:
                ray.kill(actor)
