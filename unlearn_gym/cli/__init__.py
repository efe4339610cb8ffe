"""The ``unlearn-gym`` command line: pretrain, train-classifier, evaluate, unlearn, train, bench, sweep, perf.

Progress bars and messages go to stderr; with ``--json`` stdout holds only one JSON object.
"""

from __future__ import annotations

from .parser import _parse_metrics as _parse_metrics  # tests check the --metrics parsing
from .parser import build_parser, main

__all__ = ["build_parser", "main"]
