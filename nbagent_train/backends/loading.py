"""Loading what a training run updates: the dtype, the tokenizer and policy (completion head, LoRA new or
from an adapter folder), the frozen reference model of the KL term, and AdamW with its schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nbagent_train.backends.head import add_completion_head
from nbagent_train.config.base import TrainConfig
from nbagent_train.errors import BackendError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` is bfloat16 on a GPU that supports it, float32 elsewhere."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return _DTYPES[name]


def load_policy(config: TrainConfig, dtype: torch.dtype) -> tuple[Any, Any]:
    """(tokenizer, model): the policy in training mode, without KV cache or dropout, with the completion
    head, and gradient checkpointing and LoRA as configured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import disable_dropout_in_model

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model)
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise BackendError(f"model: cannot load {config.model!r}: {exc}") from exc
    model.config.use_cache = False
    disable_dropout_in_model(model)
    add_completion_head(model, temperature=config.loss.temperature, entropy=config.run.log_entropy)
    if config.run.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora.rank > 0:
        model = _wrap_lora(model, config)
    model.train()
    return tokenizer, model


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad token, else its EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _wrap_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    if lora.init_adapter is not None:
        model = _load_init_adapter(model, config, lora.init_adapter)
    else:
        peft_config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha or 2 * lora.rank,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_config)
    if config.run.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def _load_init_adapter(model: Any, config: TrainConfig, folder: Path) -> Any:
    """`model` with the PEFT adapter in `folder`, trainable; an error when it does not fit the config."""
    from peft import PeftConfig, PeftModel

    where = f"lora.init_adapter: {folder}"
    if not (folder / "adapter_config.json").is_file():
        raise BackendError(f"{where} is not a PEFT adapter folder (no adapter_config.json)")
    try:
        adapter = PeftConfig.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as exc:
        raise BackendError(f"{where}: unreadable adapter_config.json: {exc}") from exc
    lora = config.lora
    rank = getattr(adapter, "r", None)
    if rank != lora.rank:
        raise BackendError(f"{where} has rank {rank} but lora.rank is {lora.rank}; set lora.rank={rank}")
    # PEFT writes `all-linear` out as full module paths: compare the layers' leaf names
    theirs = {name.rsplit(".", 1)[-1] for name in getattr(adapter, "target_modules", None) or []}
    wanted = lora.target_modules
    ours = set(_linear_module_names(model) if wanted == "all-linear" else wanted)
    if theirs != ours:
        raise BackendError(
            f"{where} adapts {', '.join(sorted(theirs))} but lora.target_modules gives "
            f"{', '.join(sorted(ours))}; set lora.target_modules to the adapter's"
        )
    base = adapter.base_model_name_or_path
    if base and Path(base).name != Path(config.model).name:
        raise BackendError(
            f"{where} was trained on {base!r}, not on the policy {config.model!r}; "
            "use that model or another adapter"
        )
    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"{where} does not load onto {config.model!r}: {first}") from exc


def _linear_module_names(model: Any) -> list[str]:
    """The leaf names of the linear layers PEFT's `all-linear` targets (every one but the output head)."""
    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
        }
    )


def reference_model(config: TrainConfig, accelerator: Any, dtype: torch.dtype) -> Any:
    """A frozen copy of the initial policy for the KL term of full fine-tuning, placed or sharded like the
    policy (with LoRA the reference is the policy with its adapter disabled)."""
    from accelerate.utils import DistributedType
    from transformers import AutoModelForCausalLM
    from trl.models.utils import prepare_deepspeed, prepare_fsdp
    from trl.trainer.utils import disable_dropout_in_model

    ref: Any = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
    ref.config.use_cache = False
    disable_dropout_in_model(ref)
    add_completion_head(ref, temperature=config.loss.temperature, entropy=False)
    ref.requires_grad_(False)
    ref.eval()
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return prepare_deepspeed(ref, accelerator)
    if kind == DistributedType.FSDP:
        return prepare_fsdp(ref, accelerator)
    return ref.to(torch.device(accelerator.device))


def build_optimizer(model: Any, config: TrainConfig, total_steps: int | None) -> tuple[Any, Any]:
    """(AdamW over the trainable weights, its learning-rate schedule over `total_steps`)."""
    from transformers import get_scheduler

    o = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=o.learning_rate,
        betas=(o.adam_beta1, o.adam_beta2),
        eps=o.adam_epsilon,
        weight_decay=o.weight_decay,
    )
    steps = total_steps or config.run.max_steps
    if o.lr_scheduler != "constant" and steps is None:
        raise BackendError(
            f"optim.lr_scheduler: {o.lr_scheduler!r} decays over a known number of steps; set run.max_steps"
        )
    name = "constant_with_warmup" if o.lr_scheduler == "constant" else o.lr_scheduler
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=steps or 1)
    return optimizer, scheduler


def fill_deepspeed_config(accelerator: Any, config: TrainConfig) -> None:
    """DeepSpeed wants a micro-batch size and clips gradients itself: fill its `auto` values."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    if plugin.is_auto("train_micro_batch_size_per_gpu"):
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1  # batches are ours; only logged
    if plugin.is_auto("gradient_clipping") and config.optim.max_grad_norm is not None:
        plugin.deepspeed_config["gradient_clipping"] = config.optim.max_grad_norm
