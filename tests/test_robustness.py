"""Membership inference and relearning (metrics/membership*.py, relearn.py, robustness.py): CPU, tiny models."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearn_gym.data.scenarios import Scenario
from unlearn_gym.metrics import membership, relearn
from unlearn_gym.metrics.classifier import Classifier
from unlearn_gym.metrics.membership import MembershipConfig, denoising_losses, membership_inference, secmi_errors
from unlearn_gym.metrics.membership_stats import attack_figures, bootstrap_interval, roc_auc, tpr_at_fpr
from unlearn_gym.metrics.relearn import RelearnConfig, relearning
from unlearn_gym.metrics.robustness import ROBUSTNESS_METRICS, RobustnessConfig, robustness_figures
from unlearn_gym.models.unet import make_unet, noise_schedule
from unlearn_gym.objectives.common import forward_noise


@pytest.fixture(autouse=True)
def _one_thread():
    """Leave the machine's other core to concurrent work."""
    torch.set_num_threads(1)
    yield


def _unet(seed: int = 0, **overrides) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_unet("tiny", **overrides)


def _classifier(num_classes: int = 10) -> Classifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Classifier(num_classes).eval()


# -- the statistics, on hand-made scores ---------------------------------------------------------


def test_auc_counts_ties_half_on_a_hand_made_case():
    # pairs (member, non-member): 3>2, 3>0, 2=2 (½), 2>0, 1<2, 1>0 → 4.5 of 6
    assert roc_auc([3.0, 2.0, 1.0], [2.0, 0.0]) == 0.75
    assert roc_auc([5.0, 6.0], [1.0, 2.0, 3.0]) == 1.0
    assert roc_auc([1.0, 2.0], [5.0, 6.0]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.5, 1, 40).round(1), rng.normal(0, 1, 30).round(1)  # rounded: many ties
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in m for b in n])
    assert roc_auc(m, n) == pytest.approx(brute, abs=1e-12)


def test_tpr_at_1_percent_fpr_is_exact_on_a_hand_made_score_vector():
    non = np.arange(100.0)  # 0, 1, …, 99: k = ⌊0.01·100⌋ = 1 false positive allowed → τ = 98
    members = [98.5, 99.5, 97.0, 120.0, 50.0, 98.0]  # above 98: 98.5, 99.5, 120 (98 itself is not)
    assert tpr_at_fpr(members, non, 0.01) == 0.5
    assert (non > 98).mean() == 0.01  # the FPR at that threshold
    # fewer than 100 non-members: no false positive allowed, τ = the highest non-member score
    assert tpr_at_fpr([49.5, 48.0, 60.0, 10.0], np.arange(50.0), 0.01) == 0.5
    # ties at the threshold: two non-members at 2.0 and k = 1 → τ must be 2.0 (τ = 1 would let 2 through)
    non_ties = np.array([2.0, 2.0] + [1.0] * 98)
    assert tpr_at_fpr([1.5, 2.5, 3.0, 2.0], non_ties, 0.01) == 0.5
    assert tpr_at_fpr([1.5, 2.5], non_ties, 0.0) == 0.5
    assert tpr_at_fpr([1.5, 2.5], non_ties, 0.5) == 1.0  # k = 50 → τ = 1.0


def test_statistics_reject_bad_input():
    with pytest.raises(ValueError, match=r"fpr must be in \[0, 1\), got 1.0"):
        tpr_at_fpr([1.0], [0.0], 1.0)
    with pytest.raises(ValueError, match="at least one member and one non-member score, got 0 and 2"):
        roc_auc([], [0.0, 1.0])
    with pytest.raises(ValueError, match="expected finite scores"):
        roc_auc([float("nan")], [0.0])
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="resamples must be >= 1, got 0"):
        bootstrap_interval([1.0], [0.0], roc_auc, resamples=0, rng=rng)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.5"):
        bootstrap_interval([1.0], [0.0], roc_auc, confidence=1.5, rng=rng)


def test_bootstrap_intervals_are_seeded_and_cover_the_estimate():
    rng = np.random.default_rng(1)
    m, n = rng.normal(1.0, 1.0, 60), rng.normal(0.0, 1.0, 60)
    a = attack_figures(m, n, resamples=300, rng=np.random.default_rng(7))
    b = attack_figures(m, n, resamples=300, rng=np.random.default_rng(7))
    assert a.to_dict() == b.to_dict()
    assert a.auc_ci[0] < a.auc < a.auc_ci[1] and a.tpr_ci[0] <= a.tpr <= a.tpr_ci[1]
    assert 0.6 < a.auc < 0.9 and a.n_members == a.n_nonmembers == 60
    # perfectly separated: every resample gives 1
    c = attack_figures([5.0, 6.0, 7.0], [1.0, 2.0], resamples=50, rng=np.random.default_rng(0))
    assert c.auc == c.tpr == 1.0 and c.auc_ci == (1.0, 1.0)
    # a diverged model: NaN figures, not a crash
    d = attack_figures([float("nan"), 1.0], [0.0], resamples=5, rng=np.random.default_rng(0)).to_dict()
    assert d["auc"] is None and d["tpr"] is None and d["n_members"] == 2


def test_configs_reject_bad_settings():
    with pytest.raises(ValueError, match="MembershipConfig.num_samples must be >= 1, got 0"):
        MembershipConfig(num_samples=0)
    with pytest.raises(ValueError, match="MembershipConfig.attack must be 'loss' or 'secmi', got 'pia'"):
        MembershipConfig(attack="pia")
    with pytest.raises(ValueError, match="secmi_t must be a positive multiple of secmi_interval=10, got 95"):
        MembershipConfig(secmi_t=95)
    with pytest.raises(ValueError, match=r"MembershipConfig.fpr must be in \[0, 1\), got 1"):
        MembershipConfig(fpr=1)
    with pytest.raises(ValueError, match="RelearnConfig.forget_per_batch must be <= batch_size=4, got 5"):
        RelearnConfig(batch_size=4, forget_per_batch=5)
    with pytest.raises(ValueError, match="RelearnConfig.eval_every must be >= 1, got 0"):
        RelearnConfig(eval_every=0)
    with pytest.raises(ValueError, match=r"RelearnConfig.modes must be distinct entries of \('retain', 'mixed'\)"):
        RelearnConfig(modes=("retain", "benign"))
    with pytest.raises(ValueError, match=r"RelearnConfig.lr must be > 0, got 0.0"):
        RelearnConfig(lr=0.0)
    unet, x = _unet(), torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 1000\), got \(1000,\)"):
        denoising_losses(unet, x, torch.zeros(2, dtype=torch.long), timesteps=(1000,), noises=torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"noises: expected shape \(2, 1, 28, 28\), got \(1, 1, 28, 28\)"):
        denoising_losses(unet, x, torch.zeros(2, dtype=torch.long), timesteps=(1, 2), noises=torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="t must be a positive multiple of interval=10 below 990, got 995"):
        secmi_errors(unet, x, torch.zeros(2, dtype=torch.long), t=995)


# -- membership inference on models --------------------------------------------------------------


def _label_matched(scenario, offset: int, per_label: int, labels=(0, 1, 2, 3)):
    """``per_label`` retain images of each label, starting at ``offset`` within each label."""
    idx = []
    for y in labels:
        idx += torch.nonzero(scenario.retain.labels == y).flatten()[offset : offset + per_label].tolist()
    return scenario.retain.subset(torch.tensor(idx))


@pytest.mark.slow
def test_a_model_fine_tuned_hard_on_16_images_gives_them_away(default_scenario):
    """Members stand out (AUC well above 0.5) and two unseen sets do not (AUC near 0.5).

    An (8, 16, 16) UNet trained from scratch for 300 steps (lr 2e-3, full batches of the 16 images)
    with t drawn from the attack's band [150, 300], so that it memorises them within a CPU test's
    time; the attack then queries t = 150, 225, 300 with noises it never trained on.
    """
    members = _label_matched(default_scenario, 0, 4)  # 16 images, labels 0–3
    unseen_same_kind = _label_matched(default_scenario, 4, 4)  # 16 others, same labels
    unseen_a, unseen_b = _label_matched(default_scenario, 8, 16), _label_matched(default_scenario, 24, 16)
    unet = _unet(0, block_out_channels=(8, 16, 16))
    sched = noise_schedule()
    gamma, sigma = sched.gamma.float(), sched.sigma.float()
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    x0, y = members.images, members.labels
    for _ in range(300):
        t = torch.randint(150, 301, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = forward_noise(x0, t, eps, gamma, sigma)
        loss = F.mse_loss(unet(x_t, t, class_labels=y).sample, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # forget pair: the 16 trained images vs 16 unseen ones; retain pair: 64 unseen vs 64 unseen
    scenario = Scenario(
        name="memorised",
        retain=unseen_a,
        forget=members,
        retain_heldout=unseen_b,
        forget_heldout=unseen_same_kind,
        num_labels=10,
        class_names=default_scenario.class_names,
        contaminated_label=1,
        contaminant_class=7,
    )
    config = MembershipConfig(timesteps=(150, 225, 300), noises_per_timestep=4, bootstrap=300)
    result = membership_inference(unet, scenario, config, progress=False)
    assert result.forget.n_members == result.forget.n_nonmembers == 16
    assert result.retain.n_members == result.retain.n_nonmembers == 64
    assert result.forget.auc > 0.85 and result.forget.auc_ci[0] > 0.6
    assert result.forget.tpr > 0.5  # at 16 non-members: members above every unseen image
    assert abs(result.retain.auc - 0.5) < 0.2  # two unseen sets: ~N(0.5, 0.05)
    assert result.retain.auc_ci[0] < 0.5 < result.retain.auc_ci[1]


def test_membership_inference_is_seeded_with_equal_label_matched_counts(default_scenario):
    unet = _unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    config = MembershipConfig(num_samples=12, timesteps=(100, 300), noises_per_timestep=1, bootstrap=50)
    a = membership_inference(unet, default_scenario, config, progress=False)
    b = membership_inference(unet, default_scenario, config, progress=False)
    assert a.to_dict() | {"seconds": 0} == b.to_dict() | {"seconds": 0}
    np.testing.assert_array_equal(a.forget.member_scores, b.forget.member_scores)
    n_forget = min(12, len(default_scenario.forget_heldout))
    assert a.forget.n_members == a.forget.n_nonmembers == n_forget
    assert a.retain.n_members == a.retain.n_nonmembers == 12
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    assert unet.training  # mode restored
    # another seed: other subsamples and noises
    c = membership_inference(unet, default_scenario, dataclasses.replace(config, seed=1), progress=False)
    assert not np.array_equal(c.retain.member_scores, a.retain.member_scores)
    # the noises are shared by every image: the same image scores the same in either role
    x, y = default_scenario.retain.images[:3], default_scenario.retain.labels[:3]
    s_all = membership.membership_scores(unet, x, y, config)
    s_one = membership.membership_scores(unet, x[1:2], y[1:2], config)
    assert s_all[1] == pytest.approx(s_one[0], rel=1e-5)
    # SecMI's t-error: deterministic, finite
    secmi = MembershipConfig(num_samples=4, attack="secmi", secmi_t=20, secmi_interval=10, bootstrap=20)
    s = membership_inference(unet, default_scenario, secmi, progress=False)
    assert s.forget.n_members == 4 and math.isfinite(s.forget.auc)
    assert (
        s.to_dict()["forget"] == membership_inference(unet, default_scenario, secmi, progress=False).to_dict()["forget"]
    )


def test_retain_members_match_the_non_members_label_counts():
    rng = np.random.default_rng(0)
    member_labels = np.repeat(np.arange(5), 20)
    nonmember_labels = np.array([0, 0, 1, 3, 3, 3, 4])
    mi, ni = membership._matched_indices(member_labels, nonmember_labels, 5, rng)
    assert len(mi) == len(ni) == 5
    assert sorted(member_labels[mi]) == sorted(nonmember_labels[ni])
    # too few members of a label: topped up at random, still equal counts and no repeats
    mi, ni = membership._matched_indices(np.array([0, 1, 1, 1]), np.array([0, 0, 0]), 3, rng)
    assert len(set(mi.tolist())) == 3 and len(ni) == 3


# -- relearning ----------------------------------------------------------------------------------


def _checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_relearning_is_seeded_leaves_the_model_alone_and_evaluates_the_fine_tuned_copy(default_scenario, monkeypatch):
    unet, classifier = _unet(), _classifier()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    config = RelearnConfig(
        steps=3, eval_every=2, batch_size=4, forget_images=3, forget_per_batch=2, samples=2, ddim_steps=1, lr=1e-3
    )
    # record every model that gets evaluated, and report its weights' checksum as its "forget rate"
    seen: list[tuple[int, float]] = []
    real = relearn.evaluate_model

    def spy(model, clf, **kw):
        ev = real(model, clf, **kw)
        assert kw["only_labels"] == (default_scenario.contaminated_label,) and len(ev.labels) == 2
        seen.append((id(model), _checksum(model)))
        ev.figures["forget_rate"] = _checksum(model)
        return ev

    monkeypatch.setattr(relearn, "evaluate_model", spy)
    a = relearning(unet, default_scenario, classifier, config, pretrained_forget_rate=0.4, progress=False)
    # 1. the caller's model is untouched (weights and mode)
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items()) and unet.training
    # 2. step 0 is the model as given; later points are fine-tuned copies, evaluated afresh
    assert seen[0] == (id(unet), _checksum(unet)) and len(seen) == 1 + 2 * 2
    for mode, rows in zip(("retain", "mixed"), (seen[1:3], seen[3:5])):
        curve = a.curves[mode]
        assert curve.steps == (0, 2, 3)
        assert curve.forget_rates == (seen[0][1], rows[0][1], rows[1][1])
        assert all(model_id != id(unet) for model_id, _ in rows)
        assert len({seen[0][1], rows[0][1], rows[1][1]}) == 3  # the weights change at every evaluation
        assert math.isnan(curve.losses[0]) and all(math.isfinite(x) for x in curve.losses[1:])
    assert a.curves["retain"].forget_rates[1:] != a.curves["mixed"].forget_rates[1:]  # forget images change it
    assert len(a.forget_indices) == 3 and a.pretrained_forget_rate == 0.4
    # 3. the same seed gives the same run
    seen.clear()
    b = relearning(unet, default_scenario, classifier, config, pretrained_forget_rate=0.4, progress=False)
    assert a.to_dict() | {"seconds": 0} == b.to_dict() | {"seconds": 0}


def test_steps_to_half_is_the_first_evaluation_at_half_the_pretrained_level(default_scenario, monkeypatch):
    scripted = iter([0.0, 0.1, 0.25, 0.3])
    real = relearn.evaluate_model

    def scripted_rates(model, clf, **kw):
        ev = real(model, clf, **kw)
        ev.figures["forget_rate"] = next(scripted)
        return ev

    monkeypatch.setattr(relearn, "evaluate_model", scripted_rates)
    config = RelearnConfig(steps=3, eval_every=1, batch_size=2, forget_per_batch=1, samples=1, ddim_steps=1)
    config = dataclasses.replace(config, modes=("mixed",))
    res = relearning(_unet(), default_scenario, _classifier(), config, pretrained_forget_rate=0.4, progress=False)
    curve = res.curves["mixed"]
    assert curve.forget_rates == (0.0, 0.1, 0.25, 0.3) and curve.half_level == 0.2
    assert curve.steps_to_half == 2 and curve.final_forget_rate == 0.3
    assert list(res.to_dict()["curves"]) == ["mixed"]
    # not within K: None; a pretrained level of 0 leaves nothing to regain: None as well
    scripted = iter([0.0, 0.1, 0.25, 0.3, 0.0, 0.1, 0.25, 0.3])
    res = relearning(_unet(), default_scenario, _classifier(), config, pretrained_forget_rate=0.8, progress=False)
    assert res.curves["mixed"].half_level == 0.4 and res.curves["mixed"].steps_to_half is None
    res = relearning(_unet(), default_scenario, _classifier(), config, pretrained_forget_rate=0.0, progress=False)
    assert res.curves["mixed"].half_level is None and res.curves["mixed"].steps_to_half is None


def test_relearning_without_a_level_and_the_summary_keys(default_scenario):
    config = RobustnessConfig(
        membership=MembershipConfig(num_samples=3, timesteps=(100,), noises_per_timestep=1, bootstrap=10),
        relearn=RelearnConfig(steps=1, eval_every=1, batch_size=2, forget_per_batch=1, samples=1, ddim_steps=1),
    )
    fig = robustness_figures(_unet(), default_scenario, _classifier(), config, progress=False)
    assert set(fig) == {"membership", "relearn", "summary", "seconds"}
    assert list(fig["summary"]) == list(ROBUSTNESS_METRICS)
    assert fig["summary"]["relearn_mixed_steps_to_half"] is None  # no pretrained level given
    assert fig["relearn"]["curves"]["retain"]["half_level"] is None
    assert fig["membership"]["forget"]["n_members"] == 3
    import json

    json.dumps(fig)  # JSON-able as it is
