"""Host CPU per chat-completion request, by HTTP client, at several numbers of requests in flight.

A fake OpenAI-compatible server (tests/fixtures/fake_openai.py, its own process, real HTTP) answers
after a fixed latency; C concurrent callers each send R requests one after the other. Measured: this
process's CPU per request (the server's is not counted), for the OpenAI SDK on its default httpx
client (the baseline), on its aiohttp client, and for `OpenAIModel.complete` (nbagent's path: the SDK
on aiohttp, plus building the request and the `ModelCall` record), with the ratio to the baseline of
the same level.

    .venv/bin/python benchmarks/model_client.py                      # 1, 64, 256, 1000 in flight
    .venv/bin/python benchmarks/model_client.py --levels 1000 --latency 2
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.collect import start_server  # noqa: E402
from nbagent.models.openai import OpenAIModel, _http_client  # noqa: E402
from nbagent.trajectory import SamplingSettings  # noqa: E402

MESSAGES = [{"role": "user", "content": "What is 6 * 7? " * 50}]


def cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


Caller = tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]
"""One request, and closing the client."""


def sdk_caller(base_url: str, http_client: openai.DefaultAioHttpClient | None) -> Caller:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, http_client=http_client)
    body = {"model": "fake-model", "messages": MESSAGES, "logprobs": True, "return_token_ids": True}

    async def call() -> object:
        return await client.post("/chat/completions", body=body, cast_to=str)

    return call, client.close


def nbagent_caller(base_url: str) -> Caller:
    model = OpenAIModel("fake-model", base_url=base_url, max_retries=0)
    settings = SamplingSettings()

    async def call() -> object:
        return await model.complete(MESSAGES, settings)

    return call, model.aclose


async def measure(make: Callable[[], Caller], level: int, repeats: int) -> float:
    """CPU ms per request with `level` callers in flight (after one warm-up call per caller)."""
    call, close = make()

    async def caller(n: int) -> None:
        for _ in range(n):
            await call()

    await asyncio.gather(*(caller(1) for _ in range(level)))
    before = cpu_s()
    await asyncio.gather(*(caller(repeats) for _ in range(level)))
    spent = cpu_s() - before
    await close()
    return 1000 * spent / (level * repeats)


async def run(base_url: str, levels: list[int], repeats: int) -> list[tuple[int, dict[str, float]]]:
    clients = {
        "SDK + httpx (baseline)": lambda: sdk_caller(base_url, None),
        "SDK + aiohttp": lambda: sdk_caller(base_url, _http_client()),
        "OpenAIModel.complete": lambda: nbagent_caller(base_url),
    }
    rows = []
    for level in levels:
        rows.append((level, {name: await measure(make, level, repeats) for name, make in clients.items()}))
        print(f"  done: {level} in flight", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,64,256,1000", help="comma-separated requests in flight")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model call")
    parser.add_argument("--repeats", type=int, default=4, help="requests per caller")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, base_url = start_server(args.latency, Path(tmp))
    try:
        rows = asyncio.run(run(base_url, [int(x) for x in args.levels.split(",")], args.repeats))
    finally:
        server.kill()
        server.wait()
    names = list(rows[0][1])
    print(f"\nhost CPU ms per chat-completion request, server latency {args.latency * 1000:.0f} ms (ratio to")
    print("the baseline of the same level)\n")
    print("| in flight | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for level, cost in rows:
        base = cost[names[0]]
        cells = [f"{cost[name]:.2f} ({cost[name] / base:.2f}x)" for name in names]
        print(f"| {level} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
