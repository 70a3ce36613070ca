"""Trajectories carrying a real tokenizer's ids, built with nbagent's pydantic models (no agent needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nbagent.trajectory import Action, ModelCall, ModelInfo, Reward, Step, TaskSpec, Termination, Trajectory

SYSTEM = "You are a helpful assistant that solves problems by writing Python code in a notebook."
LogprobFn = Callable[[list[int], list[int]], list[float]]


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """What a server would tokenize: the chat template with the generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def completion_ids(tokenizer: Any, text: str) -> list[int]:
    """What a server would sample for `text`: its tokens, then EOS."""
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def make_episode(
    tokenizer: Any,
    task_id: str,
    turns: Sequence[tuple[str, str]],
    reward: float | None,
    *,
    group_id: str | None = None,
    sample_index: int = 0,
    termination: Termination = Termination.SUBMITTED,
    with_ids: bool = True,
    logprobs: LogprobFn | None = None,
    question: str = "What is 2 + 3?",
) -> Trajectory:
    """A multi-step episode: each turn is (completion text, observation text fed back as a user message)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
    ]
    steps = []
    for index, (completion, observation) in enumerate(turns):
        call = ModelCall(messages=[dict(m) for m in messages], completion=completion, finish_reason="stop")
        if with_ids:
            p_ids = prompt_ids(tokenizer, messages)
            c_ids = completion_ids(tokenizer, completion)
            call.prompt_token_ids = p_ids
            call.completion_token_ids = c_ids
            call.completion_logprobs = logprobs(p_ids, c_ids) if logprobs is not None else None
        steps.append(
            Step(
                index=index,
                model_call=call,
                action=Action(kind="code", code=completion),
                observation=observation,
            )
        )
        messages.append({"role": "assistant", "content": completion})
        messages.append({"role": "user", "content": observation})
    return Trajectory(
        task=TaskSpec(id=task_id, prompt=question),
        group_id=group_id,
        sample_index=sample_index,
        model=ModelInfo(provider="test", model="tiny"),
        system_prompt=SYSTEM,
        steps=steps,
        termination=termination,
        reward=None if reward is None else Reward(total=reward),
    )


GOOD = "<think>I should compute the sum with Python.</think><code>print(2 + 3)</code>"
BAD = "<think>x</think><code>print(x)</code>"


def grouped_episodes(tokenizer: Any, groups: int = 2, per_group: int = 4, steps: int = 2) -> list[Trajectory]:
    """`groups` tasks x `per_group` episodes with mixed rewards (half succeed, half fail)."""
    out = []
    for g in range(groups):
        for k in range(per_group):
            good = k % 2 == 0
            text = GOOD if good else BAD
            turns = [(text, "<output>5</output>" if good else "NameError: name 'x' is not defined")] * steps
            out.append(
                make_episode(
                    tokenizer,
                    f"task-{g}",
                    turns,
                    1.0 if good else 0.0,
                    group_id=f"task-{g}",
                    sample_index=k,
                    termination=Termination.SUBMITTED if good else Termination.MAX_STEPS,
                    question=f"What is {g} + 3?",
                )
            )
    return out
