"""``unlearn-gym train`` and ``unlearn-gym sweep``: train RL agents on a registered env, one or a grid of them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._common import _int_list, _json_arg, _set_threads

__all__ = ["cmd_sweep", "cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    """Train an RL agent on the env and save it into OUT (agent/, model.zip, checkpoints/, tb/)."""
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
