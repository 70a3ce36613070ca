"""TransformersModel on the real SmolLM2 weights: exact prompt ids, logprobs that match a forward pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nbagent.models import Model, ModelError, TransformersModel
from nbagent.models.base import ChatMessage
from nbagent.models.local import SMOLLM2_NAME, ensure_smollm2
from nbagent.trajectory import SamplingSettings

pytestmark = pytest.mark.slow

USER: list[ChatMessage] = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def smollm2() -> TransformersModel:
    """The base model on the plain HF token loop (the fast decoder's int8 weights are checked against it in
    test_fast_decoder.py), so its records can be compared with a float32 forward pass exactly."""
    model = TransformersModel(ensure_smollm2(), name=SMOLLM2_NAME, engine="hf")
    model.load()
    return model


def _forward_logprobs(
    model: TransformersModel, prompt: list[int], completion: list[int], temperature: float
) -> Any:
    import torch

    net = model.load()
    with torch.inference_mode():
        logits = net(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    scaled = torch.log_softmax(logits[positions] / temperature, dim=-1)
    return scaled[torch.arange(len(completion)), torch.tensor(completion)]


async def test_records_prompt_ids_and_logprobs_that_a_forward_pass_reproduces(
    smollm2: TransformersModel,
) -> None:
    from transformers import AutoTokenizer

    assert isinstance(smollm2, Model)
    call = await smollm2.complete(USER, SamplingSettings(temperature=0.7, seed=11, max_tokens=8))
    tokenizer = AutoTokenizer.from_pretrained(smollm2.tokenizer.tokenizer.name_or_path)
    assert call.prompt_token_ids == tokenizer.apply_chat_template(
        USER, add_generation_prompt=True, return_dict=False
    )
    assert call.completion_token_ids is not None
    assert call.completion_logprobs is not None
    assert len(call.completion_token_ids) == len(call.completion_logprobs) <= 8
    assert tokenizer.decode(call.completion_token_ids, skip_special_tokens=True) == call.completion
    expected = _forward_logprobs(smollm2, call.prompt_token_ids, call.completion_token_ids, 0.7)
    assert expected.tolist() == pytest.approx(call.completion_logprobs, abs=2e-3)
    assert call.usage is not None
    assert call.usage.completion_tokens == len(call.completion_token_ids)
    assert call.model == "SmolLM2-135M-Instruct"


async def test_same_seed_same_sample_and_max_tokens_gives_length(smollm2: TransformersModel) -> None:
    settings = SamplingSettings(temperature=1.0, top_p=0.9, seed=5, max_tokens=6, extra={"top_k": 50})
    first = await smollm2.complete(USER, settings)
    second = await smollm2.complete(USER, settings)
    assert first.completion_token_ids == second.completion_token_ids
    assert first.completion_logprobs == second.completion_logprobs
    if first.finish_reason == "length":
        assert len(first.completion_token_ids or []) == 6


async def test_greedy_stop_string_and_prefill(smollm2: TransformersModel) -> None:
    greedy = await smollm2.complete(USER, SamplingSettings(temperature=0, max_tokens=12))
    words = greedy.completion.split(" ")
    assert len(words) >= 4, greedy.completion
    stop = " " + words[2]
    stopped = await smollm2.complete(USER, SamplingSettings(temperature=0, max_tokens=12, stop=[stop]))
    assert stopped.finish_reason == "stop"
    assert stopped.completion == greedy.completion[: greedy.completion.index(stop)]
    assert greedy.completion_token_ids is not None
    assert (
        stopped.completion_token_ids == greedy.completion_token_ids[: len(stopped.completion_token_ids or [])]
    )

    prefilled = await smollm2.complete(
        USER, SamplingSettings(temperature=0, max_tokens=4), prefill="The answer"
    )
    assert prefilled.messages[-1] == {"role": "assistant", "content": "The answer"}
    assert prefilled.prompt_token_ids == smollm2.tokenizer.prompt_ids(USER, "The answer")
    assert smollm2.tokenizer.decode(prefilled.prompt_token_ids or []).endswith(
        "<|im_start|>assistant\nThe answer"
    )


async def test_generation_leaves_the_event_loop_free(smollm2: TransformersModel) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await smollm2.complete(USER, SamplingSettings(temperature=0, max_tokens=3))
    seen = ticks
    task.cancel()
    assert seen >= 2


async def test_unsupported_option_and_overlong_prompt_are_explained(smollm2: TransformersModel) -> None:
    with pytest.raises(ModelError, match=r"does not support the sampling option\(s\) \['min_p'\]"):
        await smollm2.complete(USER, SamplingSettings(extra={"min_p": 0.1}))
    huge: list[ChatMessage] = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(ModelError, match="at or over SmolLM2-135M-Instruct's context of 8192"):
        await smollm2.complete(huge, SamplingSettings(max_tokens=1))
