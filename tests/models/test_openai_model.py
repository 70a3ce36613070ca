"""OpenAIModel over real HTTP against scripted replies: recording, prefill, retries, degrading, errors."""

from __future__ import annotations

import socket

import pytest

from nbagent.errors import ConfigError
from nbagent.models import ModelError, OpenAIModel, ensure_smollm2
from nbagent.models.retry import RetryPolicy
from nbagent.trajectory import SamplingSettings, Usage
from tests.models.replay_server import ReplayServer, Reply, chat_reply, error_reply

USER = [{"role": "user", "content": "What is 2+2?"}]
FAST = {"backoff_s": 0.01, "max_backoff_s": 0.02}


def _model(server: ReplayServer, **kwargs: object) -> OpenAIModel:
    return OpenAIModel("served-model", base_url=server.base_url, **{**FAST, **kwargs})  # type: ignore[arg-type]


async def test_records_vllm_token_ids_logprobs_usage_and_sampling() -> None:
    reply = chat_reply(
        " 4.", token_ids=[216, 36, 30, 2], logprobs=[-0.5, -0.1, -0.2, -1.5], prompt_token_ids=[1, 2, 3]
    )
    with ReplayServer([reply]) as server:
        model = _model(server)
        settings = SamplingSettings(
            temperature=0.7, top_p=0.9, max_tokens=12, stop=["</code>"], seed=3, extra={"top_k": 5}
        )
        call = await model.complete(USER, settings)
        await model.aclose()
    sent = server.requests[0]
    assert sent["return_token_ids"] is True
    assert sent["logprobs"] is True
    assert sent["top_logprobs"] == 0
    assert {k: sent[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed", "top_k")} == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 12,
        "stop": ["</code>"],
        "seed": 3,
        "top_k": 5,
    }
    assert "continue_final_message" not in sent
    assert call.completion == " 4."
    assert call.prompt_token_ids == [1, 2, 3]
    assert call.completion_token_ids == [216, 36, 30, 2]
    assert call.completion_logprobs == [-0.5, -0.1, -0.2, -1.5]
    assert call.finish_reason == "stop"
    assert call.usage == Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    assert call.model == "served-model"
    assert call.messages == USER
    assert call.latency_s > 0


async def test_prefill_is_sent_as_a_continued_assistant_turn_and_recorded() -> None:
    with ReplayServer([chat_reply("print(4)\n```")]) as server:
        model = _model(server)
        call = await model.complete(USER, SamplingSettings(), prefill="```python\n")
    sent = server.requests[0]
    expected = [*USER, {"role": "assistant", "content": "```python\n"}]
    assert sent["messages"] == expected
    assert sent["continue_final_message"] is True
    assert sent["add_generation_prompt"] is False
    assert call.messages == expected
    assert call.prefill == "```python\n"
    assert call.completion == "print(4)\n```"


async def test_transient_429_and_500_are_retried_then_succeed() -> None:
    replies = [error_reply(429, "slow down"), error_reply(503, "overloaded"), chat_reply("ok")]
    with ReplayServer(replies) as server:
        call = await _model(server, max_retries=3).complete(USER, SamplingSettings())
    assert call.completion == "ok"
    assert len(server.requests) == 3


async def test_persistent_500_fails_after_the_last_retry_naming_url_model_and_checks() -> None:
    with ReplayServer([error_reply(500, "engine dead")]) as server, pytest.raises(ModelError) as info:
        await _model(server, max_retries=2).complete(USER, SamplingSettings())
    assert len(server.requests) == 3
    message = str(info.value)
    assert server.base_url in message
    assert "served-model" in message
    assert "after 3 tries" in message
    assert "engine dead" in message
    assert "ends with /v1" in message


async def test_connection_refused_is_retried_then_explained() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = OpenAIModel("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, **FAST)  # type: ignore[arg-type]
    with pytest.raises(
        ModelError, match=rf"m at http://127.0.0.1:{port}/v1: no answer after 2 tries .*running"
    ):
        await model.complete(USER, SamplingSettings())


@pytest.mark.parametrize("raw", ["<html>Bad gateway</html>", "[1, 2]"])
async def test_an_answer_that_is_not_a_json_object_is_named_with_its_start(raw: str) -> None:
    with ReplayServer([Reply(raw=raw)]) as server, pytest.raises(ModelError) as info:
        await _model(server).complete(USER, SamplingSettings())
    message = str(info.value)
    assert "not a JSON object" in message
    assert raw[:10] in message
    assert server.base_url in message


async def test_timeouts_are_retried() -> None:
    with ReplayServer([chat_reply("late", model="x"), chat_reply("in time")]) as server:
        server.replies[0].delay_s = 1.0
        call = await _model(server, timeout=0.2, max_retries=1).complete(USER, SamplingSettings())
    assert call.completion == "in time"
    assert len(server.requests) == 2


async def test_server_rejecting_extra_fields_is_asked_again_without_them_and_remembered() -> None:
    rejection = error_reply(400, "Unrecognized request argument supplied: return_token_ids")
    with ReplayServer([rejection, chat_reply("plain"), chat_reply("again")]) as server:
        model = _model(server)
        first = await model.complete(USER, SamplingSettings())
        second = await model.complete(USER, SamplingSettings(), prefill="Sure")
    assert (first.completion, second.completion) == ("plain", "again")
    assert [("return_token_ids" in r, "logprobs" in r) for r in server.requests] == [
        (True, True),
        (False, False),
        (False, False),
    ]
    assert "continue_final_message" not in server.requests[2]
    assert server.requests[2]["messages"][-1] == {"role": "assistant", "content": "Sure"}
    assert not model.sends_server_fields
    assert first.completion_token_ids is None


async def test_other_bad_requests_fail_fast_and_keep_the_server_fields() -> None:
    with ReplayServer([error_reply(400, "This model's maximum context length is 8192 tokens")]) as server:
        model = _model(server)
        with pytest.raises(
            ModelError, match=r"the request was rejected \(HTTP 400\): This model's maximum context"
        ):
            await model.complete(USER, SamplingSettings())
    assert len(server.requests) == 1
    assert model.sends_server_fields


async def test_a_reply_budget_past_the_context_is_asked_again_for_the_room_left() -> None:
    refusal = (
        "This model's maximum context length is 4096 tokens. However, you requested 3072 output tokens and "
        "your prompt contains at least 1101 input tokens, for a total of at least 4173 tokens."
    )
    with ReplayServer([error_reply(400, refusal), chat_reply("4")]) as server:
        model = _model(server)
        call = await model.complete(USER, SamplingSettings(max_tokens=3072))
    assert call.completion == "4"
    assert [body.get("max_tokens") for body in server.requests] == [3072, None]  # None: vLLM gives the rest
    assert model.sends_server_fields


async def test_a_bad_request_that_persists_without_the_fields_keeps_them() -> None:
    with ReplayServer([error_reply(400, "unknown role 'robot'")]) as server:
        model = _model(server)
        with pytest.raises(ModelError, match="unknown role"):
            await model.complete(USER, SamplingSettings())
    assert len(server.requests) == 2
    assert model.sends_server_fields


async def test_unauthorized_fails_fast_naming_the_key_variables() -> None:
    server = ReplayServer([error_reply(401, "Invalid API key")])
    with server, pytest.raises(ModelError, match=r"the API key was refused .*NBAGENT_API_KEY"):
        await _model(server).complete(USER, SamplingSettings())
    assert len(server.requests) == 1


async def test_unknown_model_lists_the_served_ones() -> None:
    with ReplayServer(
        [error_reply(404, "The model `nope` does not exist.")], models=["smollm2", "policy"]
    ) as server:
        model = OpenAIModel("nope", base_url=server.base_url)
        with pytest.raises(ModelError, match=r"does not serve model 'nope'; it serves: smollm2, policy"):
            await model.complete(USER, SamplingSettings())


async def test_token_fields_can_be_turned_off() -> None:
    with ReplayServer([chat_reply("x")]) as server:
        await _model(server, request_token_ids=False).complete(USER, SamplingSettings(), prefill="A")
    sent = server.requests[0]
    assert "return_token_ids" not in sent
    assert "logprobs" not in sent
    assert sent["continue_final_message"] is True


def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("NBAGENT_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NBAGENT_BASE_URL", "http://127.0.0.1:9/v1/")
    model = OpenAIModel("m")
    assert model.base_url == "http://127.0.0.1:9/v1"
    assert model.info.base_url == "http://127.0.0.1:9/v1"
    assert model.sends_server_fields

    monkeypatch.delenv("NBAGENT_BASE_URL")
    with pytest.raises(ConfigError, match=r"No API key for https://api\.openai\.com/v1: set OPENAI_API_KEY"):
        OpenAIModel("gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    official = OpenAIModel("gpt-4o-mini")
    assert official.base_url == "https://api.openai.com/v1"
    assert not official.sends_server_fields


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=5, initial_backoff_s=1.0, max_backoff_s=8.0)
    for retry_index, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        waits = [policy.delay(retry_index) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert policy.delay(0, retry_after_s=5.0) >= 5.0
    assert policy.delay(0, retry_after_s=60.0) <= 8.0


def test_count_tokens_needs_a_tokenizer() -> None:
    assert OpenAIModel("m", base_url="http://127.0.0.1:9/v1").count_tokens(USER) is None
    folder = ensure_smollm2()
    model = OpenAIModel("m", base_url="http://127.0.0.1:9/v1", tokenizer=folder)
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(folder).apply_chat_template(
        USER, add_generation_prompt=True, return_dict=False
    )
    assert model.count_tokens(USER) == len(expected)
