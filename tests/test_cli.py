import json
import re
import subprocess
import sys

import pytest

from unlearn_gym.cli import main


def _json_stdout(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)  # stdout holds exactly one JSON object


def test_import_is_quiet_and_light():
    code = "import sys, unlearn_gym, gymnasium; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules)); print('unlearn_gym/SISS-v0' in gymnasium.registry)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.splitlines() == ["[]", "True"]
    assert res.stderr == ""


def test_evaluate_bundled_model_json(tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--samples",
                "2",
                "--ddim-steps",
                "2",
                "--json",
                "--no-progress",
                "--device",
                "cpu",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    fig = _json_stdout(capsys)
    assert fig["scenario"] == "default" and fig["contaminant"] == "trouser" and fig["samples_per_label"] == 2
    assert 0.0 <= fig["forget_rate"] <= 1.0 and 0.0 <= fig["retain_accuracy"] <= 1.0
    assert sorted(fig["per_label"], key=int) == [str(i) for i in range(10)]
    assert all(row["n"] == 2 and sum(row["counts"].values()) == 2 for row in fig["per_label"].values())
    assert set(fig["seconds"]) == {"sampling", "classify", "total"}
    assert (tmp_path / "samples.png").is_file()
    assert json.loads((tmp_path / "evaluation.json").read_text())["forget_rate"] == fig["forget_rate"]


def test_evaluate_table_output(tmp_path, capsys):
    main(
        ["evaluate", "--samples", "1", "--ddim-steps", "1", "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert "forget_rate" in out and "retain_accuracy" in out and "samples.png" in out


def test_pretrain_then_evaluate_then_unlearn(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    main(
        [
            "pretrain",
            "--preset",
            "tiny",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(ckpt),
            "--no-progress",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 3 and (ckpt / "model.safetensors").is_file()
    main(
        [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--samples",
            "1",
            "--ddim-steps",
            "1",
            "--json",
            "--no-progress",
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert _json_stdout(capsys)["checkpoint"] == str(ckpt)
    main(
        ["unlearn", "--policy", "static:0.5", "--steps", "2", "--checkpoint", str(ckpt), "--batch-size", "4", "--samples", "1",
         "--ddim-steps", "1", "--json", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "un")]
    )  # fmt: skip
    res = _json_stdout(capsys)
    assert res["steps"] == 2 and not res["diverged"]
    assert set(res["before"]) >= {"forget_rate", "retain_accuracy"} and set(res["after"]) >= {
        "forget_rate",
        "retain_accuracy",
    }
    assert (tmp_path / "un" / "model" / "model.safetensors").is_file()
    # the episode ran through the bench's runner: the saved model is the one evaluated "after", and the
    # record's return is the sum of the rewards of a policy spec other than static (a schedule)
    from unlearn_gym.metrics.classifier import classifier_dir_for, load_classifier
    from unlearn_gym.metrics.forget import evaluate_model
    from unlearn_gym.models.checkpoint import load_model, load_model_config

    config = load_model_config(ckpt)
    classifier = load_classifier(classifier_dir_for(ckpt, config, None), "cpu")
    scen = config["scenario"]
    again = evaluate_model(
        load_model(tmp_path / "un" / "model", device="cpu")[0], classifier, num_labels=scen["num_labels"],
        contaminated_label=scen["contaminated_label"], contaminant_class=scen["contaminant_class"],
        samples_per_label=1, num_inference_steps=1, seed=0, progress=False, scheduler_config=config.get("scheduler"),
    )  # fmt: skip
    assert again.figures["per_label"] == res["after"]["per_label"]
    main(
        ["unlearn", "--policy", "linear:0.2:0.8", "--steps", "2", "--checkpoint", str(ckpt), "--batch-size", "4",
         "--samples", "1", "--ddim-steps", "1", "--json", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "un2")]
    )  # fmt: skip
    res2 = _json_stdout(capsys)
    assert res2["steps"] == 2 and res2["mean_lambda"] == pytest.approx(
        (0.2 + 0.5) / 2
    )  # λ_t = 0.2 + 0.6·t/2 and res2["before"] == res["before"]


def test_perf_reports_the_ratios(capsys):
    main(["perf", "--preset", "tiny", "--batch", "4", "--repeats", "2", "--device", "cpu", "--json"])
    res = _json_stdout(capsys)
    for key in ("plain_ms", "siss_ms", "siss_probe_ms", "env_ms"):
        assert res[key] > 0
    assert res["siss_over_plain"] == pytest.approx(res["siss_ms"] / res["plain_ms"], rel=1e-2)
    assert res["env_over_siss"] == pytest.approx(res["env_ms"] / res["siss_ms"], rel=1e-2)
    assert res["env_over_siss_probe"] == pytest.approx(res["env_ms"] / res["siss_probe_ms"], rel=1e-2)


def test_user_errors_are_clear(tmp_path):
    with pytest.raises(SystemExit, match="--policy: unknown policy 'linear0.5': use static:L"):
        main(["unlearn", "--policy", "linear0.5"])
    with pytest.raises(SystemExit, match=r"--policy: lam must be in \[0, 1\], got 1.5"):
        main(["unlearn", "--policy", "static:1.5"])
    with pytest.raises(SystemExit, match="not a checkpoint directory"):
        main(["evaluate", "--checkpoint", str(tmp_path / "missing"), "--device", "cpu"])
    with pytest.raises(SystemExit, match="--samples must be >= 1, got 0"):
        main(["evaluate", "--samples", "0"])
    with pytest.raises(SystemExit, match="--features inception: InceptionV3"):
        main(
            [
                "evaluate",
                "--metrics",
                "full",
                "--features",
                "inception",
                "--inception-weights",
                str(tmp_path / "w.pth"),
                "--device",
                "cpu",
            ]
        )
    with pytest.raises(SystemExit, match="mnist-trousers"):
        main(["pretrain", "--scenario", "mnist-trousers", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x")])


def test_evaluate_full_metrics_table(tmp_path, capsys):
    main(
        ["evaluate", "--samples", "3", "--ddim-steps", "1", "--metrics", "full", "--json", "--no-progress", "--device", "cpu",
         "--out", str(tmp_path)]
    )  # fmt: skip
    fig = _json_stdout(capsys)
    table = fig["table"]
    (name,) = table["models"]
    row = table["models"][name]
    assert set(row) >= {"forget", "retain", "per_class", "seconds"}
    assert sorted(row["per_class"], key=int) == [str(i) for i in range(10)]
    assert "FID" in (tmp_path / "table.md").read_text()


def test_full_table_has_one_row_per_model(tmp_path, capsys, tiny_checkpoint):
    main(
        ["evaluate", "--checkpoint", str(tiny_checkpoint), "--compare", str(tiny_checkpoint), "--samples", "2", "--ddim-steps", "1",
         "--metrics", "full", "--json", "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    )  # fmt: skip
    fig = _json_stdout(capsys)
    assert list(fig["table"]["models"]) == [str(tiny_checkpoint), f"{tiny_checkpoint} (2)"]
    # same weights, same seed: the same samples and the same figures
    rows = list(fig["table"]["models"].values())
    assert rows[0]["forget"]["fid"] == rows[1]["forget"]["fid"]


def test_evaluate_robustness_on_a_tiny_checkpoint(tmp_path, capsys, tiny_checkpoint):
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--pretrained", str(tiny_checkpoint), "--samples", "1"]
    argv += ["--ddim-steps", "1", "--metrics", "robustness", "--mia-samples", "4", "--mia-bootstrap", "20"]
    argv += ["--relearn-steps", "2", "--relearn-every", "1", "--relearn-batch-size", "2", "--relearn-samples", "2"]
    argv += ["--relearn-forget-images", "2", "--relearn-forget-per-batch", "1", "--threads", "1"]
    argv += ["--json", "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    fig = _json_stdout(capsys)
    rob = fig["robustness"]
    assert "table" not in fig and 0.0 <= fig["forget_rate"] <= 1.0  # basic figures as ever, no Table 1
    for part in ("forget", "retain"):
        a = rob["membership"][part]
        assert a["n_members"] == a["n_nonmembers"] == 4 and 0.0 <= a["auc"] <= 1.0 and len(a["auc_ci95"]) == 2
    curves = rob["relearn"]["curves"]
    assert list(curves) == ["retain", "mixed"] and curves["mixed"]["steps"] == [0, 1, 2]
    # the pretrained level is the same model's, sampled the same way: reached at step 0 (if it is > 0)
    level = rob["relearn"]["pretrained_forget_rate"]
    assert level == curves["retain"]["forget_rates"][0] and rob["pretrained"] == str(tiny_checkpoint)
    assert curves["retain"]["steps_to_half"] == (0 if level > 0 else None)
    assert set(rob["summary"]) == {"mia_forget_auc", "mia_forget_tpr", "mia_retain_auc", "mia_retain_tpr",
                                   "relearn_retain_forget_rate", "relearn_retain_steps_to_half",
                                   "relearn_mixed_forget_rate", "relearn_mixed_steps_to_half"}  # fmt: skip
    assert json.loads((tmp_path / "evaluation.json").read_text())["robustness"]["summary"] == rob["summary"]
    # the text output too, with the bundled model as the pretrained level
    text_argv = [a for a in argv if a != "--json"]
    text_argv[text_argv.index("--pretrained") + 1] = "bundled"
    main(text_argv)
    out = capsys.readouterr().out
    assert "membership inference (loss attack" in out and re.search(
        r"relearning \(2 steps; pretrained level [01]\.\d{3}\)", out
    )
    assert json.loads((tmp_path / "evaluation.json").read_text())["robustness"]["pretrained"].endswith("model")


def test_evaluate_metrics_option_is_a_comma_separated_set(tmp_path):
    from unlearn_gym.cli import _parse_metrics

    assert _parse_metrics("full") == {"full"} and _parse_metrics("basic") == {"basic"}
    assert _parse_metrics("full,robustness") == _parse_metrics(" robustness , full ") == {"full", "robustness"}
    with pytest.raises(SystemExit, match=r"--metrics: expected a comma-separated subset of basic, full, robustness"):
        main(["evaluate", "--metrics", "full,mia", "--device", "cpu", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--relearn-steps must be >= 1, got 0"):
        main(["evaluate", "--metrics", "robustness", "--relearn-steps", "0"])
    with pytest.raises(SystemExit, match="RelearnConfig.forget_per_batch must be <= batch_size=2, got 4"):
        main(["evaluate", "--metrics", "robustness", "--relearn-batch-size", "2", "--device", "cpu",
              "--out", str(tmp_path)])  # fmt: skip


def test_perf_num_envs_reports_batched_steps(capsys):
    argv = ["perf", "--preset", "tiny", "--batch", "2", "--repeats", "1", "--device", "cpu", "--threads", "1"]
    main(argv + ["--num-envs", "1,2", "--executor", "loop,vmap", "--json"])
    res = _json_stdout(capsys)
    assert [(r["num_envs"], r["executor"]) for r in res["runs"]] == [(1, "loop"), (2, "loop"), (1, "vmap"), (2, "vmap")]
    for r in res["runs"]:
        assert r["speedup_vs_sequential"] == pytest.approx(r["num_envs"] * res["single_ms"] / r["batched_ms"], rel=1e-2)
    with pytest.raises(
        SystemExit, match=r"--executor expected some of \['auto', 'vmap', 'loop', 'graph'\], got \['gpu'\]"
    ):
        main(argv + ["--num-envs", "2", "--executor", "gpu"])
    with pytest.raises(SystemExit, match="--num-envs: expected integers >= 1, got '0,2'"):
        main(argv + ["--num-envs", "0,2"])
    with pytest.raises(SystemExit, match="--executor graph needs a CUDA device .*got --device 'cpu'; drop graph"):
        main(argv + ["--num-envs", "1,4,16,64", "--executor", "loop,vmap,graph"])
