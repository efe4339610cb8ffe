"""The ``unlearn-gym`` command line: pretrain, train-classifier, evaluate, unlearn, train, bench, sweep, perf.

Progress bars and messages go to stderr; with ``--json`` stdout holds only one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: CUDA is not available here; use --device cpu or auto")
    return name


def _add_scenario_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scenario")
    g.add_argument("--scenario", default="default", choices=["default", "mislabelled-7s", "mnist-trousers", "npz"])
    g.add_argument("--contamination", type=float, default=0.3, help="share k/(n1+k) of label 1 that is contaminant")
    g.add_argument("--forget-size", type=int, default=None, help="number k of contaminants (overrides --contamination)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the scenario's shuffles and splits")
    g.add_argument(
        "--data-dir", default=None, help="mnist-trousers: folder with mnist_22k.npz and fashion_mnist_trousers.npz"
    )
    g.add_argument("--torchvision-root", default=None, help="mnist-trousers: torchvision MNIST/FashionMNIST root")
    g.add_argument("--download", action="store_true", help="let torchvision download into --torchvision-root")
    g.add_argument("--retain-npz", default=None, help="npz: retain set file")
    g.add_argument("--forget-npz", default=None, help="npz: forget set file")


def _scenario_kwargs(args: argparse.Namespace) -> dict:
    kw = {"contamination": args.contamination, "forget_size": args.forget_size, "seed": args.data_seed}
    for key in ("data_dir", "torchvision_root", "retain_npz", "forget_npz"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if args.download:
        kw["download"] = True
    return kw


def _load_scenario(args: argparse.Namespace):
    from ..data import ScenarioDataError, load_scenario

    kw = _scenario_kwargs(args)
    try:
        return load_scenario(args.scenario, **kw), kw
    except ScenarioDataError as e:
        raise SystemExit(f"error: {e}") from None


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# -- pretrain ------------------------------------------------------------------------------------


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ..models.pretrain import PretrainConfig, pretrain

    _set_threads(args.threads)
    scenario, kw = _load_scenario(args)
    print(f"scenario {scenario.name}: {scenario.sizes()}", file=sys.stderr)
    config = PretrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        retain_only=args.retain_only,
    )
    result = pretrain(
        scenario,
        args.out,
        preset=args.preset,
        config=config,
        device=_resolve_device(args.device),
        resume=not args.no_resume,
        scenario_args={"name": scenario.name, **{k: str(v) if isinstance(v, Path) else v for k, v in kw.items()}},
        progress=not args.no_progress,
    )
    summary = {
        "out": str(result.out),
        "step": result.step,
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "seconds": round(result.seconds, 1),
    }
    print(json.dumps(summary))
    return 0


# -- train-classifier ----------------------------------------------------------------------------


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from ..metrics.classifier import ClassifierTrainConfig, save_classifier, train_classifier

    _set_threads(args.threads)
    scenario, kw = _load_scenario(args)
    config = ClassifierTrainConfig(epochs=args.epochs, seed=args.seed)
    model, report = train_classifier(scenario, config, progress=not args.no_progress)
    save_classifier(
        model, args.out, {"scenario": {"name": scenario.name, **{k: str(v) for k, v in kw.items()}}, "report": report}
    )
    print(json.dumps({"out": args.out, **report}))
    return 0


# -- evaluate ------------------------------------------------------------------------------------


def _resolve_classifier_dir(checkpoint: Path, config: dict, explicit: str | None) -> Path:
    from ..metrics.classifier import classifier_dir_for

    try:
        return classifier_dir_for(checkpoint, config, explicit)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None


def _format_table(figures: dict) -> str:
    lines = [
        f"forget_rate                  {figures['forget_rate']:.3f}   (label-{figures['contaminated_label']} samples "
        f"classified as {figures['contaminant']!r}; lower = more forgotten)",
        f"retain_accuracy              {figures['retain_accuracy']:.3f}   (other labels classified as themselves)",
        f"contaminated_label_accuracy  {figures['contaminated_label_accuracy']:.3f}",
    ]
    if "erasure" in figures:  # an SFD generator
        e = figures["erasure"]
        lines += [
            f"unlearning_accuracy          {e['unlearning_accuracy']:.3f}   (1 − accuracy on the erased label {e['forget_class']})",
            f"remaining_accuracy           {e['remaining_accuracy']:.3f}   (the other labels)",
        ]
    lines += [
        "",
        "label |   n  | accuracy | classified as",
        "------+------+----------+--------------",
    ]
    for y, row in figures["per_label"].items():
        counts = ", ".join(f"{k}:{v}" for k, v in sorted(row["counts"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{y:>5} | {row['n']:>4} | {row['accuracy']:>8.3f} | {counts}")
    s = figures["seconds"]
    lines.append("")
    lines.append(
        f"{figures['samples_per_label']} samples per label, "
        + (f"{figures['ddim_steps']} DDIM steps" if figures.get("ddim_steps") else "the one-step generator")
        + f", seed {figures['seed']}; "
        f"{s['total']:.1f} s ({s['sampling']:.1f} s sampling)"
    )
    return "\n".join(lines)


def _evaluation_kwargs(config: dict, args: argparse.Namespace, *, seed: int, batch_size: int = 125) -> dict:
    """Keywords of :func:`~unlearn_gym.metrics.forget.evaluate_model` for a checkpoint's config and the CLI options."""
    scen = config["scenario"]
    return dict(
        num_labels=scen["num_labels"],
        contaminated_label=scen["contaminated_label"],
        contaminant_class=scen["contaminant_class"],
        samples_per_label=args.samples,
        num_inference_steps=args.ddim_steps,
        seed=seed,
        batch_size=batch_size,
        scheduler_config=config.get("scheduler"),
        progress=not args.no_progress,
        sampler=config.get("sampler"),
    )


EVALUATE_METRICS = ("basic", "full", "robustness")


def _parse_metrics(text: str) -> set[str]:
    """``--metrics``: a comma-separated subset of basic, full, robustness (basic is always computed)."""
    parts = {p.strip() for p in text.split(",") if p.strip()}
    if not parts or parts - set(EVALUATE_METRICS):
        raise SystemExit(
            f"error: --metrics: expected a comma-separated subset of {', '.join(EVALUATE_METRICS)} "
            f"(e.g. full,robustness), got {text!r}"
        )
    return parts


def _add_robustness_args(p: argparse.ArgumentParser, flag: str) -> None:
    g = p.add_argument_group(f"robustness (with {flag}): membership inference and relearning")
    g.add_argument("--mia-samples", type=int, default=64, help="members and non-members per pair of sets")
    g.add_argument("--mia-attack", default="loss", choices=["loss", "secmi"], help="denoising loss or SecMI t-error")
    g.add_argument("--mia-bootstrap", type=int, default=1000, help="bootstrap resamples of the 95%% intervals")
    g.add_argument("--relearn-steps", type=int, default=200, help="K: DDPM fine-tuning steps per mode")
    g.add_argument("--relearn-every", type=int, default=50, help="steps between forget-rate evaluations")
    g.add_argument("--relearn-lr", type=float, default=1e-4, help="AdamW learning rate of the fine-tuning")
    g.add_argument("--relearn-batch-size", type=int, default=16)
    g.add_argument("--relearn-forget-images", type=int, default=8, help="m: forget images of the 'mixed' mode")
    g.add_argument("--relearn-forget-per-batch", type=int, default=4, help="forget images in each 'mixed' batch")
    g.add_argument("--relearn-samples", type=int, default=50, help="contaminated-label samples per evaluation")


def _robustness_config(args: argparse.Namespace, *, ddim_steps: int, eval_seed: int):
    """A :class:`~unlearn_gym.metrics.robustness.RobustnessConfig` from the robustness options."""
    from ..metrics.robustness import MembershipConfig, RelearnConfig, RobustnessConfig

    try:
        return RobustnessConfig(
            membership=MembershipConfig(
                num_samples=args.mia_samples, attack=args.mia_attack, bootstrap=args.mia_bootstrap, seed=eval_seed
            ),
            relearn=RelearnConfig(
                steps=args.relearn_steps,
                eval_every=args.relearn_every,
                lr=args.relearn_lr,
                batch_size=args.relearn_batch_size,
                forget_images=args.relearn_forget_images,
                forget_per_batch=args.relearn_forget_per_batch,
                samples=args.relearn_samples,
                ddim_steps=ddim_steps,
                eval_seed=eval_seed,
            ),
        )
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def _format_robustness(rob: dict) -> str:
    mia, rel = rob["membership"], rob["relearn"]
    s = mia["settings"]
    lines = [f"membership inference ({s['attack']} attack; AUC 0.5 = chance):"]
    for part in ("forget", "retain"):
        a = mia[part]
        lines.append(
            f"  {part:6}  AUC {a['auc']:.3f} [{a['auc_ci95'][0]:.3f}, {a['auc_ci95'][1]:.3f}]   "
            f"TPR@{a['fpr']:.0%} FPR {a['tpr']:.3f} [{a['tpr_ci95'][0]:.3f}, {a['tpr_ci95'][1]:.3f}]   "
            f"({a['n_members']} members, {a['n_nonmembers']} non-members)"
        )
    level = rel["pretrained_forget_rate"]
    lines.append(
        f"relearning ({rel['settings']['steps']} steps; pretrained level "
        + ("not given: --pretrained DIR" if level is None else f"{level:.3f}")
        + "):"
    )
    for mode, c in rel["curves"].items():
        curve = " ".join(f"{r:.2f}@{st}" for st, r in zip(c["steps"], c["forget_rates"]))
        half = c["steps_to_half"]
        lines.append(
            f"  {mode:6}  forget rate after K {c['final_forget_rate']:.3f}; steps to half "
            f"{'–' if half is None else half}; curve {curve}"
        )
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Sample a model and report its forget rate and retain accuracy; optionally Table 1 and the attacks."""
    import torch
    from torchvision.utils import save_image

    from ..assets import bundled_model_dir
    from ..metrics.classifier import load_classifier
    from ..metrics.forget import evaluate_model
    from ..models.checkpoint import CheckpointError, load_model, write_json_atomic

    metrics = _parse_metrics(args.metrics)
    full, robust = "full" in metrics, "robustness" in metrics
    _set_threads(args.threads)
    device = _resolve_device(args.device)
    checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_model_dir()
    try:
        unet, config = load_model(checkpoint, device)
        classifier = load_classifier(_resolve_classifier_dir(checkpoint, config, args.classifier), device)
        others = [(Path(c), *load_model(c, device)) for c in args.compare]
        pretrained_dir = bundled_model_dir() if args.pretrained == "bundled" else args.pretrained
        pretrained = load_model(pretrained_dir, device)[0] if robust and pretrained_dir else None
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    robustness_config = _robustness_config(args, ddim_steps=args.ddim_steps, eval_seed=args.seed) if robust else None
    feature = logits_module = None
    if full and args.features == "inception":
        from ..metrics.fidelity import InceptionUnavailableError, inception_feature

        try:  # before any sampling: fail fast where the weights are absent
            feature = inception_feature(2048, weights_path=args.inception_weights, device=device)
            logits_module = inception_feature("logits_unbiased", weights_path=args.inception_weights, device=device)
        except InceptionUnavailableError as e:
            raise SystemExit(f"error: --features inception: {e}") from None
    scen = config["scenario"]
    eval_kw = _evaluation_kwargs(config, args, seed=args.seed, batch_size=args.batch_size)
    ev = evaluate_model(unet, classifier, **eval_kw)
    if config.get("sfd"):  # an SFD generator: how well its class erasure went
        from ..metrics.forget import erasure_figures

        ev.figures["erasure"] = erasure_figures(ev.figures["per_label"], config["sfd"]["forget_class"])
    figures = {
        "checkpoint": str(checkpoint),
        "scenario": scen["name"],
        "contaminated_label": scen["contaminated_label"],
        "contaminant": classifier.class_names[scen["contaminant_class"]],
        "device": device,
        **ev.figures,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # sample grid: one row per label, the first `columns` samples of each
    per, cols = args.samples, min(args.samples, 10)
    rows = torch.stack([ev.images[y * per : y * per + cols] for y in range(scen["num_labels"])])
    grid_path = out / "samples.png"
    save_image(rows.flatten(0, 1).cpu() * 0.5 + 0.5, grid_path, nrow=cols, padding=2, pad_value=0.5)
    figures["grid"] = str(grid_path)
    if full:
        from ..data.scenarios import ScenarioDataError, scenario_of_checkpoint
        from ..metrics.table import SampleSet, fidelity_table, to_markdown

        try:
            scenario = scenario_of_checkpoint(config)
        except ScenarioDataError as e:
            raise SystemExit(f"error: --metrics full needs the scenario's real images: {e}") from None
        t0 = time.perf_counter()
        # table rows are named by the paths as given (the bundled model: "bundled")
        main_name = "bundled" if args.checkpoint is None else args.checkpoint
        models = {main_name: SampleSet.from_evaluation(ev)}
        others_figures = {}
        for path, other, _ in others:
            name = str(path) if str(path) not in models else f"{path} ({len(models) + 1})"
            other_ev = evaluate_model(other, classifier, **eval_kw)
            models[name] = SampleSet.from_evaluation(other_ev)
            others_figures[name] = {k: other_ev.figures[k] for k in ("forget_rate", "retain_accuracy")}
        sampling_others = time.perf_counter() - t0
        table = fidelity_table(
            models, scenario, classifier, feature=feature, logits_module=logits_module, seed=args.seed
        )
        figures["table"] = table
        figures["compare"] = others_figures
        figures["seconds"]["compare_sampling"] = round(sampling_others, 3)
        figures["seconds"]["table"] = table.get("seconds", {}).get("total")
        markdown = to_markdown(table)
        (out / "table.md").write_text(markdown + "\n")
        figures["table_markdown"] = str(out / "table.md")
    if robust:
        from ..data.scenarios import ScenarioDataError, scenario_of_checkpoint
        from ..metrics.robustness import robustness_figures, sampled_forget_rate

        try:
            scenario = scenario_of_checkpoint(config)
        except ScenarioDataError as e:
            raise SystemExit(f"error: --metrics robustness needs the scenario's real images: {e}") from None
        kw = dict(scheduler_config=config.get("scheduler"), sampler=config.get("sampler"))
        level = None
        if pretrained is not None:  # the level that "steps to half" refers to, sampled the same way
            level = sampled_forget_rate(pretrained, classifier, scenario, robustness_config.relearn, **kw)
            level = level["forget_rate"]
        figures["robustness"] = robustness_figures(
            unet,
            scenario,
            classifier,
            robustness_config,
            pretrained_forget_rate=level,
            progress=not args.no_progress,
            **kw,
        )
        figures["robustness"]["pretrained"] = None if pretrained_dir is None else str(pretrained_dir)
        figures["seconds"]["robustness"] = figures["robustness"]["seconds"]
    write_json_atomic(figures, out / "evaluation.json")
    if args.json:
        print(json.dumps(figures))
    else:
        print(_format_table(figures))
        if full:
            print()
            print(markdown)
        if robust:
            print()
            print(_format_robustness(figures["robustness"]))
        print(f"\nsample grid: {grid_path}\nfigures:     {out / 'evaluation.json'}")
    return 0


# -- unlearn -------------------------------------------------------------------------------------


def _parse_policy(spec: str) -> float:
    kind, _, value = spec.partition(":")
    if kind != "static":
        raise SystemExit(f"error: --policy: expected 'static:LAMBDA' (e.g. static:0.5), got {spec!r}")
    try:
        lam = float(value)
    except ValueError:
        raise SystemExit(f"error: --policy static:LAMBDA needs a number in [0, 1], got {value!r}") from None
    if not 0.0 <= lam <= 1.0:
        raise SystemExit(f"error: --policy static:LAMBDA needs LAMBDA in [0, 1], got {lam}")
    return lam


def cmd_unlearn(args: argparse.Namespace) -> int:
    import gymnasium as gym
    from tqdm.auto import tqdm

    from ..assets import bundled_model_dir
    from ..envs.conventions import action_from_lam
    from ..metrics.classifier import load_classifier
    from ..metrics.forget import evaluate_model
    from ..models.checkpoint import CheckpointError, load_model_config, save_model, write_json_atomic

    lam = _parse_policy(args.policy)
    _set_threads(args.threads)
    device = _resolve_device(args.device)
    checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_model_dir()
    try:
        config = load_model_config(checkpoint)
        classifier = load_classifier(_resolve_classifier_dir(checkpoint, config, args.classifier), device)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    env = gym.make(
        "unlearn_gym/SISS-v0",
        checkpoint=str(checkpoint),
        horizon=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        device=device,
    )
    env.reset(seed=args.seed)
    unet = env.unwrapped.unlearned_model()  # read-only here: evaluation of the env's model
    eval_kw = _evaluation_kwargs(config, args, seed=args.eval_seed)
    t0 = time.perf_counter()
    before = evaluate_model(unet, classifier, **eval_kw)
    t1 = time.perf_counter()
    action = action_from_lam([lam])
    episode_return, lams, diverged = 0.0, [], False
    for _ in tqdm(range(args.steps), desc=f"unlearn static:{lam}", disable=args.no_progress, dynamic_ncols=True):
        _, reward, terminated, truncated, info = env.step(action)
        episode_return += reward
        lams.append(info["lam"])
        if terminated:
            diverged = True
            break
    t2 = time.perf_counter()
    after = evaluate_model(unet, classifier, **eval_kw)
    t3 = time.perf_counter()
    out = Path(args.out)
    model_dir = save_model(
        unet, out / "model", {**config, "unlearn": {"policy": args.policy, "steps": len(lams), "seed": args.seed}}
    )
    result = {
        "policy": args.policy,
        "steps": len(lams),
        "diverged": diverged,
        "return": episode_return,
        "final_info": {k: v for k, v in info.items() if isinstance(v, (int, float, bool))},
        "before": before.figures,
        "after": after.figures,
        "seconds": {
            "evaluate_before": round(t1 - t0, 2),
            "unlearn": round(t2 - t1, 2),
            "evaluate_after": round(t3 - t2, 2),
        },
        "model": str(model_dir),
        "device": device,
    }
    write_json_atomic(result, out / "unlearn.json")
    if args.json:
        print(json.dumps(result))
    else:
        b, a = before.figures, after.figures
        print(
            f"policy {args.policy}, {len(lams)} SISS steps{' (diverged)' if diverged else ''}, return {episode_return:.4f}"
        )
        print("                  before   after")
        print(f"forget_rate       {b['forget_rate']:.3f}   {a['forget_rate']:.3f}")
        print(f"retain_accuracy   {b['retain_accuracy']:.3f}   {a['retain_accuracy']:.3f}")
        print(f"unlearned model: {model_dir}")
    return 0


# -- train ---------------------------------------------------------------------------------------


def _json_arg(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {flag} must be a JSON object, e.g. '{{\"batch_size\": 16}}': {e}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"error: {flag} must be a JSON object, got {text!r}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from ..agents import train_agent

    _set_threads(args.threads)
    env_kwargs = _json_arg(args.env_kwargs, "--env-kwargs")
    if args.checkpoint:
        env_kwargs["checkpoint"] = args.checkpoint
    if args.device != "auto":  # the diffusion model's device (the env's own default is "auto")
        env_kwargs["device"] = args.device
    try:
        result = train_agent(
            args.algo,
            args.env,
            args.timesteps,
            seed=args.seed,
            out=args.out,
            env_kwargs=env_kwargs,
            hyperparams_file=args.hyperparams_file,
            overrides=_json_arg(args.hyperparams, "--hyperparams"),
            device=args.agent_device,
            tensorboard=not args.no_tensorboard,
            progress_bar=not args.no_progress,
            checkpoint_freq=args.checkpoint_freq,
            resume=args.resume,
            sample_every=args.sample_every,
            vec_env=args.vec_env,
            num_envs=args.num_envs,
            verbose=args.verbose,
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    summary = {"algo": result.algo, "timesteps": result.timesteps, "seconds": round(result.seconds, 1)}
    summary["env_steps_per_second"] = round(result.timesteps / max(result.seconds, 1e-9), 2)
    summary |= {"agent": str(result.agent_dir), "out": str(result.out)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"trained {result.algo} for {result.timesteps} steps in {result.seconds:.0f} s "
            f"({summary['env_steps_per_second']} env steps/s)"
        )
        print(
            f"agent: {result.agent_dir}   (bench it: unlearn-gym bench --policies static:0.5,agent:{result.agent_dir})"
        )
        if not args.no_tensorboard:
            print(f"TensorBoard: tensorboard --logdir {Path(result.out) / 'tb'}")
    return 0


# -- bench ---------------------------------------------------------------------------------------


def _bench_workers(workers: int, device: str) -> int:
    """``--workers``: as given, or 0 = automatic: one process per CPU core (at most 8) on the CPU, 1 on a GPU."""
    if workers < 0:
        raise SystemExit(f"error: --workers must be >= 0 (0 = automatic), got {workers}")
    if workers:
        return workers
    return 1 if str(device).startswith("cuda") else max(1, min(os.cpu_count() or 1, 8))


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, logging every episode to OUT/episodes.jsonl, and write the report into OUT."""
    import shlex

    from gymnasium.error import DependencyNotInstalled

    from ..bench import (
        BENCH_ENV_KWARGS,
        BENCH_SEEDS,
        EPISODE_LOG,
        BenchConfig,
        json_summary,
        run_benchmark,
        write_report,
    )
    from ..policy_specs import policy_from_spec, policy_name

    _set_threads(args.threads)
    if args.address is not None and args.backend != "ray":
        raise SystemExit(f"error: --address {args.address} names a Ray cluster; add --backend ray")
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise SystemExit(f"error: --resume {args.resume} continues the run in that folder; drop --out {args.out}")
    out = args.resume or args.out or "runs/bench"
    env_kwargs = {**BENCH_ENV_KWARGS, **_json_arg(args.env_kwargs, "--env-kwargs")}
    for key in ("horizon", "batch_size", "lr", "action_mode"):
        if getattr(args, key) is not None:
            env_kwargs[key] = getattr(args, key)
    if args.checkpoint:
        env_kwargs["checkpoint"] = args.checkpoint
    env_kwargs["device"] = _resolve_device(args.device)
    seeds = tuple(range(args.seeds or BENCH_SEEDS)) if args.seed_list is None else tuple(args.seed_list)
    instances = (None,) if not args.instances else tuple(range(args.instances))
    specs = [s.strip() for s in args.policies.split(",") if s.strip()]
    policies = {}
    try:
        for spec in specs:
            policy = policy_from_spec(spec)
            policies[policy_name(spec, policy)] = policy
        config = BenchConfig(
            env_id=args.env,
            env_kwargs=env_kwargs,
            seeds=seeds,
            instances=instances,
            samples_per_label=args.samples,
            contaminated_label_samples=args.contaminated_samples,
            ddim_steps=args.ddim_steps,
            eval_seed=args.eval_seed,
            metrics=args.metrics,
            classifier=args.classifier,
            retrained=None if args.retrained.lower() == "none" else args.retrained,
            reference=None if args.reference.lower() == "none" else args.reference,
            workers=_bench_workers(args.workers, env_kwargs["device"]),
            robustness=args.robustness,
            robustness_config=_robustness_config(args, ddim_steps=args.ddim_steps, eval_seed=args.eval_seed)
            if args.robustness
            else None,
            bootstrap_reps=args.bootstrap_reps,
            backend=args.backend,
            ray_address=args.address,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            num_envs=args.num_envs,
            executor=args.executor,
        )
        t0 = time.perf_counter()
        log_path = Path(out) / EPISODE_LOG
        result = run_benchmark(
            policies,
            config,
            progress=not args.no_progress,
            log_path=log_path,
            resume=bool(args.resume),
            record=args.record,
        )
    except (ValueError, FileNotFoundError, ConnectionError, DependencyNotInstalled) as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:  # Ctrl-C: the worker processes are stopped; the logged episodes stay
        print(
            f"bench: interrupted; `unlearn-gym bench --resume {out}` with the same options continues it",
            file=sys.stderr,
        )
        return 130
    result["seconds"] = round(time.perf_counter() - t0, 1)
    command = "unlearn-gym " + " ".join(shlex.quote(a) for a in (args.argv or ["bench"]))
    paths = write_report(result, out, command)
    print(f"bench: {result['seconds']:.0f} s; report in {paths['markdown']}", file=sys.stderr)
    if args.json:
        print(json.dumps(json_summary(result)))
    else:
        print(paths["markdown"].read_text())
    return 0


# -- sweep ---------------------------------------------------------------------------------------


def _add_ray_args(p) -> None:
    p.add_argument(
        "--address", default=None, help="the Ray cluster (HOST:PORT, ray://HOST:PORT or auto; default: a local one)"
    )
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each Ray trial declares (its torch threads)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs each Ray trial declares (0.5: two per GPU)")


def _int_list(text: str, flag: str, minimum: int | None = None) -> tuple[int, ...]:
    """Comma-separated integers of a CLI option (at least one; each ≥ ``minimum`` when given)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"error: {flag}: expected comma-separated integers, e.g. 0,1,2, got {text!r}") from None
    if not values:
        raise SystemExit(f"error: {flag}: expected comma-separated integers, e.g. 0,1,2, got {text!r}")
    if minimum is not None and min(values) < minimum:
        raise SystemExit(f"error: {flag}: expected integers >= {minimum}, got {text!r}")
    return values


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train agents over the grid with Ray Tune (each trial: ``train_agent``, then a scored rollout) and
    write the table of all trials into OUT."""
    import shlex

    from gymnasium.error import DependencyNotInstalled

    from ..sweep import SweepConfig, parse_grid, run_sweep, write_sweep_table

    env_kwargs = _json_arg(args.env_kwargs, "--env-kwargs")
    if args.checkpoint:
        env_kwargs["checkpoint"] = str(Path(args.checkpoint).resolve())  # trials run in folders of their own
    if args.device != "auto":  # the diffusion model's device
        env_kwargs["device"] = args.device
    try:
        config = SweepConfig(
            algos=tuple(a.strip() for a in args.algos.split(",") if a.strip()),
            seeds=_int_list(args.sweep_seeds, "--seeds"),
            grid=parse_grid(args.set),
            env_id=args.env,
            env_kwargs=env_kwargs,
            timesteps=args.timesteps,
            eval_episodes=args.eval_episodes,
            device=args.agent_device,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            ray_address=args.address,
        )
        t0 = time.perf_counter()
        rows = run_sweep(config, args.out)
    except (ValueError, ConnectionError, DependencyNotInstalled) as e:
        raise SystemExit(f"error: {e}") from None
    command = "unlearn-gym " + " ".join(shlex.quote(a) for a in (args.argv or ["sweep"]))
    paths = write_sweep_table(rows, config, args.out, command)
    failed = [r["trial"] for r in rows if r["status"] != "ok"]
    print(
        f"sweep: {len(rows)} trials ({len(failed)} failed) in {time.perf_counter() - t0:.0f} s; table in {paths['markdown']}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps({"trials": rows, "table": str(paths["csv"])}))
    else:
        print(paths["markdown"].read_text())
    return 1 if failed else 0


# -- perf ----------------------------------------------------------------------------------------


def cmd_perf(args: argparse.Namespace) -> int:
    """Time a plain DDPM step, the SISS update and env.step; with --num-envs, N batched runs per executor."""
    from ..engines import EXECUTORS
    from ..perf import profile_runs, profile_step

    _set_threads(args.threads)
    device = _resolve_device(args.device)
    if args.num_envs is None:
        result = profile_step(args.preset, args.batch, device, repeats=args.repeats)
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:16} {v}")
        return 0
    executors = tuple(args.executor.split(","))
    bad = [e for e in executors if e not in EXECUTORS]
    if bad:
        raise SystemExit(f"error: --executor expected some of {list(EXECUTORS)}, got {bad}")
    if "graph" in executors and not device.startswith("cuda"):
        raise SystemExit(
            f"error: --executor graph needs a CUDA device (it captures the update as a CUDA graph), got --device "
            f"{device!r}; drop graph from --executor or use --device cuda"
        )
    result = profile_runs(
        args.preset, args.batch, device, _int_list(args.num_envs, "--num-envs", minimum=1), executors, args.repeats
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['preset']} preset, batch {result['batch_size']}, {result['device']}, {result['threads']} thread(s); "
        f"single env.step {result['single_ms']} ms"
    )
    print(f"{'N':>4} {'executor':>8} {'ms/step':>9} {'ms/run':>8} {'env-steps/s':>12} {'speed-up':>9}")
    for r in result["runs"]:
        print(
            f"{r['num_envs']:>4} {r['executor']:>8} {r['batched_ms']:>9} {r['ms_per_run']:>8} "
            f"{r['env_steps_per_s']:>12} {r['speedup_vs_sequential']:>9}"
        )
    return 0


# -- parser --------------------------------------------------------------------------------------


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """The options several commands share, each declared once with one default (argparse parents)."""

    def parent() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(add_help=False)

    device, threads, progress, json_out, checkpoint, classifier, env = (parent() for _ in range(7))
    device.add_argument(
        "--device", default="auto", help="the diffusion model's device: cpu, cuda, cuda:N or auto (CUDA where present)"
    )
    threads.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; set it when SB3 and torch share cores)",
    )
    progress.add_argument("--no-progress", action="store_true", help="no progress bars")
    json_out.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (progress goes to stderr)"
    )
    checkpoint.add_argument(
        "--checkpoint", default=None, help="the pretrained model directory (default: the bundled default model)"
    )
    classifier.add_argument(
        "--classifier",
        default=None,
        help="the evaluation classifier directory (default: CHECKPOINT/classifier or bundled)",
    )
    env.add_argument("--env", default="unlearn_gym/SISS-v0", help="a registered env id")
    env.add_argument("--env-kwargs", default=None, help="JSON keywords of gymnasium.make, e.g. '{\"batch_size\": 16}'")
    return {
        "device": device,
        "threads": threads,
        "progress": progress,
        "json": json_out,
        "checkpoint": checkpoint,
        "classifier": classifier,
        "env": env,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearn-gym", description="Machine unlearning of diffusion models as Gymnasium environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    shared = _shared_options()

    def command(name: str, summary: str, *parents: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, parents=[shared[k] for k in parents])

    p = command(
        "pretrain", "pretrain a class-conditional DDPM on a scenario (resumable)", "device", "threads", "progress"
    )
    _add_scenario_args(p)
    p.add_argument("--preset", default="small", choices=["tiny", "small", "siss"])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds a train state")
    p.add_argument(
        "--retain-only",
        action="store_true",
        help="train on the retain set alone (never the forget set): the retrained, exact-unlearning reference",
    )
    p.set_defaults(func=cmd_pretrain)

    p = command("train-classifier", "train the evaluation classifier on a scenario", "threads", "progress")
    _add_scenario_args(p)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_classifier)

    p = command(
        "evaluate",
        "sample a model and report forget rate and retain accuracy",
        "checkpoint", "classifier", "device", "threads", "progress", "json",
    )  # fmt: skip
    p.add_argument("--samples", type=int, default=200, help="samples per label")
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=125, help="images per UNet call while sampling")
    p.add_argument("--out", default="runs/evaluate", help="folder for samples.png and evaluation.json")
    p.add_argument(
        "--metrics",
        default="basic",
        help="comma-separated: basic (always), full (FID/KID/IS/SSIM tables), robustness (membership inference "
        "and relearning), e.g. full,robustness",
    )
    p.add_argument("--compare", nargs="*", default=[], metavar="DIR", help="more model directories for the full table")
    p.add_argument(
        "--features",
        default="classifier",
        choices=["classifier", "inception"],
        help="FID/KID/IS features: the scenario classifier (offline default) or InceptionV3 (weights must be on disk)",
    )
    p.add_argument(
        "--inception-weights", default=None, help="InceptionV3 weights file (default: torch.hub's checkpoints)"
    )
    _add_robustness_args(p, "--metrics robustness")
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="DIR",
        help="robustness: the pretrained model (a directory, or 'bundled'), whose forget rate 'steps to half' refers to",
    )
    p.set_defaults(func=cmd_evaluate)

    p = command(
        "unlearn",
        "run a λ-policy through SISS-v0 and evaluate before and after",
        "checkpoint", "classifier", "device", "threads", "progress", "json",
    )  # fmt: skip
    p.add_argument("--policy", default="static:0.5", help="static:LAMBDA")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0, help="env seed (batches, probe)")
    p.add_argument("--samples", type=int, default=200, help="evaluation samples per label")
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--out", default="runs/unlearn")
    p.set_defaults(func=cmd_unlearn)

    p = command(
        "train",
        "train an RL agent (ppo, sac, td3, ddpg, mcpg) on a registered env",
        "env", "checkpoint", "device", "threads", "progress", "json",
    )  # fmt: skip
    p.add_argument("--algo", required=True, choices=["ppo", "sac", "td3", "ddpg", "mcpg"])
    p.add_argument("--timesteps", type=int, default=2048, help="env steps to train in all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (agent/, model.zip, checkpoints/, tb/)")
    p.add_argument("--hyperparams", default=None, help="JSON overrides of the YAML hyperparameters")
    p.add_argument("--hyperparams-file", default=None, help="a zoo-style YAML of your own")
    p.add_argument("--checkpoint-freq", type=int, default=512, help="env steps between checkpoints (0 = none)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--sample-every", type=int, default=10, help="episodes between TensorBoard sample grids (0 = none)")
    p.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"])
    p.add_argument(
        "--num-envs",
        type=int,
        default=None,
        help="train on N runs batched in one engine (gymnasium.make_vec; SB3 algorithms through the SB3 adapter, MCPG "
        "collecting N episodes at a time) instead of n_envs copies",
    )
    p.add_argument(
        "--agent-device", default="cpu", help="the agent networks' device (SB3's MLPs are fastest on the CPU)"
    )
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--verbose", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = command(
        "bench",
        "benchmark λ-policies and agents on equal seeds (no arguments: the main job on the embedded default)",
        "env", "checkpoint", "classifier", "device", "threads", "progress", "json",
    )  # fmt: skip
    p.add_argument(
        "--policies",
        default="static:0.5,vi-adaptive,random,ppo",
        help="comma-separated: static:L, random, linear:A:B, cosine:A:B, vi-adaptive, vi-variance, ppo (bundled), agent:DIR",
    )
    p.add_argument("--horizon", type=int, default=None, help="T (default: the main job's, see BENCH_ENV_KWARGS)")
    p.add_argument("--batch-size", type=int, default=None, help="B of each update (default: the main job's)")
    p.add_argument("--lr", type=float, default=None, help="the unlearning learning rate (default: the main job's)")
    p.add_argument(
        "--action-mode",
        default=None,
        choices=["mixture", "forget-strength", "both"],
        help="the track: policies choose the mixture λ (default) or the forget strength S = λ·max_scale",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds 0..N-1, every policy on the same seeds (default: the main job's, BENCH_SEEDS)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes running episodes side by side (0 = one per CPU core on the CPU, 1 on a GPU)",
    )
    p.add_argument(
        "--num-envs",
        type=int,
        default=1,
        metavar="N",
        help="run each policy's episodes N at a time as the runs of one batched vector env (each worker runs such "
        "batches; the same records as N = 1, one episode at a time; best with N dividing seeds x instances, a short "
        "batch still steps all N runs); with --robustness or --record, or an env without a vector entry point, "
        "episodes run one at a time",
    )
    p.add_argument(
        "--executor",
        default="auto",
        choices=["auto", "vmap", "loop", "graph"],
        help="with --num-envs: how the batched engine maps over the runs (auto: vmap on CUDA, loop on the CPU; "
        "graph: the vmapped update as one CUDA graph, CUDA only)",
    )
    p.add_argument("--seed-list", type=int, nargs="+", default=None, help="explicit seeds (overrides --seeds)")
    p.add_argument("--instances", type=int, default=0, help="forget-subset instances 0..N-1 (0: the whole forget set)")
    p.add_argument("--samples", type=int, default=20, help="evaluation samples per retain label at each episode end")
    p.add_argument(
        "--contaminated-samples",
        type=int,
        default=100,
        help="evaluation samples of the contaminated label (the forget rate's resolution is 1/N)",
    )
    p.add_argument(
        "--reference",
        default="static:0.5",
        help="the policy the others are compared with, paired over seeds (a name in the table; 'none': no verdicts)",
    )
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--metrics", default="basic", choices=["basic", "full"], help="full: also FID/KID/IS/SSIM")
    p.add_argument(
        "--retrained",
        default="bundled",
        help="the model retrained without the forget set, a reference row and the distance column "
        "(a model directory; 'bundled': the bundled one, with the bundled model; 'none')",
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder for episodes.jsonl, bench.md, bench.csv, bench.json and the plots (default: runs/bench)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the interrupted run in DIR (its episodes.jsonl): pass that run's options; logged episodes are "
        "skipped and the report is the uninterrupted run's",
    )
    p.add_argument(
        "--bootstrap-reps", type=int, default=2000, help="resamples of the stratified bootstrap (IQM, P(improvement))"
    )
    p.add_argument(
        "--robustness", action="store_true", help="also membership inference and relearning of every unlearned model"
    )
    _add_robustness_args(p, "--robustness")
    g = p.add_argument_group('Ray (pip install "unlearn-gym[ray]")')
    g.add_argument(
        "--backend",
        default="local",
        choices=["local", "ray"],
        help="local: this process or --workers processes; ray: Ray actors on a cluster (a new local one without --address)",
    )
    _add_ray_args(g)
    p.add_argument(
        "--record",
        default=None,
        metavar="DIR",
        help='also write every episode as Minari datasets under DIR, one per policy (pip install "unlearn-gym[minari]")',
    )
    p.set_defaults(func=cmd_bench)

    p = command(
        "sweep",
        "train agents over algorithms × seeds × hyperparameter values with Ray Tune",
        "env",
        "checkpoint",
        "device",
        "json",
    )
    p.add_argument("--algos", default="ppo", help="comma-separated: ppo, sac, td3, ddpg, mcpg")
    p.add_argument("--seeds", dest="sweep_seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a hyperparameter and its values (repeat for more; the grid is their product), e.g. learning_rate=3e-4,1e-3",
    )
    p.add_argument("--timesteps", type=int, default=2048, help="env steps to train each trial")
    p.add_argument(
        "--eval-episodes", type=int, default=3, help="deterministic episodes (seeds 0..N-1) scoring each trained agent"
    )
    p.add_argument("--agent-device", default="cpu", help="the agent networks' device")
    _add_ray_args(p)
    p.add_argument("--out", default="runs/sweep", help="folder for sweep.csv, sweep.md, trials/ and tune/")
    p.set_defaults(func=cmd_sweep)

    p = command(
        "perf",
        "time a plain DDPM step, the bare SISS update and env.step; or N batched runs",
        "device",
        "threads",
        "json",
    )
    p.add_argument("--preset", default="small", choices=["tiny", "small", "siss"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument(
        "--num-envs",
        default=None,
        help="comma-separated N, e.g. 1,4,16: time one step of the N-run vector env against N single env steps",
    )
    p.add_argument(
        "--executor",
        default="loop,vmap",
        help="with --num-envs: comma-separated executors (loop, vmap; graph on CUDA: the update as one CUDA graph)",
    )
    p.set_defaults(func=cmd_perf)
    return parser


_COUNT_OPTIONS = ("samples", "steps", "batch_size", "ddim_steps", "epochs", "batch", "repeats", "timesteps", "seeds")
_COUNT_OPTIONS += ("mia_samples", "mia_bootstrap", "relearn_steps", "relearn_every", "relearn_batch_size")
_COUNT_OPTIONS += ("relearn_forget_images", "relearn_forget_per_batch", "relearn_samples", "bootstrap_reps")
_COUNT_OPTIONS += ("eval_episodes",)
"""Options that must be >= 1 where a command has them."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in _COUNT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got {value}")
    return args.func(args)
