"""Token ids for a step recorded without them, rebuilt from its messages with the policy's chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nbagent.trajectory import ModelCall
from nbagent_train.errors import SampleBuildError


class Retokenizer:
    """Rebuilds prompt and completion ids from a step's messages with the policy's chat template."""

    def __init__(self, tokenizer: Any) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise SampleBuildError(
                "the tokenizer has no chat template, so steps recorded without token ids cannot be "
                "re-tokenized; use the policy's own tokenizer folder (--tokenizer) or record token ids"
            )
        self.tokenizer = tokenizer

    def encode(self, call: ModelCall, stop_strings: Sequence[str] | None) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) of one model call.

        The prompt renders `messages` with the generation prompt, or continues the final assistant message
        when the call had a prefill. The completion gets the tokenizer's EOS appended when the call stopped
        naturally (finish reason `stop` and no stop strings configured, so the stop was the EOS token).
        """
        messages = [dict(m) for m in call.messages]
        prefill = call.prefill
        if prefill is not None and not (
            messages and messages[-1].get("role") == "assistant" and messages[-1].get("content") == prefill
        ):
            messages.append({"role": "assistant", "content": prefill})
        text = self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=prefill is None,
            continue_final_message=prefill is not None,
        )
        prompt = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        completion = list(self.tokenizer(call.completion, add_special_tokens=False)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if call.finish_reason == "stop" and not stop_strings and eos is not None:
            completion.append(int(eos))
        return prompt, completion
