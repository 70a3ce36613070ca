"""Trajectories -> samples: recorded ids, merging, re-tokenization, limits, the build summary."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from rich.console import Console

from nbagent.trajectory import Termination, Trajectory
from nbagent_train.config.base import SampleConfig
from nbagent_train.errors import SampleBuildError
from nbagent_train.objective.samples import build_samples
from tests.fixtures.trajectories import (
    GOOD,
    completion_ids,
    episode,
    grouped_episodes,
    model_call,
    prompt_ids,
    step,
    trajectory,
)


def _synthetic(
    steps: list[tuple[list[int], list[int], list[float] | None]], reward: float | None = 1.0
) -> Trajectory:
    """An episode from raw (prompt ids, completion ids, logprobs) triples."""
    calls = [
        model_call("c", prompt_token_ids=p, completion_token_ids=c, completion_logprobs=lp)
        for p, c, lp in steps
    ]
    return trajectory(
        steps=[step(i, code="pass", cell=None, call=call) for i, call in enumerate(calls)], reward=reward
    )


def test_per_step_samples_are_the_recorded_ids(tiny_tokenizer: Any) -> None:
    def fake_logprobs(_: list[int], c: list[int]) -> list[float]:
        return [-0.1 * (i + 1) for i in range(len(c))]

    traj = episode(tiny_tokenizer, "t", [(GOOD, "<output>5</output>")] * 3, 0.5, logprobs=fake_logprobs)
    built = build_samples([traj])
    assert len(built.samples) == 3
    for recorded, sample in zip(traj.steps, built.samples, strict=True):
        call = recorded.model_call
        assert sample.prompt_ids == call.prompt_token_ids
        assert sample.completion_ids == call.completion_token_ids
        assert sample.completion_ids[-1] == tiny_tokenizer.eos_token_id
        assert sample.loss_mask == [1] * len(sample.completion_ids)
        assert sample.behaviour_logprobs == call.completion_logprobs
        assert [(s.step_index, s.start, s.end) for s in sample.segments] == [
            (recorded.index, 0, len(sample.completion_ids))
        ]
        assert sample.reward == 0.5
        assert not sample.retokenized
    assert built.summary.samples == 3
    assert built.summary.completion_tokens == sum(len(s.completion_ids) for s in built.samples)
    assert built.summary.steps_without_logprobs == 0


def test_merged_mode_joins_exact_prefixes_and_masks_observations() -> None:
    traj = _synthetic(
        [
            ([1, 2, 3], [4, 5], [-0.1, -0.2]),
            ([1, 2, 3, 4, 5, 6, 7], [8], [-0.3]),
            ([1, 2, 9], [10, 11], None),  # history rewritten: a prefix break
        ]
    )
    built = build_samples([traj], SampleConfig(mode="merged"))
    first, second = built.samples
    assert first.prompt_ids == [1, 2, 3]
    assert first.completion_ids == [4, 5, 6, 7, 8]
    assert first.loss_mask == [1, 1, 0, 0, 1]
    assert first.behaviour_logprobs is not None
    assert first.behaviour_logprobs[:2] == [-0.1, -0.2]
    assert math.isnan(first.behaviour_logprobs[2])
    assert math.isnan(first.behaviour_logprobs[3])
    assert first.behaviour_logprobs[4] == -0.3
    assert [(s.step_index, s.start, s.end) for s in first.segments] == [(0, 0, 2), (1, 4, 5)]
    assert second.prompt_ids == [1, 2, 9]
    assert second.behaviour_logprobs is None
    s = built.summary
    assert (s.samples, s.merged_steps, s.prefix_breaks, s.observation_tokens) == (2, 1, 1, 2)
    assert s.completion_tokens == 5


def test_merged_mode_on_chat_template_episodes(tiny_tokenizer: Any) -> None:
    """With a template that keeps history verbatim, a whole episode becomes one sequence."""
    episodes = grouped_episodes(tiny_tokenizer, groups=1, per_group=2, steps=3)
    per_step = build_samples(episodes)
    merged = build_samples(episodes, SampleConfig(mode="merged"))
    assert merged.summary.samples == 2
    assert merged.summary.prefix_breaks == 0
    assert merged.summary.merged_steps == 4
    # The scored tokens are the same in both modes; merged mode shares the context.
    assert merged.summary.completion_tokens == per_step.summary.completion_tokens
    last = episodes[0].steps[-1].model_call
    assert last.prompt_token_ids is not None
    assert last.completion_token_ids is not None
    sample = merged.samples[0]
    assert sample.prompt_ids + sample.completion_ids == last.prompt_token_ids + last.completion_token_ids


def test_steps_without_ids_are_retokenized_with_a_warning(
    tiny_tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    turns = [(GOOD, "<output>5</output>")] * 2
    recorded = build_samples([episode(tiny_tokenizer, "t", turns, 1.0)])
    with caplog.at_level(logging.WARNING, logger="nbagent_train"):
        retok = build_samples(
            [episode(tiny_tokenizer, "t", turns, 1.0, with_ids=False)], tokenizer=tiny_tokenizer
        )
    assert "re-tokenized" in caplog.text
    assert retok.summary.retokenized_steps == 2
    for a, b in zip(recorded.samples, retok.samples, strict=True):
        assert b.retokenized
        assert b.behaviour_logprobs is None
        assert (a.prompt_ids, a.completion_ids) == (b.prompt_ids, b.completion_ids)


def test_retokenized_prefill_continues_the_assistant_turn(tiny_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "<think>"}]
    call = model_call("sum</think>", messages, prefill="<think>", finish_reason="length")
    traj = _synthetic([([1], [2], None)])
    traj.steps[0].model_call = call
    sample = build_samples([traj], tokenizer=tiny_tokenizer).samples[0]
    text = tiny_tokenizer.decode(sample.prompt_ids)
    assert text.endswith("<|im_start|>assistant\n<think>")
    # finish_reason "length": the model did not stop, so no EOS is appended
    assert sample.completion_ids == tiny_tokenizer("sum</think>", add_special_tokens=False)["input_ids"]


def test_retokenization_can_be_refused(tiny_tokenizer: Any) -> None:
    traj = episode(tiny_tokenizer, "t", [(GOOD, "")], 1.0, with_ids=False)
    with pytest.raises(SampleBuildError, match="allow_retokenized"):
        build_samples([traj], SampleConfig(allow_retokenized=False), tiny_tokenizer)
    with pytest.raises(SampleBuildError, match="tokenizer"):
        build_samples([traj])


def test_length_limits_are_applied_and_counted() -> None:
    traj = _synthetic([(list(range(10)), [1, 2, 3, 4, 5], [-1.0] * 5), ([1, 2], [3], None)])
    dropped = build_samples([traj], SampleConfig(max_prompt_tokens=5, max_completion_tokens=3))
    assert dropped.summary.prompts_dropped == 1
    assert dropped.summary.completions_truncated == 1
    assert [s.prompt_ids for s in dropped.samples] == [[1, 2]]

    kept = build_samples(
        [traj], SampleConfig(max_prompt_tokens=5, max_completion_tokens=3, prompt_overflow="truncate_left")
    )
    first = kept.samples[0]
    assert first.prompt_ids == [5, 6, 7, 8, 9]
    assert first.completion_ids == [1, 2, 3]
    assert first.behaviour_logprobs == [-1.0] * 3
    assert kept.summary.prompts_truncated == 1


def test_merged_mode_breaks_at_the_length_cap() -> None:
    traj = _synthetic([([1, 2], [3], None), ([1, 2, 3, 4], [5], None), ([1, 2, 3, 4, 5, 6], [7], None)])
    built = build_samples([traj], SampleConfig(mode="merged", max_prompt_tokens=3, max_completion_tokens=2))
    assert built.summary.merged_steps == 1
    assert built.summary.length_breaks == 1
    assert built.summary.prompts_dropped == 1  # the step after the break has a 6-token prompt
    assert [s.num_tokens for s in built.samples] == [5]


def test_missing_reward_policies() -> None:
    traj = _synthetic([([1], [2], None)], reward=None)
    with pytest.raises(SampleBuildError, match="no reward"):
        build_samples([traj])
    zero = build_samples([traj], SampleConfig(missing_reward="zero"))
    assert zero.samples[0].reward == 0.0
    assert zero.summary.episodes_without_reward == 1
    dropped = build_samples([traj], SampleConfig(missing_reward="drop"))
    assert dropped.samples == []
    assert dropped.summary.episodes_dropped == 1


def test_failed_episodes_are_kept_with_their_reward(tiny_tokenizer: Any) -> None:
    failed = episode(tiny_tokenizer, "t", [(GOOD, "")], 0.0, termination=Termination.TIMEOUT)
    built = build_samples([failed])
    assert len(built.samples) == 1
    assert built.summary.terminations == {"timeout": 1}


def test_mismatched_logprobs_are_ignored_and_counted() -> None:
    built = build_samples([_synthetic([([1], [2, 3], [-0.5])])])
    assert built.samples[0].behaviour_logprobs is None
    assert built.summary.logprob_length_mismatch == 1


def test_summary_table_lists_every_count(tiny_tokenizer: Any) -> None:
    built = build_samples(grouped_episodes(tiny_tokenizer, groups=1, per_group=2, steps=1))
    console = Console(record=True, width=120)
    console.print(built.summary.as_table())
    text = console.export_text()
    for label, value in built.summary.rows():
        assert label.strip() in text
        assert value in text


def test_prompt_ids_match_what_the_template_renders(tiny_tokenizer: Any) -> None:
    """Guard for the helpers: ids come from the tokenizer's own chat template."""
    messages = [{"role": "user", "content": "hi"}]
    ids = prompt_ids(tiny_tokenizer, messages)
    assert tiny_tokenizer.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert completion_ids(tiny_tokenizer, "ok")[-1] == tiny_tokenizer.eos_token_id
