"""The update has no host synchronisation: exactly one device→host copy (the statistics) per update.

On the CPU a dispatch mode and patched ``Tensor`` methods record every way a tensor's value can
reach Python or the host during ``engine.update``; on a GPU ``torch.cuda.set_sync_debug_mode``
turns any synchronisation into an error.
"""

import collections

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from unlearn_gym.engines import HybridEngine, SFDEngine, UnlearningEngine
from unlearn_gym.models import load_model
from unlearn_gym.objectives.hybrid import HybridConfig
from unlearn_gym.objectives.siss import SISSConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# what reads a tensor's value into Python (each is a device→host copy and a sync on a GPU)
_HOST_READS = ("numpy", "tolist", "item", "cpu", "__array__", "__bool__", "__float__", "__int__", "__index__")


class _HostTraffic(TorchDispatchMode):
    """Records the operators that move data between the host and the device.

    - ``aten._local_scalar_dense``: what ``.item()``, ``bool(t)``, ``float(t)`` and ``int(t)`` call;
    - ``aten._to_copy`` to the CPU (``.to("cpu")``) and ``aten.copy_`` into a CPU tensor from another
      device: a device→host copy, recorded with the tensor's shape;
    - ``aten.lift_fresh``: a tensor made from host data (``torch.tensor``/``as_tensor`` of a Python
      number or array), which is a host→device copy on a GPU.
    """

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.to_host: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        out = func(*args, **kwargs)
        if name in ("_local_scalar_dense", "lift_fresh", "lift_fresh_copy"):
            self.ops[name] += 1
        elif name == "_to_copy" and kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu":
            self.to_host.append(tuple(out.shape))
        elif name == "copy_" and args[0].device.type == "cpu" and args[1].device.type != "cpu":
            self.to_host.append(tuple(args[0].shape))
        return out


def _count_host_reads(monkeypatch) -> list[tuple[str, tuple[int, ...]]]:
    """Patch the ``Tensor`` methods of ``_HOST_READS`` to record (method, shape) and call through."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    for method in _HOST_READS:
        original = getattr(torch.Tensor, method)

        def wrapper(self, *args, _original=original, _method=method, **kwargs):
            calls.append((_method, tuple(self.shape)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, wrapper)
    return calls


def _engine(checkpoint, scenario, kind, num_runs, executor, device="cpu"):
    unet, _ = load_model(checkpoint)
    kw = dict(num_runs=num_runs, executor=executor, device=device)
    if kind == "sfd":
        return SFDEngine(unet, 1, (0, 2, 3), probe_size=0, **kw)
    if kind == "hybrid":
        cfg = HybridConfig(siss=SISSConfig(batch_size=2))
        return HybridEngine(
            unet, scenario.retain, scenario.forget, hybrid=cfg, target_classes=(0, 2), probe_size=2, **kw
        )
    return UnlearningEngine(unet, scenario.retain, scenario.forget, SISSConfig(batch_size=2), probe_size=2, **kw)


def _update(engine, kind, n):
    lam = np.linspace(0.3, 0.6, n)
    return engine.update(lam) if kind == "sfd" else engine.update(lam, np.linspace(1.0, 0.5, n))


@pytest.mark.parametrize("executor", ["loop", "vmap"])
@pytest.mark.parametrize("num_runs", [1, 2])
@pytest.mark.parametrize("kind", ["siss", "hybrid", "sfd"])
def test_update_copies_to_the_host_exactly_once(
    tiny_checkpoint, default_scenario, monkeypatch, kind, num_runs, executor
):
    engine = _engine(tiny_checkpoint, default_scenario, kind, num_runs, executor)
    engine.seed(list(range(1, num_runs + 1)))
    _update(engine, kind, num_runs)  # first call outside the recording (lazy initialisation)
    reads = _count_host_reads(monkeypatch)
    with _HostTraffic() as traffic:
        stats = _update(engine, kind, num_runs)
    monkeypatch.undo()
    k = len(engine.stats_class.names())
    assert stats.values.shape == (num_runs, k)
    # no .item()/bool()/float() of a tensor: no Python branch on a tensor's value, no scalar read
    assert traffic.ops["_local_scalar_dense"] == 0
    # one device→host copy, of the (N, k) statistics, read once into numpy
    assert traffic.to_host == [(num_runs, k)]
    assert reads == [("numpy", (num_runs, k))]
    # the only tensors made from host data are the update's per-run inputs (λ_i; and the forget
    # strengths for SISS and the hybrid): no Python constant becomes a tensor inside the step
    assert traffic.ops["lift_fresh"] + traffic.ops["lift_fresh_copy"] == (1 if kind == "sfd" else 2)


def test_host_traffic_recorder_sees_a_scalar_read_and_a_host_copy(monkeypatch):
    """The recorder itself: ``.item()`` and ``bool()`` are scalar reads, ``.to("cpu")`` a host copy."""
    x = torch.ones(3)
    reads = _count_host_reads(monkeypatch)
    with _HostTraffic() as traffic:
        x.sum().item()
        bool(x.sum() > 0)
        x.to("cpu", torch.float64).numpy()
    monkeypatch.undo()
    assert traffic.ops["_local_scalar_dense"] == 2
    assert traffic.to_host == [(3,)]
    assert [name for name, _ in reads] == ["item", "__bool__", "numpy"]


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.set_sync_debug_mode checks syncs on a GPU only"
)
@pytest.mark.parametrize("executor", ["loop", "vmap", "graph"])
@pytest.mark.parametrize("kind", ["siss", "hybrid"])
def test_update_does_not_synchronise_on_a_gpu(tiny_checkpoint, default_scenario, kind, executor):
    engine = _engine(tiny_checkpoint, default_scenario, kind, 2, executor, device="cuda")
    engine.seed([1, 2])
    _update(engine, kind, 2)  # lazy initialisation (and the graph's capture) outside the check
    torch.cuda.synchronize()
    copies = []
    to_host = engine._to_host

    def one_copy(stats):  # the one allowed sync: the statistics' copy
        torch.cuda.set_sync_debug_mode(0)
        copies.append(stats.shape)
        try:
            return to_host(stats)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    engine._to_host = one_copy
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            _update(engine, kind, 2)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(copies) == 2
