"""The fake OpenAI server speaks real HTTP the way vLLM does: stop sequences, prefill, token ids, errors."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.fixtures.fake_openai import (
    Body,
    FakeOpenAIServer,
    FakeServerError,
    script_responder,
    step_index,
)


def client(server: FakeOpenAIServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


async def test_echo_and_models(fake_openai_server: FakeOpenAIServer) -> None:
    c = client(fake_openai_server)
    reply = await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content == "hello"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5
    models = await c.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    assert fake_openai_server.requests[0]["messages"] == [{"role": "user", "content": "hello"}]


async def test_stop_sequence_is_cut_and_not_returned(fake_openai_server: FakeOpenAIServer) -> None:
    fake_openai_server.responder = script_responder(["<think>t</think><code>print(1)</code> trailing"])
    reply = await client(fake_openai_server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}], stop=["</code>"]
    )
    assert reply.choices[0].message.content == "<think>t</think><code>print(1)"
    assert reply.choices[0].finish_reason == "stop"


async def test_prefill_is_continued_not_repeated(fake_openai_server: FakeOpenAIServer) -> None:
    fake_openai_server.responder = script_responder(["<think>abc</think>"])
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>"}]
    reply = await client(fake_openai_server).chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "abc</think>"


async def test_script_steps_follow_the_conversation_and_format_the_question(
    fake_openai_server: FakeOpenAIServer,
) -> None:
    fake_openai_server.responder = script_responder(
        ["first {question}", lambda body: f"then {step_index(body)}"]
    )
    c = client(fake_openai_server)
    history: list[dict[str, str]] = [{"role": "user", "content": "Q1"}]
    texts = []
    for _ in range(3):
        reply = await c.chat.completions.create(model="m", messages=history)  # type: ignore[arg-type]
        text = reply.choices[0].message.content or ""
        texts.append(text)
        history += [{"role": "assistant", "content": text}, {"role": "user", "content": "obs"}]
    assert texts == ["first Q1", "then 1", "then 2"]


async def test_token_ids_and_logprobs_in_vllm_shape(fake_openai_server: FakeOpenAIServer) -> None:
    fake_openai_server.responder = script_responder(["hé"])
    reply = await client(fake_openai_server).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "ab"}],
        logprobs=True,
        extra_body={"return_token_ids": True},
    )
    assert reply.model_extra is not None
    assert reply.model_extra["prompt_token_ids"] == [97, 98]
    choice = reply.choices[0]
    assert choice.model_extra is not None
    assert choice.model_extra["token_ids"] == list("hé".encode())
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    assert len(choice.logprobs.content) == 3


async def test_responder_errors_become_http_errors(fake_openai_server: FakeOpenAIServer) -> None:
    def fail(body: Body) -> str:
        raise FakeServerError(503, "overloaded")

    fake_openai_server.responder = fail
    with pytest.raises(openai.InternalServerError, match="overloaded"):
        await client(fake_openai_server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}]
        )


async def test_latency_overlaps_across_concurrent_requests(fake_openai_server: FakeOpenAIServer) -> None:
    fake_openai_server.latency_s = 0.2
    c = client(fake_openai_server)
    await asyncio.gather(
        *[
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
            for _ in range(16)
        ]
    )
    assert fake_openai_server.max_in_flight == 16
