import pytest
import torch

from unlearn_gym.models import load_model
from unlearn_gym.models.checkpoint import load_tensors
from unlearn_gym.models.pretrain import PretrainConfig, pretrain
from unlearn_gym.models.sampling import sample_per_label

CFG = dict(batch_size=16, lr=2e-3, warmup_steps=5, checkpoint_every=20, seed=3)

# two OpenMP threads on a busy 2-core machine stall the tiny UNet (20 steps at load 8: 214 s against 10 s)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_pretrain_lowers_the_loss(default_scenario, tmp_path):
    result = pretrain(
        default_scenario,
        tmp_path / "run",
        preset="tiny",
        config=PretrainConfig(steps=100, **CFG),
        progress=False,
        tensorboard=False,
    )
    assert result.step == 100
    # the ε-prediction loss of an untrained UNet is of order E‖ε‖²/d = 1; training must cut it
    assert result.first_loss > 0.3
    assert result.final_loss < 0.5 * result.first_loss
    unet, config = load_model(tmp_path / "run")
    assert config["step"] == 100 and config["scenario"]["name"] == "default"
    assert config["unet"]["num_class_embeds"] == 10


def test_resume_equals_an_uninterrupted_run(default_scenario, tmp_path):
    # 8 steps in one go against 4 + 4 resumed; the resumed half crosses the end of the warm-up (5)
    kwargs = dict(preset="tiny", progress=False, tensorboard=False)
    pretrain(default_scenario, tmp_path / "a", config=PretrainConfig(steps=8, **CFG), **kwargs)
    pretrain(default_scenario, tmp_path / "b", config=PretrainConfig(steps=4, **CFG), **kwargs)
    pretrain(default_scenario, tmp_path / "b", config=PretrainConfig(steps=8, **CFG), **kwargs)
    a, _ = load_tensors(tmp_path / "a" / "train_state.safetensors")
    b, _ = load_tensors(tmp_path / "b" / "train_state.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a different trajectory (seed) may not resume into this run
    with pytest.raises(ValueError, match="written with another PretrainConfig"):
        pretrain(default_scenario, tmp_path / "b", config=PretrainConfig(steps=12, **{**CFG, "seed": 4}), **kwargs)


def test_pretrain_config_validation():
    with pytest.raises(ValueError, match="PretrainConfig.steps must be >= 1, got 0"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        PretrainConfig(lr_schedule="linear")
    cos = PretrainConfig(steps=100, warmup_steps=10, lr=1.0, lr_schedule="cosine")
    assert (
        cos.lr_at(0) == pytest.approx(0.1)
        and cos.lr_at(10) == pytest.approx(1.0)
        and cos.lr_at(100) == pytest.approx(0.0)
    )
    assert PretrainConfig(warmup_steps=10, lr=1.0).lr_at(5000) == 1.0


def test_sampling_is_seeded():
    from unlearn_gym.models import make_unet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = make_unet("tiny")
    a, la = sample_per_label(unet, 3, 2, seed=5, num_inference_steps=3)
    b, _ = sample_per_label(unet, 3, 2, seed=5, num_inference_steps=3)
    c, _ = sample_per_label(unet, 3, 2, seed=6, num_inference_steps=3)
    assert a.shape == (6, 1, 28, 28) and la.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
