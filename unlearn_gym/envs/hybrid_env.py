"""``unlearn_gym/Hybrid-v0``: one SISS + SFD-alignment update of the diffusion model per step."""

from __future__ import annotations

from dataclasses import dataclass

from .siss_env import SISSEnv, SISSEnvConfig

__all__ = ["HybridEnv", "HybridEnvConfig"]


@dataclass(frozen=True)
class HybridEnvConfig(SISSEnvConfig):
    """SISS-v0's settings plus the hybrid's (each is a keyword of ``gymnasium.make``)."""

    siss_lambda: float = 0.5
    """λ_S: SISS's own mixture weight inside the hybrid."""
    align_weight: float = 1.0
    """w of the alignment term ℓ_align."""
    target_classes: tuple[int, ...] | None = None
    """Labels whose teacher scores the forget label is aligned to (uniform mixture). None: every
    label except the contaminated one and the contaminant's class."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.objective != "siss":
            raise ValueError(f"Hybrid-v0 builds on SISS: objective must be 'siss', got {self.objective!r}")
        if not 0.0 <= self.siss_lambda <= 1.0:
            raise ValueError(f"siss_lambda must be in [0, 1], got {self.siss_lambda}")
        if self.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {self.align_weight}")


class HybridEnv(SISSEnv):
    """SISS's data-driven update joined with SFD's score alignment; λ balances them.

    ## Description

    As SISS-v0, but each update follows g = 2(1 − λ)·g_S + 2λ·w·∇ℓ_align: g_S is SISS's
    direction (at its own mixture weight λ_S = ``siss_lambda``, with its surgery), and
    ℓ_align = mean Σ_pixels (ε_θ(a_t, t, y_a) − sg(mean_k ε_φ(a_t, t, k)))² aligns the forget label's
    score on the noised forget images to the frozen teacher's scores of the target classes (SFD's
    alignment, without its generator). See :mod:`unlearn_gym.objectives.hybrid`.

    ## Action Space

    As SISS-v0: "mixture" (k = 1) sets the balance λ; "forget-strength" scales SISS's S; "both".

    ## Observation Space

    ``Box(-obs_clip, obs_clip, (6,), float32)``: [log ℓ_x/ℓ_x⁰, log ℓ_align/ℓ_align⁰,
    log ‖g_S‖/‖g_S⁰‖, log ‖∇ℓ_align‖/‖∇ℓ_align⁰‖, λ_{t−1}, t/T].

    ## Rewards, Starting State, Episode End

    As SISS-v0 (probe-based efficacy and degradation, increments).

    ## Arguments

    The fields of :class:`HybridEnvConfig`.

    ## Version History

    - v0: initial version.
    """

    config_class = HybridEnvConfig
    FEATURE_STATS = ("loss_r", "loss_align", "grad_siss_norm", "grad_align_norm")

    def _make_engine(self, unet, model_config: dict, device: str, num_runs: int = 1, executor: str = "auto"):
        from ..engines import HybridEngine
        from ..objectives.hybrid import HybridConfig

        self._load_scenario(model_config)
        cfg, scen = self.config, self.scenario
        targets = cfg.target_classes
        if targets is None:
            excluded = {scen.contaminated_label, scen.contaminant_class}
            targets = tuple(c for c in range(scen.num_labels) if c not in excluded)
        bad = [c for c in targets if not 0 <= c < scen.num_labels]
        if bad or not targets:
            raise ValueError(f"target_classes must be labels in [0, {scen.num_labels}), got {targets}")
        self.target_classes = tuple(int(c) for c in targets)
        return HybridEngine(
            unet,
            scen.retain,
            scen.forget,
            hybrid=HybridConfig(siss=self._siss_config(), siss_lambda=cfg.siss_lambda, align_weight=cfg.align_weight),
            target_classes=self.target_classes,
            device=device,
            probe_size=cfg.probe_size,
            dataset_size=len(scen.retain) + len(scen.forget),
            scheduler_config=model_config.get("scheduler"),
            num_runs=num_runs,
            executor=executor,
        )
