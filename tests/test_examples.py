import math
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_static_lambda_example_runs(tiny_checkpoint, capsys, monkeypatch):
    module = runpy.run_path(str(EXAMPLES / "static_lambda.py"))
    ret = module["main"](["--steps", "2", "--checkpoint", str(tiny_checkpoint), "--batch-size", "4"])
    out = capsys.readouterr().out
    assert out.count("step ") == 2 and "return" in out
    assert math.isfinite(ret)
