"""OpenAIModel and PolicyServer against a real vLLM server serving SmolLM2-135M-Instruct."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from nbagent.models import ModelError, OpenAIModel, ensure_smollm2
from nbagent.models.base import ChatMessage
from nbagent.trajectory import SamplingSettings
from nbagent_train.serving import PolicyServer, PolicyServerError
from tests.fixtures.vllm import assert_recorded_as_returned

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]  # the first test also waits for the server start

USER: list[ChatMessage] = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Name three colours."},
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_smollm2())


def _model(server: PolicyServer, name: str | None = None) -> OpenAIModel:
    return OpenAIModel(name or server.served_model_name, base_url=server.base_url)


async def test_recorded_ids_and_logprobs_are_what_the_server_returned(
    vllm_server: PolicyServer, tokenizer: Any
) -> None:
    settings = SamplingSettings(temperature=0.9, max_tokens=24, seed=1234)
    call = await _model(vllm_server).complete(USER, settings)
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            vllm_server.base_url + "/chat/completions",
            json={
                "model": vllm_server.served_model_name,
                "messages": USER,
                "temperature": 0.9,
                "max_tokens": 24,
                "seed": 1234,
                "logprobs": True,
                "return_token_ids": True,
            },
        )
    assert_recorded_as_returned(call, response.json())
    assert call.model == vllm_server.served_model_name
    assert call.usage is not None
    assert call.usage.completion_tokens == len(call.completion_token_ids or [])
    assert tokenizer.decode(call.completion_token_ids, skip_special_tokens=True) == call.completion


async def test_prompt_ids_are_the_chat_template_of_the_recorded_messages(
    vllm_server: PolicyServer, tokenizer: Any
) -> None:
    model = _model(vllm_server)
    plain = await model.complete(USER, SamplingSettings(temperature=0, max_tokens=4))
    assert plain.prompt_token_ids == tokenizer.apply_chat_template(
        plain.messages, add_generation_prompt=True, return_dict=False
    )

    prefilled = await model.complete(
        USER, SamplingSettings(temperature=0, max_tokens=8), prefill="```python\n"
    )
    assert prefilled.messages[-1] == {"role": "assistant", "content": "```python\n"}
    assert prefilled.prompt_token_ids == tokenizer.apply_chat_template(
        prefilled.messages, continue_final_message=True, return_dict=False
    )
    assert tokenizer.decode(prefilled.prompt_token_ids).endswith("<|im_start|>assistant\n```python\n")
    assert not prefilled.completion.startswith("```python")


async def test_processed_logprobs_match_a_float32_forward_pass_at_the_sampling_temperature(
    vllm_server: PolicyServer,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    call = await _model(vllm_server).complete(USER, SamplingSettings(temperature=0.7, max_tokens=16, seed=7))
    prompt, completion = call.prompt_token_ids or [], call.completion_token_ids or []
    net = AutoModelForCausalLM.from_pretrained(ensure_smollm2(), dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = net(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    rows = torch.log_softmax(logits[len(prompt) - 1 : -1] / 0.7, dim=-1)
    expected = rows[torch.arange(len(completion)), torch.tensor(completion)]
    assert expected.tolist() == pytest.approx(call.completion_logprobs, abs=1e-3)


async def test_stop_string_is_cut_from_the_text(vllm_server: PolicyServer) -> None:
    model = _model(vllm_server)
    free = await model.complete(USER, SamplingSettings(temperature=0, max_tokens=24))
    words = free.completion.split()
    assert len(words) >= 3, free.completion
    stop = words[1]
    cut = await model.complete(USER, SamplingSettings(temperature=0, max_tokens=24, stop=[stop]))
    assert cut.finish_reason == "stop"
    assert cut.completion == free.completion[: free.completion.index(stop)]


async def test_a_reply_budget_past_the_context_gets_the_room_left(
    vllm_server: PolicyServer, tokenizer: Any
) -> None:
    """vLLM refuses prompt + max_tokens over its max_model_len (4096 here); the model asks again and the
    reply gets the room left (a prompt of about 4,000 tokens leaves little, so this stays quick)."""
    long = [{"role": "user", "content": "Count the words:" + " word" * 4000}]
    prompt_tokens = len(tokenizer.apply_chat_template(long, add_generation_prompt=True, return_dict=False))
    assert 4096 - 200 < prompt_tokens < 4096
    call = await _model(vllm_server).complete(long, SamplingSettings(temperature=0.0, max_tokens=200))
    assert call.usage is not None
    assert call.usage.prompt_tokens == prompt_tokens
    assert call.usage.completion_tokens <= 4096 - prompt_tokens


async def test_unknown_model_error_lists_what_vllm_serves(vllm_server: PolicyServer) -> None:
    with pytest.raises(
        ModelError,
        match=rf"does not serve model 'no-such-model'; it serves: .*{vllm_server.served_model_name}",
    ):
        await _model(vllm_server, "no-such-model").complete(USER, SamplingSettings(max_tokens=2))


def _random_lora(folder: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(ensure_smollm2(), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(folder)
    return folder


async def test_loading_a_lora_adapter_changes_greedy_outputs(
    vllm_server: PolicyServer, tmp_path: Path
) -> None:
    greedy = SamplingSettings(temperature=0, max_tokens=12)
    base = await _model(vllm_server).complete(USER, greedy)

    await vllm_server.load_lora("probe", _random_lora(tmp_path / "v1", seed=1))
    assert "probe" in await vllm_server.list_models()
    first = await _model(vllm_server, "probe").complete(USER, greedy)
    assert first.model == "probe"
    assert first.completion_token_ids != base.completion_token_ids

    await vllm_server.load_lora("probe", _random_lora(tmp_path / "v2", seed=2))  # in place, new version
    second = await _model(vllm_server, "probe").complete(USER, greedy)
    assert second.completion_token_ids != first.completion_token_ids
    assert vllm_server.loras["probe"] == str(tmp_path / "v2")
    assert await vllm_server.reset_prefix_cache()

    again = await _model(vllm_server).complete(USER, greedy)
    assert again.completion_token_ids == base.completion_token_ids  # the base model is untouched


async def test_a_missing_adapter_is_refused_clearly(vllm_server: PolicyServer, tmp_path: Path) -> None:
    with pytest.raises(PolicyServerError, match=r"refused LoRA adapter 'ghost' from .*ghost"):
        await vllm_server.load_lora("ghost", tmp_path / "ghost")


async def test_attach_to_a_running_server(vllm_server: PolicyServer) -> None:
    attached = PolicyServer.attach(vllm_server.base_url)
    await attached.astart()
    assert attached.base_url == vllm_server.base_url
    assert attached.served_model_name == vllm_server.served_model_name
    await attached.astop()
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(vllm_server.url + "/health")).status_code == 200


async def test_vllm_serves_the_shipped_adapter_as_the_embedded_agent(vllm_server: PolicyServer) -> None:
    """The adapter nbagent ships loads in vLLM (--enable-lora) and plays the embedded agent there too."""
    from nbagent.agent.agent import Agent
    from nbagent.cli.options import local_agent_settings
    from nbagent.models.local import SHIPPED_ADAPTER

    await vllm_server.load_lora("embedded", SHIPPED_ADAPTER)
    model = _model(vllm_server, "embedded")
    settings = local_agent_settings(model, ensure_smollm2(), max_steps=3)
    settings["sampling"] = settings["sampling"].model_copy(update={"temperature": 0.0})
    result = await Agent(model, **settings).run("What is 17 * 23? Use Python.")
    assert str(result.answer) == "391", result.trajectory.steps[-1].observation
    assert [s.model_call.model for s in result.steps] == ["embedded"] * len(result.steps)
    assert "17 * 23" in (result.steps[0].action.code or "")
