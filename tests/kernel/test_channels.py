"""`nbagent.kernel.channels`: on real ZMQ sockets, `Readable` wakes on a message, on `wake` and at its
timeout, and `drain` receives every waiting message; `decode` checks signatures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import zmq
from jupyter_client.session import Session

from nbagent.errors import KernelError
from nbagent.kernel.channels import Readable, decode, drain, new_context


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    context = new_context()
    reader, writer = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    reader.bind("inproc://channels-test")
    writer.connect("inproc://channels-test")
    yield reader, writer
    context.destroy(linger=0)


async def test_readable_wakes_on_messages_on_wake_and_at_its_timeout(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    reader, writer = pair
    session = Session(key=b"secret")
    with Readable([reader]) as readable:
        assert drain(reader, session) == []
        started = time.monotonic()
        assert await readable.wait(0.2) is False
        assert time.monotonic() - started >= 0.19
        readable.wake()
        assert await readable.wait(30) is True

        def burst() -> None:
            for n in range(3):
                session.send(writer, "stream", {"n": n})

        asyncio.get_running_loop().call_later(0.05, burst)
        assert await readable.wait(30) is True
        await asyncio.sleep(0.05)  # every message of the burst is in
        messages = drain(reader, session)
        assert [m["content"]["n"] for m in messages] == [0, 1, 2]
        assert {m["msg_type"] for m in messages} == {"stream"}
        assert drain(reader, session) == []


async def test_drain_refuses_a_message_with_a_bad_signature(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    reader, writer = pair
    Session(key=b"another key").send(writer, "stream", {"text": "forged"})
    await asyncio.sleep(0.05)
    with pytest.raises(KernelError, match="invalid signature"):
        drain(reader, Session(key=b"secret"))


def test_messages_are_decoded_with_their_signature_checked() -> None:
    session = Session(key=b"secret")
    frames = session.serialize(session.msg("status", {"execution_state": "idle"}))
    message = decode(frames, session)
    assert message["msg_type"] == "status"
    assert message["content"] == {"execution_state": "idle"}
    tampered = [*frames]
    tampered[-1] = b'{"execution_state": "busy"}'
    with pytest.raises(KernelError, match="invalid signature"):
        decode(tampered, session)
    with pytest.raises(KernelError, match="malformed"):
        decode(frames[:3], session)
