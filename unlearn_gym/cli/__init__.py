"""The ``unlearn-gym`` command line: pretrain, train-classifier, evaluate, unlearn, train, bench, sweep, perf.

Progress bars and messages go to stderr; with ``--json`` stdout holds only one JSON object.

One module per family of commands (:mod:`.pretrain`, :mod:`.evaluate`, :mod:`.unlearn`, :mod:`.train`,
:mod:`.benchmark`, :mod:`.perf`), the parser in :mod:`.parser`.
"""

from __future__ import annotations

import sys

from .evaluate import _parse_metrics as _parse_metrics  # tests check the --metrics parsing
from .parser import build_parser

__all__ = ["build_parser", "main"]


_COUNT_OPTIONS = ("samples", "steps", "batch_size", "ddim_steps", "epochs", "batch", "repeats", "timesteps", "seeds")
_COUNT_OPTIONS += ("mia_samples", "mia_bootstrap", "relearn_steps", "relearn_every", "relearn_batch_size")
_COUNT_OPTIONS += ("relearn_forget_images", "relearn_forget_per_batch", "relearn_samples", "bootstrap_reps")
_COUNT_OPTIONS += ("eval_episodes",)
"""Options that must be >= 1 where a command has them."""


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's), check the count options and run the command; its exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in _COUNT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got {value}")
    return args.func(args)
