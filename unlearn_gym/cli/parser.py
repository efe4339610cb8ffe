"""The ``unlearn-gym`` argument parser: the shared options (argparse parents, each declared once with one
default) and one small builder per command.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .benchmark import cmd_bench
from .evaluate import cmd_evaluate
from .perf import cmd_perf
from .pretrain import cmd_pretrain, cmd_train_classifier
from .tasks import cmd_tasks
from .train import cmd_sweep, cmd_train
from .unlearn import cmd_unlearn

__all__ = ["build_parser"]


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


def _add_ray_args(p) -> None:
    """The Ray cluster and each trial's resources (``bench --backend ray``, ``sweep``)."""
    p.add_argument(
        "--address", default=None, help="the Ray cluster (HOST:PORT, ray://HOST:PORT or auto; default: a local one)"
    )
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each Ray trial declares (its torch threads)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs each Ray trial declares (0.5: two per GPU)")


def _add_agent_device(p: argparse.ArgumentParser) -> None:
    """``--agent-device`` of ``train`` and ``sweep``."""
    p.add_argument(
        "--agent-device", default="cpu", help="the agent networks' device (SB3's MLPs are fastest on the CPU)"
    )


_Command = Callable[..., argparse.ArgumentParser]
"""``command(name, summary, *shared)``: a new subcommand's parser with the named shared options."""


def _add_pretrain(command: _Command) -> None:
    """``unlearn-gym pretrain`` and its options."""
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


def _add_train_classifier(command: _Command) -> None:
    """``unlearn-gym train-classifier`` and its options."""
    p = command("train-classifier", "train the evaluation classifier on a scenario", "threads", "progress")
    _add_scenario_args(p)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_classifier)


def _add_evaluate(command: _Command) -> None:
    """``unlearn-gym evaluate`` and its options."""
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


def _add_unlearn(command: _Command) -> None:
    """``unlearn-gym unlearn`` and its options."""
    p = command(
        "unlearn",
        "run one episode of a λ-policy on SISS-v0 and evaluate the model before and after",
        "checkpoint", "classifier", "device", "threads", "progress", "json",
    )  # fmt: skip
    p.add_argument(
        "--policy",
        default="static:0.5",
        help="a policy spec as in bench --policies: static:L, linear:A:B, cosine:A:B, random, vi-adaptive, "
        "vi-variance, ppo or agent:DIR",
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0, help="env seed (batches, probe)")
    p.add_argument("--samples", type=int, default=200, help="evaluation samples per label")
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--out", default="runs/unlearn")
    p.set_defaults(func=cmd_unlearn)


def _add_train(command: _Command) -> None:
    """``unlearn-gym train`` and its options."""
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
    _add_agent_device(p)
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--verbose", type=int, default=0)
    p.set_defaults(func=cmd_train)


def _add_bench(command: _Command) -> None:
    """``unlearn-gym bench`` and its options."""
    p = command(
        "bench",
        "benchmark λ-policies and agents on equal seeds (no arguments: the main job on the embedded default)",
        "env", "checkpoint", "classifier", "device", "threads", "progress", "json",
    )  # fmt: skip
    _add_bench_episode_args(p)
    _add_bench_evaluation_args(p)
    _add_bench_output_args(p)
    p.set_defaults(func=cmd_bench)


def _add_bench_episode_args(p: argparse.ArgumentParser) -> None:
    """bench: the policies, the env settings, the seeds and how the episodes run."""
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
    p.add_argument(
        "--split",
        default="train",
        choices=["train", "validation", "test"],
        help="whose seeds and instances: the first --seeds seeds (and --instances instances) of this split "
        "(unlearn_gym.splits; train: seeds 0..N-1, on which agents train; test: held out from training and tuning)",
    )
    p.add_argument(
        "--seed-list", type=int, nargs="+", default=None, help="explicit seeds (overrides --seeds and --split)"
    )
    p.add_argument(
        "--instances",
        type=int,
        default=None,
        help="forget-subset instances: the split's first N (0: the whole forget set; default: the task's, else 0)",
    )
    p.add_argument(
        "--task",
        default=None,
        help="a task of the declared set (unlearn-gym tasks): its model, settings, seeds and instances, which the "
        "explicit options override",
    )


def _int_list(text: str) -> tuple[int, ...]:
    """``"10,25,50"`` → (10, 25, 50)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 10,25,50, got {text!r}") from None


def _add_bench_evaluation_args(p: argparse.ArgumentParser) -> None:
    """bench: the evaluation of each unlearned model and the references."""
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
    p.add_argument(
        "--curve-steps",
        type=_int_list,
        default=(),
        metavar="T1,T2,...",
        help="also sample the forget rate after these steps of every episode (e.g. 10,25,50 at T = 100): the "
        "forget curve's AUC and steps to half and a tenth of the pretrained rate, with intervals",
    )
    p.add_argument("--metrics", default="basic", choices=["basic", "full"], help="full: also FID/KID/IS/SSIM")
    p.add_argument(
        "--retrained",
        default="bundled",
        help="the model retrained without the forget set, a reference row and the distance column "
        "(a model directory; 'bundled': the bundled one, with the bundled model; 'none')",
    )


def _add_bench_output_args(p: argparse.ArgumentParser) -> None:
    """bench: the report folder, resuming, the statistics, the attacks, Ray and recording."""
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


def _add_sweep(command: _Command) -> None:
    """``unlearn-gym sweep`` and its options."""
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
    _add_agent_device(p)
    _add_ray_args(p)
    p.add_argument("--out", default="runs/sweep", help="folder for sweep.csv, sweep.md, trials/ and tune/")
    p.set_defaults(func=cmd_sweep)


def _add_perf(command: _Command) -> None:
    """``unlearn-gym perf`` and its options."""
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


def _add_tasks(command: _Command) -> None:
    """``unlearn-gym tasks [build NAME ...]``."""
    p = command(
        "tasks",
        "list the declared task set, or build its models (tasks build NAME ...)",
        "device",
        "threads",
        "progress",
        "json",
    )
    p.add_argument("action", nargs="?", default="list", choices=["list", "build"], help="list (default) or build")
    p.add_argument("names", nargs="*", default=[], help="build: the tasks whose models to make ('all': every one)")
    p.set_defaults(func=cmd_tasks)


def build_parser() -> argparse.ArgumentParser:
    """The ``unlearn-gym`` parser: one subcommand per command, the shared options from :func:`_shared_options`."""
    parser = argparse.ArgumentParser(
        prog="unlearn-gym", description="Machine unlearning of diffusion models as Gymnasium environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    shared = _shared_options()

    def command(name: str, summary: str, *parents: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, parents=[shared[k] for k in parents])

    for add in (
        _add_pretrain,
        _add_train_classifier,
        _add_evaluate,
        _add_unlearn,
        _add_train,
        _add_bench,
        _add_sweep,
        _add_perf,
        _add_tasks,
    ):
        add(command)
    return parser
