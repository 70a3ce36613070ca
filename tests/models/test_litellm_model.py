"""LiteLLMModel through LiteLLM's OpenAI provider to a real local HTTP server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nbagent.models import LiteLLMModel, ModelError
from nbagent.trajectory import SamplingSettings, Usage
from tests.models.replay_server import ReplayServer, chat_reply, error_reply

USER = [{"role": "user", "content": "Hi"}]


def _model(server: ReplayServer, **kwargs: object) -> LiteLLMModel:
    return LiteLLMModel(
        "openai/served-model", api_base=server.base_url, api_key="sk-local", backoff_s=0.01, **kwargs
    )  # type: ignore[arg-type]


def test_importing_nbagent_models_does_not_import_litellm() -> None:
    code = "import sys, nbagent.models; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_records_text_logprobs_usage_and_sends_sampling_and_prefill() -> None:
    with ReplayServer([chat_reply("there", logprobs=[-0.25, -1.0])]) as server:
        model = _model(server, request_logprobs=True)
        call = await model.complete(
            USER, SamplingSettings(temperature=0.3, max_tokens=5, seed=2), prefill="Hello"
        )
    sent = server.requests[0]
    assert sent["messages"] == [*USER, {"role": "assistant", "content": "Hello"}]
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["logprobs"]) == (0.3, 5, 2, True)
    assert "return_token_ids" not in sent
    assert call.completion == "there"
    assert call.prefill == "Hello"
    assert call.messages == sent["messages"]
    assert call.completion_logprobs == [-0.25, -1.0]
    assert call.completion_token_ids is None
    assert call.usage == Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    assert call.finish_reason == "stop"
    assert model.info.provider == "litellm"


async def test_rate_limits_are_retried_by_us_and_bad_keys_fail_fast() -> None:
    with ReplayServer([error_reply(429, "slow down"), chat_reply("ok")]) as server:
        assert (await _model(server).complete(USER, SamplingSettings())).completion == "ok"
    assert len(server.requests) == 2

    server = ReplayServer([error_reply(401, "bad key")])
    with server, pytest.raises(ModelError, match=r"served-model at .*: the API key was refused \(HTTP 401"):
        await _model(server).complete(USER, SamplingSettings())
    assert len(server.requests) == 1


async def test_persistent_server_errors_end_with_a_clear_error() -> None:
    server = ReplayServer([error_reply(500, "boom")])
    with server, pytest.raises(ModelError, match=r"no answer after 2 tries .*boom.*Check the provider"):
        await _model(server, max_retries=1).complete(USER, SamplingSettings())
    assert len(server.requests) == 2
