"""ScriptedModel and FunctionModel: deterministic, recorded, optionally with real token ids."""

from __future__ import annotations

import pytest

from nbagent.models import FunctionModel, Model, ModelError, ScriptedModel, ensure_smollm2
from nbagent.models.base import ChatMessage
from nbagent.trajectory import ModelCall, SamplingSettings

USER: list[ChatMessage] = [{"role": "user", "content": "What is 2+2?"}]


async def test_scripted_returns_in_order_verbatim_and_records() -> None:
    model = ScriptedModel(
        ["<code>print(1)</code>", ModelCall(messages=[], completion="two", finish_reason="length")]
    )
    assert isinstance(model, Model)
    first = await model.complete(USER, SamplingSettings(stop=["</code>"]))
    second = await model.complete(USER, SamplingSettings(), prefill="Answer:")
    assert first.completion == "<code>print(1)</code>"
    assert first.messages == USER
    assert first.prompt_token_ids is None
    assert (second.completion, second.finish_reason, second.prefill) == ("two", "length", "Answer:")
    assert second.messages == [*USER, {"role": "assistant", "content": "Answer:"}]
    assert model.calls == [first, second]
    assert model.remaining == 0
    assert model.info.provider == "scripted"
    assert model.count_tokens(USER) is None


async def test_scripted_says_clearly_when_it_runs_out() -> None:
    model = ScriptedModel(["only"])
    await model.complete(USER, SamplingSettings())
    with pytest.raises(
        ModelError, match=r"ran out of completions: call 2 asked for one, but the script holds 1"
    ):
        await model.complete(USER, SamplingSettings())


async def test_function_model_sync_and_async_see_sent_messages_and_settings() -> None:
    seen: list[tuple[list[ChatMessage], SamplingSettings]] = []

    def echo(messages: list[ChatMessage], settings: SamplingSettings) -> str:
        seen.append((messages, settings))
        return str(messages[-1]["content"]).upper()

    async def later(messages: list[ChatMessage], settings: SamplingSettings) -> str:
        return f"t={settings.temperature}"

    settings = SamplingSettings(temperature=0.5)
    call = await FunctionModel(echo).complete(USER, settings, prefill="so")
    assert call.completion == "SO"
    assert seen == [([*USER, {"role": "assistant", "content": "so"}], settings)]
    assert (await FunctionModel(later).complete(USER, settings)).completion == "t=0.5"
    assert FunctionModel(echo).info.model == "echo"


async def test_function_model_rejects_a_wrong_return_type() -> None:
    model = FunctionModel(lambda m, s: 42, name="broken")  # type: ignore[arg-type,return-value]
    with pytest.raises(ModelError, match="'broken' returned int; it must return the completion text"):
        await model.complete(USER, SamplingSettings())


async def test_token_ids_from_a_real_tokenizer() -> None:
    from transformers import AutoTokenizer

    folder = ensure_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = ScriptedModel(["The answer is 4.", "print(4)\n```"], tokenizer=folder)
    plain = await model.complete(USER, SamplingSettings())
    expected_prompt = tokenizer.apply_chat_template(USER, add_generation_prompt=True, return_dict=False)
    assert plain.prompt_token_ids == expected_prompt
    assert plain.completion_token_ids is not None
    assert plain.completion_token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(plain.completion_token_ids, skip_special_tokens=True) == "The answer is 4."
    assert plain.usage is not None
    assert plain.usage.prompt_tokens == len(expected_prompt)
    assert model.count_tokens(USER) == len(expected_prompt)

    prefilled = await model.complete(USER, SamplingSettings(), prefill="```python\n")
    assert prefilled.prompt_token_ids is not None
    text = tokenizer.decode(prefilled.prompt_token_ids)
    assert text.endswith("<|im_start|>assistant\n```python\n")
    assert text.count("<|im_end|>") == 2  # system and user turns closed, the assistant turn left open
