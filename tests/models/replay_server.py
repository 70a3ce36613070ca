"""A real HTTP server that answers each request with the next scripted reply and records what it got.

Unlike `tests.fixtures.fake_openai` (a fake model), this one plays back exact HTTP replies (status, body,
headers, delay), so tests can stage 429s, 500s, slow answers and 400 rejections in a given order.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: str | None = None
    """Sent as the body instead of `body`'s JSON (e.g. an HTML page from a proxy)."""


def chat_reply(
    content: str = "Hello!",
    *,
    token_ids: list[int] | None = None,
    logprobs: list[float] | None = None,
    prompt_token_ids: list[int] | None = None,
    finish_reason: str = "stop",
    model: str = "served-model",
) -> Reply:
    """A chat-completion answer shaped like vLLM's (token fields only when given)."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
    }
    if token_ids is not None:
        choice["token_ids"] = token_ids
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {"token": f"t{i}", "logprob": lp, "bytes": [], "top_logprobs": []}
                for i, lp in enumerate(logprobs)
            ]
        }
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    if prompt_token_ids is not None:
        body["prompt_token_ids"] = prompt_token_ids
    return Reply(body=body)


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "Error", "code": status}}, headers or {})


class ReplayServer:
    """Chat completions pop the next reply (the last one repeats); `GET /v1/models` lists `models`."""

    def __init__(self, replies: list[Reply], models: list[str] | None = None) -> None:
        self.replies = list(replies)
        self.models = models or ["served-model"]
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(
            status=reply.status,
            text=json.dumps(reply.body) if reply.raw is None else reply.raw,
            headers=reply.headers,
            content_type="application/json",
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
