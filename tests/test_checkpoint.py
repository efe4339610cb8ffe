import json
import pickle

import pytest
import torch

from unlearn_gym.models import CheckpointError, UNetConfig, load_model, make_unet, save_model
from unlearn_gym.models.checkpoint import load_tensors, save_tensors_atomic
from unlearn_gym.models.unet import PRESETS, scheduler_config


def _tiny(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_unet("tiny")


def _config():
    return {"unet": PRESETS["tiny"].to_dict(), "scheduler": scheduler_config(), "scenario": {"name": "test"}}


def test_presets_have_the_documented_sizes():
    sizes = {name: sum(p.numel() for p in make_unet(name).parameters()) for name in ("tiny", "small")}
    assert sizes["tiny"] == 267_953
    assert sizes["small"] == 1_063_777  # the (32, 64, 64) model of DESIGN §11


def test_unet_config_validation():
    with pytest.raises(ValueError, match="norm_num_groups must divide"):
        UNetConfig(block_out_channels=(30, 64, 64))
    with pytest.raises(ValueError, match="equal lengths"):
        UNetConfig(block_out_channels=(32, 64))
    with pytest.raises(ValueError, match="unknown UNet preset"):
        make_unet("huge")
    assert UNetConfig.from_dict(PRESETS["siss"].to_dict()) == PRESETS["siss"]


def test_round_trip_gives_identical_outputs(tmp_path):
    unet = _tiny().eval()
    save_model(unet, tmp_path / "ckpt", _config())
    loaded, config = load_model(tmp_path / "ckpt")
    assert config["scenario"] == {"name": "test"}
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 10, 500, 999])
    y = torch.tensor([0, 1, 2, 9])
    with torch.no_grad():
        assert torch.equal(unet(x, t, class_labels=y).sample, loaded(x, t, class_labels=y).sample)
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_refuses_pickled_checkpoints(tmp_path):
    payload = tmp_path / "model.pt"
    torch.save(_tiny().state_dict(), payload)
    with pytest.raises(CheckpointError, match="refusing to load a pickled checkpoint"):
        load_tensors(payload)
    with pytest.raises(CheckpointError, match="refusing to load a pickled checkpoint"):
        load_model(tmp_path / "model.pt")
    # a pickle hiding under the safetensors name is not unpickled either
    ckpt = tmp_path / "ckpt"
    save_model(_tiny(), ckpt, _config())

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (ckpt / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(ckpt)


def test_refuses_corrupt_checkpoints(tmp_path):
    ckpt = tmp_path / "ckpt"
    save_model(_tiny(), ckpt, _config())
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(ckpt)
    save_model(_tiny(), ckpt, _config())
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        load_model(ckpt)
    (ckpt / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="expected format"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "missing")


def test_mismatched_weights_are_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    save_model(_tiny(), ckpt, _config())
    config = json.loads((ckpt / "config.json").read_text())
    config["unet"] = PRESETS["small"].to_dict()
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match config.json's UNet"):
        load_model(ckpt)


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors_atomic({"a": torch.zeros(3)}, path, metadata={"v": "1"})
    save_tensors_atomic({"a": torch.ones(5)}, path, metadata={"v": "2"})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.ones(5)) and meta["v"] == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]
