"""The robustness attacks of ``bench --robustness`` on each episode's unlearned model.

Membership inference and relearning (:mod:`unlearn_gym.metrics.robustness`) of the env's current
model, with the pretrained model's figures as the reference, and the same attacks on the model
retrained without the forget set where there is one: how fast a model that never saw the forget set
*learns* it from the relearning attack's few images, against which an unlearned model's speed tells
relearning (faster: the concept was hidden, not removed) from learning (as fast).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .config import BenchConfig

__all__ = ["robustness_runner"]


def robustness_runner(
    base, config: BenchConfig, log: Callable[[str], None], retrained_dir: Path | None = None
) -> tuple[Callable[[], dict], dict, dict | None]:
    """(attack the env's current model → :func:`~unlearn_gym.metrics.robustness.robustness_figures`,
    the pretrained model's membership figures and forget-rate level, the retrained model's summary
    figures or None) of the unwrapped single env ``base``. Call right after a reset.

    ``retrained_dir``: the model retrained without the forget set; it is attacked once, like an
    unlearned model (its relearning measured against the pretrained level, so its "steps to half"
    is the time to *learn* the concept to half the pretrained rate)."""
    from ..assets import bundled_model_dir
    from ..data.scenarios import scenario_of_checkpoint
    from ..metrics.classifier import classifier_dir_for, load_classifier
    from ..metrics.membership import membership_inference
    from ..metrics.relearn import sampled_forget_rate
    from ..metrics.robustness import RobustnessConfig, robustness_figures, summary_figures
    from ..models.checkpoint import load_model_config

    checkpoint = Path(base.config.checkpoint) if base.config.checkpoint else bundled_model_dir()
    model_config = load_model_config(checkpoint)
    classifier = load_classifier(classifier_dir_for(checkpoint, model_config, config.classifier), base.device)
    scenario = base.scenario or scenario_of_checkpoint(model_config)
    rcfg = config.robustness_config or RobustnessConfig()
    kw = dict(scheduler_config=model_config.get("scheduler"), sampler=base.sampler)
    t0 = time.perf_counter()
    level = sampled_forget_rate(base.unlearned_model(), classifier, scenario, rcfg.relearn, **kw)["forget_rate"]
    mia = membership_inference(
        base.unlearned_model(), scenario, rcfg.membership, scheduler_config=kw["scheduler_config"], progress=False
    )
    pretrained = summary_figures({"membership": mia.to_dict()}) | {"relearn_level": level}
    log(
        f"pretrained: MIA forget AUC {mia.forget.auc:.3f}, retain AUC {mia.retain.auc:.3f}; forget rate "
        f"{level:.3f} from {rcfg.relearn.samples} label-{scenario.contaminated_label} samples "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    def attack(unet) -> dict:
        return robustness_figures(unet, scenario, classifier, rcfg, pretrained_forget_rate=level, progress=False, **kw)

    retrained = None
    if retrained_dir is not None:
        from ..models.checkpoint import load_model

        t0 = time.perf_counter()
        retrained = attack(load_model(retrained_dir, base.device)[0])["summary"]
        log(f"retrained without the forget set: attacked ({time.perf_counter() - t0:.1f} s)")
    return lambda: attack(base.unlearned_model()), pretrained, retrained
