"""OutputCollector: nbformat shapes, merging, clear/update, and the per-cell cap (unit tests)."""

from __future__ import annotations

from nbagent.kernel.outputs import OutputCollector
from nbagent.trajectory import DisplayData, ErrorOutput, ExecuteResult, StreamOutput


def _stream(text: str, name: str = "stdout") -> tuple[str, dict[str, str]]:
    return "stream", {"name": name, "text": text}


def test_streams_merge_per_name_in_order() -> None:
    c = OutputCollector(10_000)
    for msg in (_stream("a"), _stream("b"), _stream("E", "stderr"), _stream("c")):
        c.add(*msg)
    assert c.outputs() == [
        StreamOutput(name="stdout", text="ab"),
        StreamOutput(name="stderr", text="E"),
        StreamOutput(name="stdout", text="c"),
    ]


def test_rich_outputs_and_errors_keep_their_shapes() -> None:
    c = OutputCollector(10_000)
    c.add("execute_result", {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 3})
    c.add("display_data", {"data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}})
    c.add("error", {"ename": "ValueError", "evalue": "bad", "traceback": ["line1", "line2"]})
    c.add("status", {"execution_state": "idle"})  # not an output
    assert c.outputs() == [
        ExecuteResult(data={"text/plain": "2"}, execution_count=3),
        DisplayData(data={"image/png": "iVBOR", "text/plain": "<Figure>"}),
        ErrorOutput(ename="ValueError", evalue="bad", traceback=["line1", "line2"]),
    ]


def test_clear_output_now_and_on_next_output() -> None:
    c = OutputCollector(10_000)
    c.add(*_stream("old"))
    c.add("clear_output", {"wait": False})
    c.add(*_stream("new"))
    assert c.outputs() == [StreamOutput(name="stdout", text="new")]
    c.add("clear_output", {"wait": True})
    assert c.outputs() == [StreamOutput(name="stdout", text="new")]  # still shown until the next output
    c.add(*_stream("newer"))
    assert c.outputs() == [StreamOutput(name="stdout", text="newer")]


def test_update_display_replaces_the_data_of_that_display() -> None:
    c = OutputCollector(10_000)
    c.add("display_data", {"data": {"text/plain": "0%"}, "metadata": {}, "transient": {"display_id": "p"}})
    c.add("display_data", {"data": {"text/plain": "other"}, "metadata": {}})
    c.add(
        "update_display_data",
        {"data": {"text/plain": "100%"}, "metadata": {}, "transient": {"display_id": "p"}},
    )
    assert [o.data["text/plain"] for o in c.outputs() if isinstance(o, DisplayData)] == ["100%", "other"]


def test_flood_keeps_head_and_tail_and_counts_the_rest() -> None:
    c = OutputCollector(1000)
    c.add(*_stream("HEAD"))
    for _ in range(10_000):
        c.add(*_stream("x" * 100))
    c.add(*_stream("TAIL"))
    text = "".join(o.text for o in c.outputs() if isinstance(o, StreamOutput))
    assert text.startswith("HEAD")
    assert text.endswith("TAIL")
    printed = 4 + 10_000 * 100 + 4
    assert c.dropped_chars == printed - 1000
    assert f"{c.dropped_chars:,} characters of output dropped" in text
    note = c.dropped_note()
    assert note is not None
    assert f"{c.dropped_chars:,}" in note
    assert len(text) < 1000 + 200


def test_one_huge_chunk_is_split_into_head_and_tail() -> None:
    c = OutputCollector(1000)
    c.add(*_stream("A" * 600 + "B" * 10_000 + "C" * 600))
    out = c.outputs()
    assert out[0] == StreamOutput(name="stdout", text="A" * 500)
    assert isinstance(out[-1], StreamOutput)
    assert out[-1].text.endswith("C" * 500)
    assert c.dropped_chars == 11_200 - 1000


def test_oversized_rich_output_is_dropped_and_counted() -> None:
    c = OutputCollector(1000)
    c.add("display_data", {"data": {"image/png": "A" * 5000}, "metadata": {}})
    c.add(*_stream("after"))
    assert c.outputs()[-1] == StreamOutput(name="stdout", text="after")
    assert not any(isinstance(o, DisplayData) for o in c.outputs())
    assert c.dropped_chars == 5000


def test_lone_surrogates_become_replacement_characters() -> None:
    c = OutputCollector(1000)
    c.add(*_stream("ok \udcff end"))
    c.add("execute_result", {"data": {"text/plain": "'\ud800'"}, "metadata": {}})
    out = c.outputs()
    assert out[0] == StreamOutput(name="stdout", text="ok \ufffd end")
    assert "\ufffd" in out[1].model_dump_json()
