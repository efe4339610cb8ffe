"""`bench --workers`: a killed or interrupted bench leaves no worker process behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="reads the process table in /proc (Linux)"
)


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, ..., starttime at 19), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``pid``."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _alive(pid: int, start: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == start and fields[0] != "Z"  # the same process, not a zombie


SEEDS = 200
"""Episodes of the killed bench: far more than run before the signal."""


def _default_signals() -> None:
    """In the bench's child process before exec: SIGINT and SIGTERM at their default dispositions and
    unblocked, as a shell gives them, whatever the test process inherited or set (a process started
    with SIGINT ignored keeps ignoring it: Python's convention for background jobs)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _signal_masks(pid: int) -> dict[str, str]:
    """SigBlk, SigIgn and SigCgt of /proc/PID/status (for a failure's message)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _episode_lines(path: Path) -> int:
    return max(path.read_bytes().count(b"\n") - 1, 0) if path.is_file() else 0  # less the header


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_killed_bench_leaves_no_worker_processes(tmp_path, sig):
    """`bench --workers 2` is killed (SIGKILL: no Python code runs in it) or interrupted (SIGTERM, SIGINT)
    while its two workers run episodes: within seconds none of its processes is left."""
    # short episodes (one batch each), many of them: the run outlasts the first episode by far (200 take
    # ~25 s on 2 idle cores; with 30, an idle machine ran the rest and wrote the report before the signal
    # landed: rc 0, a race of the test, not of the bench)
    argv = [sys.executable, "-m", "unlearn_gym.cli", "bench", "--policies", "static:0.5", "--seeds", str(SEEDS)]
    argv += ["--env-kwargs", '{"probe_size": 1, "sample_forget": 4, "sample_retain": 1, "sample_ddim_steps": 2}']
    argv += ["--batch-size", "2"]  # the bundled (tiny) model
    argv += ["--horizon", "2", "--samples", "1", "--contaminated-samples", "2", "--ddim-steps", "1"]
    argv += ["--device", "cpu", "--workers", "2", "--threads", "1", "--no-progress", "--bootstrap-reps", "10"]
    argv += ["--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "wb") as err:
        # as from a terminal: SIGINT and SIGTERM at their defaults, whatever this process inherited
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_default_signals)
    try:
        t0 = time.monotonic()
        while _episode_lines(tmp_path / "episodes.jsonl") < 1:  # the workers are running episodes
            assert proc.poll() is None, f"bench ended (rc {proc.returncode}) before it could be killed"
            assert time.monotonic() - t0 < 300, "timed out waiting for the first episode"
            time.sleep(0.05)
        workers = _descendants(proc.pid)
        assert proc.poll() is None, "bench ended before it could be killed"
        spawned = [p for p, _ in workers if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(spawned) >= 2, f"expected 2 spawned workers, got {workers}"
        masks = _signal_masks(proc.pid)
        os.kill(proc.pid, getattr(signal, sig))
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the bench did not end within 30 s of {sig}; its signal masks: {masks}") from None
        t1 = time.monotonic()
        while (left := [w for w in workers if _alive(*w)]) and time.monotonic() - t1 < 60:
            time.sleep(0.1)
        assert left == [], f"after {sig} to the bench, its processes {left} are still running"
        # SIGTERM and SIGINT: the bench stops its workers and exits; its report is not written
        assert rc == {"SIGKILL": -signal.SIGKILL, "SIGTERM": 128 + signal.SIGTERM, "SIGINT": 130}[sig]
        assert not (tmp_path / "bench.json").exists() and _episode_lines(tmp_path / "episodes.jsonl") < SEEDS
        if sig == "SIGINT":
            assert (
                f"bench: interrupted; `unlearn-gym bench --resume {tmp_path}`" in (tmp_path / "stderr.txt").read_text()
            )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
