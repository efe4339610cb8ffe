"""Checkpoint I/O: safetensors for tensors, JSON for configuration; atomic writes; no pickle.

A model checkpoint is a directory::

    DIR/config.json          {"format": "unlearn-gym/ddpm", "unet": {...}, "scheduler": {...}, ...}
    DIR/model.safetensors    the weights used for sampling (the EMA weights after pretraining)

and, while a run can be resumed, ``DIR/train_state.safetensors`` (raw and EMA weights, optimizer
moments, RNG state and step, in one file, so that a crash never leaves half of a state).

Every file is written to a temporary name in the same folder, flushed to disk and moved into place
with :func:`os.replace`, so a reader sees the old file or the new one, never a partial one.
Loading reads safetensors and JSON only: a pickled file (``.bin``, ``.pt``, ``.ckpt``, ``.pkl``)
is refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

__all__ = [
    "CheckpointError",
    "write_json_atomic",
    "save_tensors_atomic",
    "load_tensors",
    "read_json",
    "save_model",
    "load_model",
    "load_model_config",
]

MODEL_FORMAT = "unlearn-gym/ddpm"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of the wrong kind, or would need unpickling."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(obj: dict, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    _atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_tensors_atomic(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` as one safetensors file atomically (tensors are made contiguous, on CPU)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write_bytes(Path(path), save(flat, metadata=metadata))


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickled checkpoint ({path.suffix}); unpickling can run "
            "arbitrary code. Convert it to safetensors (safetensors.torch.save_file) and load that."
        )


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: returns (tensors, metadata). Never unpickles."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected a .safetensors file written by unlearn-gym")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({e}); the file is corrupt or of another "
            "format. Re-create it (e.g. rerun `unlearn-gym pretrain`)."
        ) from e
    return tensors, metadata


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object, with a clear error when the file is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def save_model(
    unet: torch.nn.Module, directory: str | os.PathLike, config: dict, state_dict: dict | None = None
) -> Path:
    """Write ``DIR/model.safetensors`` and ``DIR/config.json`` atomically.

    Args:
        unet: the model whose weights are saved (unless ``state_dict`` is given).
        directory: the checkpoint directory (created when missing).
        config: JSON-able configuration; must hold ``"unet"`` (a :class:`UNetConfig` dict) and
            ``"scheduler"``. ``"format"`` is added.
        state_dict: the weights to save instead of ``unet.state_dict()`` (e.g. EMA weights).
    """
    directory = Path(directory)
    for key in ("unet", "scheduler"):
        if key not in config:
            raise ValueError(f"save_model: config must hold {key!r}, got keys {sorted(config)}")
    weights = unet.state_dict() if state_dict is None else state_dict
    save_tensors_atomic(weights, directory / "model.safetensors", metadata={"format": MODEL_FORMAT})
    write_json_atomic({**config, "format": MODEL_FORMAT}, directory / "config.json")
    return directory


def load_model_config(directory: str | os.PathLike) -> dict:
    """Read and check ``DIR/config.json`` of a model checkpoint."""
    directory = Path(directory)
    _refuse_pickle(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory}: not a checkpoint directory; expected a folder with config.json and "
            "model.safetensors (as written by `unlearn-gym pretrain`)"
        )
    config = read_json(directory / "config.json")
    if config.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"{directory}/config.json: expected format {MODEL_FORMAT!r}, got {config.get('format')!r}"
        )
    return config


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a model checkpoint directory: returns (UNet on ``device`` in eval mode, config dict)."""
    from .unet import UNetConfig, make_unet

    directory = Path(directory)
    config = load_model_config(directory)
    unet = make_unet(UNetConfig.from_dict(config["unet"]))
    tensors, _ = load_tensors(directory / "model.safetensors")
    try:
        missing, unexpected = unet.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"{directory}/model.safetensors does not match config.json's UNet: {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}/model.safetensors does not match config.json's UNet: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return unet.to(device).eval(), config
