"""`nbagent-train sft` on a real tiny Qwen2 (CPU): selection, NLL, exports, resume, initial adapters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from typer.testing import CliRunner  # noqa: E402

from nbagent.trajectory import Reward, Termination, Trajectory, TrajectoryWriter  # noqa: E402
from nbagent_train.backends.trl import TRLBackend  # noqa: E402
from nbagent_train.cli.app import app  # noqa: E402
from nbagent_train.config.sft import SelectConfig, SFTConfig  # noqa: E402
from nbagent_train.errors import BackendError, SampleBuildError, TrainConfigError  # noqa: E402
from nbagent_train.objective.batching import collate  # noqa: E402
from nbagent_train.objective.samples import Sample, build_samples  # noqa: E402
from nbagent_train.runs.folder import RunFolder  # noqa: E402
from nbagent_train.runs.metrics import read_metrics  # noqa: E402
from nbagent_train.sft import SFTRun, select_episodes, sft  # noqa: E402
from tests.fixtures.trajectories import BAD, GOOD  # noqa: E402
from tests.fixtures.trajectories import episode as make_episode  # noqa: E402
from tests.train.runs import adapter_weights, run_cli  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]

OK = "<output>5</output>"


def _episode(
    tokenizer: Any,
    task: str,
    *,
    correct: float | None = 1.0,
    termination: Termination = Termination.SUBMITTED,
    text: str = GOOD,
    with_ids: bool = True,
) -> Trajectory:
    traj = make_episode(
        tokenizer,
        task,
        [(text, OK), (text, OK)],
        correct,
        termination=termination,
        with_ids=with_ids,
        question=f"What is {task} + 3?",
    )
    if correct is not None:
        traj.reward = Reward(total=correct, breakdown={"correct": correct})
    return traj


def _mixed(tokenizer: Any) -> list[Trajectory]:
    """2 good, 1 duplicate of a good one, 1 wrong answer, 1 out of steps, 1 unscored."""
    return [
        _episode(tokenizer, "a"),
        _episode(tokenizer, "b", text=BAD),
        _episode(tokenizer, "a"),
        _episode(tokenizer, "c", correct=0.0),
        _episode(tokenizer, "d", termination=Termination.MAX_STEPS),
        _episode(tokenizer, "e", correct=None),
    ]


def _write(path: Path, trajectories: list[Trajectory]) -> Path:
    with TrajectoryWriter(path) as writer:
        for traj in trajectories:
            writer.write(traj)
    return path


def _config(model_dir: Path, out: Path | None = None, **sections: Any) -> SFTConfig:
    data: dict[str, Any] = {
        "model": str(model_dir),
        "out": None if out is None else str(out),
        "lora": {"rank": 4},
        "optim": {"learning_rate": 1e-2},
        "run": {"micro_batch_tokens": 4096, "tensorboard": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return SFTConfig.model_validate(data)


def _backend(config: SFTConfig) -> TRLBackend:
    backend = TRLBackend(config)
    backend.setup()
    return backend


def _samples(tokenizer: Any, trajectories: list[Trajectory], config: SFTConfig) -> list[Sample]:
    return build_samples(trajectories, config.samples, tokenizer).samples


def _plain_logps(model: Any, sample: Sample) -> Any:
    """Completion-region logprobs from a plain transformers forward."""
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[-len(sample.completion_ids) :]


def test_selection_counts_each_filter_and_dedupes(tiny_tokenizer: Any) -> None:
    episodes = _mixed(tiny_tokenizer)
    kept, summary = select_episodes(episodes, SelectConfig())
    assert (summary.read, summary.termination, summary.duplicates, summary.kept) == (6, 1, 1, 4)
    assert [t.task.id for t in kept] == ["a", "b", "c", "e"]

    kept, summary = select_episodes(episodes, SelectConfig(success_key="correct"))
    assert [t.task.id for t in kept] == ["a", "b"]
    assert (summary.success_key, summary.duplicates) == (2, 1)  # the wrong answer and the unscored one

    kept, summary = select_episodes(episodes, SelectConfig(min_reward=0.5, terminations=None, dedupe=False))
    assert [t.task.id for t in kept] == ["a", "b", "a", "d"]
    assert (summary.termination, summary.min_reward) == (0, 2)

    with pytest.raises(TrainConfigError, match="no episode's reward breakdown has 'solved'"):
        select_episodes(episodes, SelectConfig(success_key="solved"))


def test_sft_config_defaults_survive_partial_sections() -> None:
    config = SFTConfig.model_validate({"samples": {"max_prompt_tokens": 100}, "run": {"epochs": 2}})
    assert config.samples.mode == "merged"
    assert config.samples.missing_reward == "zero"
    assert config.run.batch_groups == 8
    assert config.objective == "sft"
    assert config.aggregation == "token_mean"
    assert SFTConfig.model_validate({"samples": {"mode": "per_step"}}).samples.mode == "per_step"
    with pytest.raises(ValueError, match=r"lora\.init_adapter needs LoRA"):
        SFTConfig.model_validate({"lora": {"rank": 0, "init_adapter": "x"}})


def test_merged_nll_scores_completion_tokens_only(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    config = _config(tiny_model_dir)
    [sample] = _samples(tiny_tokenizer, [_episode(tiny_tokenizer, "a")], config)
    completion = [*tiny_tokenizer(GOOD, add_special_tokens=False)["input_ids"], tiny_tokenizer.eos_token_id]
    assert len(sample.segments) == 2
    assert sample.num_scored == 2 * len(completion)
    first, second = sample.segments
    assert sample.completion_ids[first.start : first.end] == completion
    assert sample.completion_ids[second.start : second.end] == completion
    assert 0 in sample.loss_mask[first.end : second.start]  # the observation between them is masked
    mb = collate([sample], 0, with_advantages=False)
    assert int((mb.labels != -100).sum()) == sample.num_scored

    backend = _backend(config)
    loss, stats = backend.compute_loss([sample])
    base = backend.accelerator.unwrap_model(backend.model)
    with base.disable_adapter():
        logps = _plain_logps(base, sample)
    mask = torch.tensor(sample.loss_mask, dtype=torch.bool)
    assert float(loss.detach()) == pytest.approx(float(-logps[mask].mean()), abs=1e-4)
    assert stats.tokens == sample.num_scored
    backend.close()


def test_nll_falls_and_retokenized_episodes_train(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    config = _config(tiny_model_dir)
    trajectories = [
        _episode(tiny_tokenizer, "a"),
        _episode(tiny_tokenizer, "b", with_ids=False),
    ]
    built = build_samples(trajectories, config.samples, tiny_tokenizer)
    assert [s.retokenized for s in built.samples] == [False, True]
    assert built.summary.retokenized_steps == 2
    backend = _backend(config)
    losses = [backend.step(built.samples)["loss"] for _ in range(5)]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] < 0.95 * losses[0]
    metrics = backend.step(built.samples)
    assert metrics["loss"] == pytest.approx(metrics["nll"], rel=1e-4)
    assert {"perplexity", "tokens_per_s", "scored_tokens"} <= metrics.keys()
    assert not {"kl", "clip_frac", "reward_mean"} & metrics.keys()
    backend.close()


def test_cli_trains_exports_an_adapter_and_resumes(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = _write(tmp_path / "t.jsonl", _mixed(tiny_tokenizer))
    out = tmp_path / "sft"
    args = [
        "sft", "-t", str(data), "--model", str(tiny_model_dir), "--out", str(out), "--lora-rank", "4",
        "--lr", "0.01", "--epochs", "2", "--batch-episodes", "1", "--save-every", "1",
        "--success-key", "correct", "--set", "run.tensorboard=false",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Episode selection" in result.output
    assert "ppl" in result.output
    assert json.loads((out / "selection.json").read_text())["kept"] == 2
    records = read_metrics(out)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] < records[0]["loss"]
    assert json.loads((out / "result.json").read_text())["exports"][0]["kind"] == "lora"
    assert (out / "training.png").stat().st_size > 10_000  # the loss curves, drawn at each checkpoint

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    [sample, *_] = _samples(tiny_tokenizer, [_episode(tiny_tokenizer, "a")], SFTConfig())
    before = _plain_logps(base, sample)
    tuned = _plain_logps(PeftModel.from_pretrained(base, str(out / "final")), sample)
    assert not torch.allclose(before, tuned, atol=1e-4)

    # Stop after 2 of the 4 steps, then resume: the same adapter as the straight run.
    cut = tmp_path / "cut"
    config = _config(
        tiny_model_dir,
        cut,
        trajectories=[str(data)],
        select={"success_key": "correct"},
        run={"epochs": 2, "batch_groups": 1, "save_every": 1, "max_steps": 2},
    )
    assert sft(config).global_step == 2
    assert [p.name for p in RunFolder(cut).checkpoints()] == ["step-000001", "step-000002"]
    config.run.max_steps = None
    resumed = sft(config, resume=True)
    assert resumed.resumed_from == cut / "checkpoints" / "step-000002"
    assert resumed.global_step == 4
    mine, theirs = adapter_weights(cut / "final"), adapter_weights(out / "final")
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], atol=1e-6), key


def test_init_adapter_starts_from_the_adapter(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = _config(tiny_model_dir)
    samples = _samples(tiny_tokenizer, [_episode(tiny_tokenizer, "a")], config)
    source = _backend(config)
    source.step(samples)
    source.export(tmp_path / "adapter")
    expected = source.score(samples)
    source.close()

    warm = _backend(_config(tiny_model_dir, lora={"init_adapter": str(tmp_path / "adapter")}))
    [start] = warm.score(samples)
    assert start == pytest.approx(expected[0], abs=1e-5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    untrained = _plain_logps(base, samples[0]).tolist()
    loaded = _plain_logps(PeftModel.from_pretrained(base, str(tmp_path / "adapter")), samples[0])
    assert start == pytest.approx(loaded.tolist(), abs=1e-4)
    assert start != pytest.approx(untrained, abs=1e-4)
    # what `nbagent-train rl` exports and publishes before its first iteration: the initial adapter
    warm.export(tmp_path / "v00000")
    published, given = adapter_weights(tmp_path / "v00000"), adapter_weights(tmp_path / "adapter")
    assert published.keys() == given.keys()
    assert all(torch.equal(published[k], given[k]) for k in given)
    warm.step(samples)  # trainable: the step moves it
    assert warm.score(samples)[0] != pytest.approx(start, abs=1e-5)
    warm.close()


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"init_adapter": "{tmp}/missing"}, "is not a PEFT adapter folder"),
        ({"init_adapter": "{tmp}/adapter", "rank": 8}, "has rank 4 but lora.rank is 8; set lora.rank=4"),
        ({"init_adapter": "{tmp}/adapter", "target_modules": ["q_proj"]}, "set lora.target_modules"),
        ({"init_adapter": "{tmp}/other"}, "was trained on '/models/other-base', not on the policy"),
    ],
)
def test_bad_init_adapters_are_one_line_errors(
    tiny_model_dir: Path, tmp_path: Path, lora: dict[str, Any], message: str
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": 4,
                "lora_alpha": 8,
                "target_modules": [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                ],
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": str(tiny_model_dir),
            }
        )
    )
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(
        json.dumps(config | {"base_model_name_or_path": "/models/other-base"})
    )
    settings = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in lora.items()}
    with pytest.raises(BackendError, match=message) as info:
        _backend(_config(tiny_model_dir, lora=settings))
    assert "\n" not in str(info.value)


def test_smollm2_alias_resolves_as_for_rl(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbagent.models.local

    monkeypatch.setattr(nbagent.models.local, "ensure_smollm2", lambda: tiny_model_dir)
    run = SFTRun(_config(Path("smollm2-135m-instruct"), tmp_path / "o"))
    assert run.config.model == str(tiny_model_dir)


def test_nothing_kept_is_one_error_line(tiny_tokenizer: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "t.jsonl", _mixed(tiny_tokenizer))
    run = SFTRun(_config(tiny_model_dir, tmp_path / "o", trajectories=[str(data)], select={"min_reward": 2}))
    with pytest.raises(SampleBuildError, match="none of the 6 episodes passed the filters"):
        run.build()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "does not exist or is not a file"),
        (["--set", "select.min_reward=5"], "select: none of the 6 episodes passed the filters"),
    ],
)
def test_cli_errors_are_one_line(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path, extra: list[str], message: str
) -> None:
    data = tmp_path / "t.jsonl"
    if extra:
        _write(data, _mixed(tiny_tokenizer))
    out = tmp_path / "o"
    proc = run_cli(
        "sft", "-t", str(data), "--model", str(tiny_model_dir), "--out", str(out), *extra, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert line.startswith("error: "), proc.stderr
    assert message in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (out / "checkpoints").exists()
