"""``unlearn-gym tasks``: the declared task set, and ``unlearn-gym tasks build``: making the tasks' models."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ._common import _resolve_device, _set_threads

__all__ = ["cmd_tasks"]


def _task_rows() -> list[dict]:
    """One row per task: its name, summary, settings, episodes, model folder, whether built, and the reference."""
    from ..tasks import TASKS, is_built, task_model_dir

    rows = []
    for task in TASKS.values():
        rows.append(
            {
                "task": task.name,
                "summary": task.summary,
                "env_kwargs": dict(task.env_kwargs),
                "episodes": f"{task.seeds} seeds" + (f" x {task.instances} instances" if task.instances else ""),
                "model": "bundled" if task.model is None else str(task_model_dir(task)),
                "built": is_built(task),
                "retrained": task.retrained,
                "build": [] if task.model is None else task.model.commands(task_model_dir(task)),
            }
        )
    return rows


def cmd_tasks(args: argparse.Namespace) -> int:
    """List the task set (with each model's state), or build the named tasks' models."""
    from ..tasks import TASKS, build_task_model, get_task

    if args.action == "list":
        if args.names:
            raise SystemExit(
                f"error: `unlearn-gym tasks` lists every task; to build some: tasks build {' '.join(args.names)}"
            )
        rows = _task_rows()
        if args.json:
            print(json.dumps(rows))
            return 0
        for row in rows:
            state = "bundled" if row["model"] == "bundled" else ("built" if row["built"] else "not built")
            print(f"{row['task']:<16} {row['summary']}")
            print(f"{'':<16} env {row['env_kwargs'] or '{}'}; {row['episodes']}; model {state}: {row['model']}")
            if row["build"] and not row["built"]:
                print(f"{'':<16} build: unlearn-gym tasks build {row['task']}")
        return 0
    try:
        tasks = list(TASKS.values()) if args.names == ["all"] else [get_task(n) for n in args.names]
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not tasks:
        raise SystemExit("error: tasks build needs task names (or 'all'); `unlearn-gym tasks` lists them")
    _set_threads(args.threads)
    device = _resolve_device(args.device)
    for task in tasks:
        if task.model is None:
            print(f"{task.name}: the bundled model, nothing to build", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        path = build_task_model(task, device=device, progress=not args.no_progress)
        print(f"{task.name}: {path} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0
