"""``unlearn-gym bench``: benchmark λ-policies and agents on equal seeds and write the report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ._common import _json_arg, _resolve_device, _robustness_config, _set_threads

__all__ = ["cmd_bench"]


def _bench_workers(workers: int, device: str) -> int:
    """``--workers``: as given, or 0 = automatic: one process per CPU core (at most 8) on the CPU, 1 on a GPU."""
    if workers < 0:
        raise SystemExit(f"error: --workers must be >= 0 (0 = automatic), got {workers}")
    if workers:
        return workers
    return 1 if str(device).startswith("cuda") else max(1, min(os.cpu_count() or 1, 8))


def _bench_tasks(args: argparse.Namespace) -> list:
    """``--task``'s :class:`~unlearn_gym.tasks.Task` list (comma-separated names, or 'all'); [None] without one.
    Refuses a ``--checkpoint`` beside it."""
    if args.task is None:
        return [None]
    from ..tasks import TASKS, get_task

    if args.checkpoint:
        raise ValueError(f"--task {args.task} brings its own model; drop --checkpoint {args.checkpoint}")
    names = list(TASKS) if args.task == "all" else [n.strip() for n in args.task.split(",") if n.strip()]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"--task: expected distinct task names or 'all', got {args.task!r}")
    return [get_task(n) for n in names]


def _bench_env_kwargs(args: argparse.Namespace, task=None) -> dict:
    """The env's keywords: the main job's (``BENCH_ENV_KWARGS``), the task's, ``--env-kwargs`` and the explicit options."""
    from ..bench import BENCH_ENV_KWARGS
    from ..tasks import require_built

    task_kwargs = {} if task is None else dict(task.env_kwargs)
    env_kwargs = {**BENCH_ENV_KWARGS, **task_kwargs, **_json_arg(args.env_kwargs, "--env-kwargs")}
    for key in ("horizon", "batch_size", "lr", "action_mode"):
        if getattr(args, key) is not None:
            env_kwargs[key] = getattr(args, key)
    if args.checkpoint:
        env_kwargs["checkpoint"] = args.checkpoint
    elif task is not None and task.model is not None:
        env_kwargs["checkpoint"] = str(require_built(task))
    env_kwargs["device"] = _resolve_device(args.device)
    return env_kwargs


def _bench_policies(text: str) -> dict:
    """``--policies``: name → policy of each comma-separated spec."""
    from ..policy_specs import policy_from_spec, policy_name

    specs = [s.strip() for s in text.split(",") if s.strip()]
    policies = {}
    for spec in specs:
        policy = policy_from_spec(spec)
        policies[policy_name(spec, policy)] = policy
    return policies


def _bench_retrained(args: argparse.Namespace, task=None) -> str | None:
    """``--retrained``: a model directory, None for 'none'; 'bundled' with ``--task``: the task's reference."""
    if args.retrained.lower() == "none":
        return None
    if args.retrained == "bundled" and task is not None and task.model is not None:
        from ..assets import bundled_retrained_dir

        return str(bundled_retrained_dir()) if task.retrained == "bundled" else None
    return args.retrained


def _bench_config(args: argparse.Namespace, env_kwargs: dict, task=None):
    """The :class:`~unlearn_gym.bench.BenchConfig` of the options (and of ``--task``'s episodes where they say none)."""
    from ..bench import BENCH_SEEDS, BenchConfig
    from ..splits import SPLITS

    split = SPLITS[args.split]
    n_seeds = args.seeds or (task.seeds if task is not None else BENCH_SEEDS)
    seeds = split.first_seeds(n_seeds) if args.seed_list is None else tuple(args.seed_list)
    n_instances = args.instances if args.instances is not None else (task.instances if task is not None else 0)
    instances = (None,) if not n_instances else split.first_instances(n_instances)
    return BenchConfig(
        env_id=args.env,
        env_kwargs=env_kwargs,
        seeds=seeds,
        instances=instances,
        samples_per_label=args.samples,
        contaminated_label_samples=args.contaminated_samples,
        ddim_steps=args.ddim_steps,
        curve_steps=args.curve_steps,
        eval_seed=args.eval_seed,
        metrics=args.metrics,
        classifier=args.classifier,
        retrained=_bench_retrained(args, task),
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


def _run_one(args: argparse.Namespace, task, out: str, command: str, of_set: bool) -> tuple[dict, dict]:
    """One bench run (one task, or the options alone) into ``out``: its result and report paths. With
    ``--resume``, a task of a set (``of_set``) that had not started yet starts afresh."""
    from ..bench import EPISODE_LOG, run_benchmark, write_report

    env_kwargs = _bench_env_kwargs(args, task)
    policies = _bench_policies(args.policies)
    config = _bench_config(args, env_kwargs, task)
    if task is not None:
        print(f"bench: task {task.name} ({task.summary}) into {out}", file=sys.stderr)
    t0 = time.perf_counter()
    result = run_benchmark(
        policies,
        config,
        progress=not args.no_progress,
        log_path=Path(out) / EPISODE_LOG,
        resume=bool(args.resume) and (not of_set or (Path(out) / EPISODE_LOG).is_file()),
        record=args.record,
    )
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if task is not None:
        result["task"] = task.name
    paths = write_report(result, out, command)
    print(f"bench: {result['seconds']:.0f} s; report in {paths['markdown']}", file=sys.stderr)
    return result, paths


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, logging every episode to OUT/episodes.jsonl, and write the report into OUT; with
    several tasks, each task's run into OUT/TASK and the task set's table into OUT/tasks.md."""
    import shlex

    from gymnasium.error import DependencyNotInstalled

    from ..bench import json_summary, write_task_set_report

    _set_threads(args.threads)
    if args.address is not None and args.backend != "ray":
        raise SystemExit(f"error: --address {args.address} names a Ray cluster; add --backend ray")
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise SystemExit(f"error: --resume {args.resume} continues the run in that folder; drop --out {args.out}")
    out = args.resume or args.out or "runs/bench"
    command = "unlearn-gym " + " ".join(shlex.quote(a) for a in (args.argv or ["bench"]))
    results = {}
    try:
        tasks = _bench_tasks(args)
        for task in tasks:
            of_set = len(tasks) > 1
            task_out = str(Path(out) / task.name) if of_set else out
            results[None if task is None else task.name] = _run_one(args, task, task_out, command, of_set)
    except (ValueError, FileNotFoundError, ConnectionError, DependencyNotInstalled) as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:  # Ctrl-C: the worker processes are stopped; the logged episodes stay
        print(
            f"bench: interrupted; `unlearn-gym bench --resume {out}` with the same options continues it",
            file=sys.stderr,
        )
        return 130
    if len(tasks) == 1:
        result, paths = next(iter(results.values()))
        print(json.dumps(json_summary(result)) if args.json else paths["markdown"].read_text())
        return 0
    table = write_task_set_report({name: result for name, (result, _) in results.items()}, out, command)
    if args.json:
        print(json.dumps({name: json_summary(result) for name, (result, _) in results.items()}))
    else:
        print(table.read_text())
    return 0
