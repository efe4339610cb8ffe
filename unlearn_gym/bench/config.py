"""What the benchmark runs: :class:`BenchConfig` and the main job's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..metrics.robustness import RobustnessConfig

__all__ = ["BENCH_ENV_KWARGS", "BENCH_SEEDS", "DEFAULT_POLICIES", "REPORT_ONLY_SETTINGS", "BenchConfig", "Unit"]

Unit = tuple[str, int, int | None]
"""One episode of the benchmark: (policy name, seed, instance)."""

BENCH_ENV_KWARGS = {"batch_size": 16, "horizon": 100, "lr": 1.5e-4}
"""The main job's SISS-v0 settings: episodes of T = 100 SISS updates at batch 16 and AdamW lr 1.5e-4
(λ = 0.5, S = 5), which take the bundled model's label-1 trouser rate from ~0.37 to ~0 with retain
accuracy unchanged (the measured curve: ``docs/results.md`` §2), and fit 4 policies × 10 seeds into
10 minutes on a 2-core CPU with 2 workers. The bundled PPO agent was trained at these settings."""

BENCH_SEEDS = 8
"""The main job's seeds, 0..7: the fewest at which every policy whose spread over the seeds is not
its own (static λ = 0.5, VI-adaptive, the bundled PPO agent) has a 95% forget-rate half-width of at
most 0.05 (their standard deviations over 10 seeds: 0.039, 0.046, 0.055; ``docs/results.md`` §14).
Random λ's spread is its own (its half-width is 0.13 at 8 seeds and would need about 40)."""

DEFAULT_POLICIES = ("static:0.5", "vi-adaptive", "random", "ppo")
"""The main job's policies: SISS's fixed λ, Algorithm 2, uniform random λ, the bundled PPO agent."""

REPORT_ONLY_SETTINGS = (
    "reference",
    "bootstrap_reps",
    "bootstrap_seed",
    "workers",
    "backend",
    "ray_address",
    "cpus_per_trial",
    "gpus_per_trial",
    "num_envs",
    "executor",
)
"""BenchConfig fields that shape only the report or how the episodes are run, not an episode: they
may change on resume."""


@dataclass(frozen=True)
class BenchConfig:
    """What the runner does; every policy gets exactly the same."""

    env_id: str = "unlearn_gym/SISS-v0"
    env_kwargs: dict = field(default_factory=lambda: dict(BENCH_ENV_KWARGS))
    """Keywords of ``gymnasium.make`` (checkpoint, device, batch_size, horizon, ...)."""
    seeds: tuple[int, ...] = tuple(range(BENCH_SEEDS))
    instances: tuple[int | None, ...] = (None,)
    """``reset(options={"instance": i})`` values (None: the whole forget set)."""
    samples_per_label: int = 20
    """Evaluation samples per retain label (retain accuracy, per class), 0 = no sample evaluation."""
    contaminated_label_samples: int | None = 100
    """Evaluation samples of the contaminated label (the forget rate resolves to 1/this per
    episode); None = ``samples_per_label``."""
    ddim_steps: int = 10
    curve_steps: tuple[int, ...] = ()
    """Steps t < T after which each episode's forget rate is sampled too (the forget curve, with the end
    point: :mod:`unlearn_gym.bench.curve`'s AUC and steps to half and a tenth of the pretrained rate);
    each point costs one sampling of the contaminated label's evaluation samples. () = the end point only."""
    eval_seed: int = 0
    """Seed of the evaluation's initial noise: the same for every model, before and after."""
    metrics: str = "basic"
    """"basic": forget rate and retain accuracy; "full": also Table 1 (FID/KID/IS/SSIM) per policy."""
    deterministic: bool = True
    """Passed to every ``predict`` (SB3's ``evaluate_policy`` default)."""
    classifier: str | None = None
    """The evaluation classifier's directory (default: the checkpoint's, or the bundled one)."""
    retrained: str | None = "bundled"
    """The model retrained without the forget set (the exact-unlearning reference): a model
    directory, or "bundled" (the bundled one, where the env runs the bundled default model; no
    reference otherwise); None: none. It is evaluated like every unlearned model (a reference row),
    and each unlearned model's retain samples are compared with its samples of the same initial
    noise (``retain_fid_retrained``, ``retain_kid_retrained``: FID and KID on the classifier's features)."""
    grid_columns: int = 8
    """Samples per label in the before/after grids."""
    workers: int = 1
    """Processes that run the episodes side by side (each with its own env and one torch thread);
    1 = every episode in this process. An episode depends only on its (seed, instance), so the
    records are the same for any number of workers, up to the floating-point summation order of
    a different torch thread count. With ``robustness`` the episodes run in this process."""
    reference: str | None = "static:0.5"
    """The policy every other is compared with (paired over equal seeds and instances); None or a
    name not benchmarked: no verdicts."""
    robustness: bool = False
    """Also attack every unlearned model (membership inference, relearning; slow: off by default)."""
    robustness_config: RobustnessConfig | None = None
    """Settings of those attacks (None: :class:`~unlearn_gym.metrics.robustness.RobustnessConfig` defaults)."""
    bootstrap_reps: int = 2000
    """Resamples of the stratified bootstraps (IQM, mean and probability-of-improvement intervals,
    performance-profile bands)."""
    bootstrap_seed: int = 0
    """Seed of the bootstrap's generator (each statistic starts from it afresh)."""
    backend: Literal["local", "ray"] = "local"
    """Where the episodes run: "local" (this process, or ``workers`` spawned processes) or "ray"
    (Ray actors, each an episode runner with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs,
    as many as the cluster fits; needs the ``ray`` extra). The records are the same either way."""
    ray_address: str | None = None
    """The Ray cluster to join (``ray.init(address=...)``: "HOST:PORT", "ray://HOST:PORT" or "auto");
    None: the Ray session this process already has, else a new local cluster on this machine."""
    cpus_per_trial: float = 1.0
    """CPUs each Ray actor declares (and its torch threads, at least 1)."""
    gpus_per_trial: float = 0.0
    """GPUs each Ray actor declares (fractions share a GPU); the env's ``device`` keyword says where
    the model runs (``"cuda"`` inside an actor is the GPU Ray assigned to it)."""
    num_envs: int = 1
    """N: the episodes (seeds × instances) of one policy run N at a time as the runs of one batched
    vector env (``gymnasium.make_vec(env_id, num_envs=N, vectorization_mode="vector_entry_point")``),
    each run with its own copy of the policy; every worker process or Ray actor runs such batches.
    Run i's episode is the single env's episode of the same (policy, seed, instance), so the records
    do not depend on N (up to the floating-point order of a different ``executor``). 1 = one episode
    at a time on the single env. With ``robustness`` or a ``record`` folder, or an env without a
    vector entry point, the episodes run one at a time on the single env whatever N is."""
    executor: Literal["auto", "vmap", "loop", "graph"] = "auto"
    """How the batched engine maps its update over the N runs: "loop", "vmap", "graph" (the vmapped
    update captured as one CUDA graph; CUDA only, SISS and hybrid envs) or "auto" (vmap on CUDA, loop
    on the CPU)."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not self.instances:
            raise ValueError("instances must not be empty (use (None,) for the whole forget set)")
        if self.samples_per_label < 0 or self.ddim_steps < 1:
            raise ValueError(
                f"samples_per_label must be >= 0 and ddim_steps >= 1, got {self.samples_per_label} and {self.ddim_steps}"
            )
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if isinstance(self.num_envs, bool) or not isinstance(self.num_envs, int) or self.num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {self.num_envs!r}")
        if self.executor not in ("auto", "vmap", "loop", "graph"):
            raise ValueError(f"executor must be 'auto', 'vmap', 'loop' or 'graph', got {self.executor!r}")
        if self.contaminated_label_samples is not None and self.contaminated_label_samples < 1:
            raise ValueError(f"contaminated_label_samples must be None or >= 1, got {self.contaminated_label_samples}")
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in self.curve_steps):
            raise ValueError(f"curve_steps must be ints >= 1 (steps of the episode), got {self.curve_steps!r}")
        if self.metrics not in ("basic", "full"):
            raise ValueError(f"metrics must be 'basic' or 'full', got {self.metrics!r}")
        if self.bootstrap_reps < 1:
            raise ValueError(f"bootstrap_reps must be >= 1, got {self.bootstrap_reps}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}")
        if not self.cpus_per_trial > 0 or not self.gpus_per_trial >= 0:
            raise ValueError(
                f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {self.cpus_per_trial} and {self.gpus_per_trial}"
            )
        if self.backend == "ray" and self.robustness:
            raise ValueError("backend 'ray' does not run the robustness attacks; use backend 'local' with robustness")
