"""The train/validation/test splits of reset seeds and instances, and who uses which."""

import pytest

from unlearn_gym.splits import SPLITS, check_training_seeds, split_of_seed


def test_the_splits_are_disjoint_and_training_cannot_reach_validation_or_test():
    names = list(SPLITS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for field in ("seeds", "instances"):
                ra, rb = getattr(SPLITS[a], field), getattr(SPLITS[b], field)
                assert ra.stop <= rb.start or rb.stop <= ra.start, (a, b, field)
    assert SPLITS["train"].seeds == range(2**32)  # every 32-bit seed: SB3's seed + k, MCPG's episode seeds
    assert SPLITS["train"].first_seeds(8) == tuple(range(8))  # the main job's seeds 0..7
    assert SPLITS["test"].first_seeds(2) == (2**32 + 1_000_000, 2**32 + 1_000_001)
    assert SPLITS["test"].first_instances(3) == (2000, 2001, 2002)
    assert [split_of_seed(s) for s in (0, 2**32 - 1, 2**32, 2**32 + 1_000_000, 2**32 + 2_000_000)] == [
        "train", "train", "validation", "test", None,
    ]  # fmt: skip
    check_training_seeds(0, 8)
    with pytest.raises(ValueError, match=r"training seeds 4294967290..4294967297 must lie in the train split"):
        check_training_seeds(2**32 - 6, 8)
    with pytest.raises(ValueError, match="must lie in the train split"):
        check_training_seeds(-1)
    with pytest.raises(ValueError, match="the test split has 1000 instances; asked for 1001"):
        SPLITS["test"].first_instances(1001)


def test_bench_split_and_train_seeds(tmp_path):
    from unlearn_gym.agents import train_agent
    from unlearn_gym.cli.benchmark import _bench_config
    from unlearn_gym.cli.parser import build_parser

    def config(*argv):
        args = build_parser().parse_args(["bench", *argv])
        return _bench_config(args, {"device": "cpu"})

    assert config("--seeds", "3").seeds == (0, 1, 2) and config().seeds == tuple(range(8))  # train split by default
    test = config("--split", "test", "--seeds", "3", "--instances", "2")
    assert test.seeds == SPLITS["test"].first_seeds(3) and test.instances == (2000, 2001)
    assert config("--split", "test", "--seed-list", "5").seeds == (5,)  # explicit seeds win
    with pytest.raises(ValueError, match="training seeds 4294967296..4294967296 must lie in the train split"):
        train_agent("mcpg", total_timesteps=1, seed=2**32, out=tmp_path / "agent")
    assert not (tmp_path / "agent").exists()  # refused before anything is written


def test_the_bench_warns_when_an_agent_is_benched_on_train_split_seeds(tiny_checkpoint):
    import dataclasses

    from test_bench import _config

    from unlearn_gym.bench import EpisodeRunner, policy_from_spec

    class Trained:  # a trained agent's marks: the env settings it was trained with
        env_kwargs = {}

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            raise AssertionError("not run here")

    config = _config(tiny_checkpoint)
    runner = EpisodeRunner({"agent": Trained(), "static:0.5": policy_from_spec("static:0.5")}, config)
    assert runner.warnings() == [
        "agent is benched on train-split seeds (2 of 2), the episodes agents train on (an agent trained with "
        "seed s began on reset seed s); --split test holds them out"
    ]
    runner.close()
    held_out = dataclasses.replace(config, seeds=SPLITS["test"].first_seeds(2))
    runner = EpisodeRunner({"agent": Trained()}, held_out)
    assert runner.warnings() == []
    runner.close()
