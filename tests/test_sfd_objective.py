import copy
import dataclasses

import numpy as np
import pytest
import torch

from unlearn_gym.models.unet import make_unet, noise_schedule
from unlearn_gym.objectives.sfd import (
    SFDConfig,
    draw_sfd_batch,
    fake_score_loss,
    generator_sample,
    sfd_generator_step,
    sid_loss,
    teacher_eps,
)

CFG = SFDConfig(batch_size=3)


def _nets(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theta = make_unet("tiny").double()
        teacher = copy.deepcopy(theta)
        psi = copy.deepcopy(theta)
        for p in list(teacher.parameters()) + list(psi.parameters()):  # three different networks
            p.data.add_(0.01 * torch.randn_like(p))
    sched = noise_schedule()
    return theta, teacher, psi, sched.gamma, sched.sigma


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return draw_sfd_batch((1, 28, 28), torch.tensor([0, 2, 3]), 1, CFG, g, "cpu", torch.float64)


def test_generator_is_the_one_step_x0_prediction_at_t_star():
    theta, _, _, gamma, sigma = _nets()
    b = _batch()
    params = dict(theta.named_parameters())
    x = generator_sample(theta, params, b.z_remain, b.c_remain, gamma, sigma, 440)
    abar = gamma[440] ** 2
    x_in = sigma[440] * b.z_remain
    eps = theta(x_in, torch.full((3,), 440), class_labels=b.c_remain).sample
    torch.testing.assert_close(x, x_in / gamma[440] - torch.sqrt(1 / abar - 1) * eps, rtol=1e-12, atol=1e-12)


def test_sid_loss_hand_computed_case():
    # one sample, two pixels; γ = 0.5, σ = 0.8, α = 1.2
    x_g = torch.tensor([[0.2, -0.4]])
    x_t = torch.tensor([[0.3, 0.1]])
    e_phi = torch.tensor([[0.5, -0.5]])
    e_psi = torch.tensor([[0.25, 0.0]])
    x_phi = (x_t - 0.8 * e_phi) / 0.5  # [-0.2, 0.9]
    x_psi = (x_t - 0.8 * e_psi) / 0.5  # [0.2, 0.2]
    assert torch.allclose(x_phi, torch.tensor([[-0.2, 1.0]])) and torch.allclose(x_psi, torch.tensor([[0.2, 0.2]]))
    # ω = mean|x̂_φ − x_g| = (0.4 + 1.4)/2 = 0.9; d = x̂_φ − x̂_ψ = [−0.4, 0.8]
    # ℓ = Σ d·((x̂_φ − x_g) − 1.2·d) / ω = (−0.4·(−0.4 + 0.48) + 0.8·(1.4 − 0.96))/0.9 = 0.32/0.9
    ell = sid_loss(x_g, x_t, e_phi, e_psi, torch.tensor(0.5), torch.tensor(0.8), 1.2, 1e-5)
    assert ell.item() == pytest.approx(0.32 / 0.9, rel=1e-6)


def test_teacher_mixture_is_the_weighted_sum_of_class_scores():
    _, teacher, _, gamma, sigma = _nets()
    params = dict(teacher.named_parameters())
    b = _batch()
    x_t, t = b.eps_theta[:3], b.t_theta[:3]
    classes, w = torch.tensor([0, 2, 3]), torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mix = teacher_eps(teacher, params, x_t, t, (classes, w))
    ref = sum(wk * teacher(x_t, t, class_labels=torch.full((3,), int(k))).sample for k, wk in zip(classes, w))
    torch.testing.assert_close(mix, ref, rtol=1e-10, atol=1e-12)
    one_hot = teacher_eps(teacher, params, x_t, t, (classes, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)))
    torch.testing.assert_close(one_hot, teacher_eps(teacher, params, x_t, t, torch.full((3,), 2)))


def _reference_loss(theta, teacher, psi, b, lam, gamma, sigma, target):
    """L_θ written out plainly, per sample (DESIGN §8)."""
    total_r, total_f = [], []
    for i in range(3):
        for half, z, c in (("r", b.z_remain[i], b.c_remain[i]), ("f", b.z_forget[i], b.c_forget[i])):
            j = i if half == "r" else 3 + i
            x_in = sigma[440] * z[None]
            x_g = (x_in - sigma[440] * theta(x_in, torch.tensor([440]), class_labels=c[None]).sample) / gamma[440]
            t, eps = b.t_theta[j : j + 1], b.eps_theta[j : j + 1]
            x_t = gamma[t] * x_g + sigma[t] * eps
            c_p = c[None] if half == "r" else target[i : i + 1]
            x_phi = (x_t - sigma[t] * teacher(x_t, t, class_labels=c_p).sample) / gamma[t]
            x_psi = (x_t - sigma[t] * psi(x_t, t, class_labels=c[None]).sample) / gamma[t]
            omega = (x_phi - x_g).abs().mean().detach()
            d = x_phi - x_psi
            ell = (d * ((x_phi - x_g) - 1.2 * d)).sum() / omega
            (total_r if half == "r" else total_f).append(ell)
    lr, lf = torch.stack(total_r).mean(), torch.stack(total_f).mean()
    return 2 * (1 - lam) * 1.0 * lr + 2 * lam * 0.01 * lf, lr, lf


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_generator_step_matches_a_float64_reference(lam):
    theta, teacher, psi, gamma, sigma = _nets()
    b = _batch()
    target = torch.full((3,), 3)  # override class c_o = 3
    tp = dict(theta.named_parameters())
    res = sfd_generator_step(
        theta, tp, dict(teacher.named_parameters()), dict(psi.named_parameters()), b, lam, gamma, sigma, CFG, target
    )
    ref, lr, lf = _reference_loss(theta, teacher, psi, b, lam, gamma, sigma, target)
    torch.testing.assert_close(res.loss_remain, lr.detach(), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(res.loss_forget, lf.detach(), rtol=1e-9, atol=1e-10)
    grads = torch.autograd.grad(ref, list(tp.values()), allow_unused=True)
    for g, r in zip(res.grads, grads):
        torch.testing.assert_close(g, torch.zeros_like(g) if r is None else r, rtol=1e-7, atol=1e-10)
    # L_θ is linear in λ: ∂L/∂λ = 2(w_f·ℓ_f − w_r·ℓ_r)
    torch.testing.assert_close(res.dloss_dlam, (2 * (0.01 * lf - lr)).detach(), rtol=1e-9, atol=1e-10)


def test_fake_score_loss_is_the_weighted_denoising_loss():
    theta, _, psi, gamma, sigma = _nets()
    b = _batch()
    pp = dict(psi.named_parameters())
    x_r, x_f = b.z_remain * 0.5, b.z_forget * 0.5  # any detached images
    loss, remain, forget = fake_score_loss(psi, pp, x_r, b.c_remain, x_f, b.c_forget, b, gamma, sigma, CFG)
    t, eps = b.t_psi, b.eps_psi
    x = torch.cat([x_r, x_f])
    c = torch.cat([b.c_remain, b.c_forget])
    err = [((psi((gamma[t[i]] * x[i] + sigma[t[i]] * eps[i])[None], t[i : i + 1], class_labels=c[i : i + 1]).sample - eps[i]) ** 2).sum() for i in range(6)]  # fmt: skip
    torch.testing.assert_close(remain, torch.stack(err[:3]).mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, torch.stack(err[:3]).mean() + 0.01 * torch.stack(err[3:]).mean())


def test_vmapped_gradients_equal_the_eager_ones_in_float64(one_thread):
    """Both gradients (ψ step, θ step) under ``vmap`` over two stacked runs equal the eager per-run ones."""
    from torch.func import stack_module_state, vmap

    from unlearn_gym.engines import math_attention
    from unlearn_gym.objectives.sfd import SFDBatch, fake_score_step

    theta, teacher, psi, gamma, sigma = _nets()
    theta2 = copy.deepcopy(theta)
    with torch.no_grad():
        for p in theta2.parameters():
            p.add_(0.01 * torch.sign(p))
    thetas, _ = stack_module_state([theta, theta2])
    psis, _ = stack_module_state([psi, psi])
    tp = {k: v.detach() for k, v in teacher.named_parameters()}
    batches = [_batch(0), _batch(1)]
    fields = [f for f in SFDBatch.__dataclass_fields__]
    stacked = tuple(torch.stack([getattr(b, f) for b in batches]) for f in fields)
    lams = torch.tensor([0.25, 0.75], dtype=torch.float64)
    classes, w = torch.tensor([0, 2, 3]), torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]], dtype=torch.float64)
    thetas, psis = {k: v.detach() for k, v in thetas.items()}, {k: v.detach() for k, v in psis.items()}

    def run(th, ps, b, lam, wk):
        b = SFDBatch(*b)
        g_psi = fake_score_step(theta, th, ps, b, gamma, sigma, CFG).grads
        res = sfd_generator_step(theta, th, tp, ps, b, lam, gamma, sigma, CFG, (classes, wk))
        return g_psi, res.grads, torch.stack([res.loss_remain, res.loss_forget, res.dloss_dlam])

    with math_attention():  # as the engine runs vmap (DESIGN §11)
        g_psi_v, g_theta_v, stats_v = vmap(run)(thetas, psis, stacked, lams, w)
    for i in range(2):
        th = {k: v[i].clone().requires_grad_() for k, v in thetas.items()}
        ps = {k: v[i].clone().requires_grad_() for k, v in psis.items()}
        g_psi, g_theta, stats = run(th, ps, tuple(s[i] for s in stacked), lams[i], w[i])
        for a, b in zip(g_psi + g_theta, [g[i] for g in g_psi_v + g_theta_v]):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stats_v[i], stats.detach(), rtol=1e-12, atol=1e-12)


def _statistics(res) -> dict[str, float]:
    """name → value of every statistic of a step's result (its fields but the gradients)."""
    return {f.name: float(getattr(res, f.name)) for f in dataclasses.fields(res) if f.name != "grads"}


@pytest.mark.parametrize("executor", ["loop", "vmap"])
def test_the_engine_row_is_the_objectives_results_by_name(executor, one_thread):
    """One SFDEngine update's SFDStepStats against the two steps called directly on each run's batch
    and weights: every statistic of the ψ and θ steps' results arrives under its name,
    ``update_norm`` is ‖∇_θ L_θ‖; nothing else is in the row but the probe."""
    from unlearn_gym.engines import SFD_PROBE_STATS, SFD_STAT_NAMES, SFDEngine, SFDIterationResult
    from unlearn_gym.engines.run_axis import result_statistics
    from unlearn_gym.objectives.common import global_norm
    from unlearn_gym.objectives.sfd import fake_score_step

    assert {*result_statistics(SFDIterationResult), "update_norm", *SFD_PROBE_STATS} == set(SFD_STAT_NAMES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = make_unet("tiny")
        classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    cfg = SFDConfig(batch_size=2, lr=1e-3)
    eng = SFDEngine(unet, 1, (0, 2, 3), cfg, classifier=classifier, probe_size=1, num_runs=2, executor=executor)
    eng.seed([3, 4])
    eng.update([0.3, 0.6])  # away from θ = ψ = φ, where ℓ_remain and ‖g_r‖ are rounding noise
    theta = {name: p.clone() for name, p in eng.params.items()}
    psi = {name: p.clone() for name, p in eng.psi.items()}
    rng = [g.get_state() for g in eng.generators]
    lam, weights = [0.25, 0.75], np.array([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]], dtype=np.float32)
    stats = eng.update(lam, weights)
    for i in range(2):
        g = torch.Generator()
        g.set_state(rng[i])  # the same batch, from the generator's state before the update
        batch = draw_sfd_batch(eng.sample_shape, eng.remain_classes, eng.forget_class, cfg, g, "cpu")
        th = {name: p[i].clone().requires_grad_() for name, p in theta.items()}
        ps = {name: p[i].clone().requires_grad_() for name, p in psi.items()}
        psi_res = fake_score_step(unet, th, ps, batch, eng.gamma, eng.sigma, cfg)
        stepped_psi = {name: p[i] for name, p in eng.psi.items()}  # the θ step sees ψ after its step
        lam_t, target = torch.tensor(lam[i], dtype=torch.float64), (eng.remain_classes, torch.from_numpy(weights[i]))
        res = sfd_generator_step(
            unet, th, eng.teacher_params, stepped_psi, batch, lam_t, eng.gamma, eng.sigma, cfg, target
        )
        expected = {**_statistics(psi_res), **_statistics(res), "update_norm": float(global_norm(res.grads))}
        row = stats[i].as_dict()
        assert set(row) == {*expected, *SFD_PROBE_STATS}
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-5), name  # vmap: batched kernels, measured ≤ 4e-7
            if executor == "loop":  # the same operations: the same numbers
                assert row[name] == value, name
        assert all(0 < row[name] < 1 for name in SFD_PROBE_STATS)
