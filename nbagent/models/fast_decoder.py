"""`FastDecoder`: a CPU decoder for Llama-family checkpoints (Llama, Qwen2), built from a loaded HF model.

Decoding one token on a CPU is bound by memory bandwidth, so the decoder reads as few weight bytes as it
can: each linear layer keeps int8 weights with a per-output-channel scale (`torch._weight_int8pack_mm`)
for single-token steps, and bf16 weights for prefill, where dense matrix products win. The q/k/v and
gate/up projections are fused, the KV cache is preallocated (bf16) and grows in blocks, and the residual
stream, norms and RoPE stay in float32. The cache of the last call is kept: `start` reuses the longest
common prefix of token ids with the previous sequence and prefills only the rest, which is what an
agent's next step (previous prompt + completion + observation) needs.

`unsupported_reason(model)` says why a model cannot use the decoder (the caller then runs HF's own
forward). Not thread-safe: the caller serializes calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUPPORTED_MODEL_TYPES = frozenset({"llama", "qwen2"})
_PREFILL_CHUNK = 512
"""Prompt tokens per forward pass in prefill: bounds the activations and attention scores in memory."""
_CACHE_BLOCK = 256
"""The KV cache grows in multiples of this many positions."""


def unsupported_reason(model: Any) -> str | None:
    """Why `FastDecoder(model)` would not reproduce `model`'s forward, or None when it would."""
    config: Any = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} (the fast decoder knows {sorted(SUPPORTED_MODEL_TYPES)})"
    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"device {device} (the fast decoder runs on CPU)"
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "per-layer"
    if rope_type != "default":
        return f"rope scaling {rope_type!r}"
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
        return "sliding-window attention"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    layer = model.model.layers[0]
    if getattr(config, "mlp_bias", False) or layer.self_attn.o_proj.bias is not None:
        return "biases in the MLP or the output projection"
    if float(getattr(model.model.rotary_emb, "attention_scaling", 1.0)) != 1.0:
        return "scaled rotary attention"
    return None


@dataclass
class _Linear:
    """A linear layer with int8 weights and a bf16 scale per output channel.

    Single rows run `torch._weight_int8pack_mm`; several rows (prefill) multiply by the same int8
    values held in bf16 (where they are exact) and scale the product, so both compute one model.
    """

    int8: Any
    dense: Any
    scales: Any
    bias: Any

    @classmethod
    def of(cls, weights: list[Any], biases: list[Any | None]) -> _Linear:
        import torch

        weight = torch.cat(weights).float() if len(weights) > 1 else weights[0].detach().float()
        bias = None
        if any(b is not None for b in biases):
            parts = [
                b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases, strict=True)
            ]
            bias = torch.cat(parts).to(torch.bfloat16)
        # Round the scales to bf16 first, so int8 * scale is the quantization that was intended.
        scales = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)
        int8 = torch.div(weight, scales.float()[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        return cls(int8, int8.to(torch.bfloat16), scales, bias)

    def __call__(self, x: Any) -> Any:
        import torch
        import torch.nn.functional as F

        if x.shape[0] == 1:
            out = torch._weight_int8pack_mm(x, self.int8, self.scales)
        else:
            out = F.linear(x, self.dense) * self.scales
        return out if self.bias is None else out + self.bias


@dataclass
class _Layer:
    input_norm: Any
    qkv: _Linear
    o: _Linear
    post_norm: Any
    gate_up: _Linear
    down: _Linear


class FastDecoder:
    """Next-token logits of a Llama-family model, with a KV cache kept between calls.

    `start(ids)` returns the float32 logits after the prompt `ids`; `step(token)` appends one token and
    returns the logits after it. The weights are copied from `model` when the decoder is built.
    """

    def __init__(self, model: Any) -> None:
        import torch

        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"FastDecoder does not support this model: {reason}")
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.max_positions = int(config.max_position_embeddings)
        self.inv_freq = model.model.rotary_emb.inv_freq.detach().float().clone()
        with torch.no_grad():
            self.embed = model.model.embed_tokens.weight.detach()
            self.layers = [self._layer(layer) for layer in model.model.layers]
            self.norm = model.model.norm.weight.detach().float().clone()
            self.lm_head = _Linear.of([model.lm_head.weight], [None])
        self.tokens: list[int] = []
        """The ids whose keys and values are in the cache, in order."""
        self.reused = 0
        """How many prompt tokens the last `start` took from the cache."""
        self._keys = self._values = torch.empty(0)
        self._cos = self._sin = torch.empty(0)
        self._last_prompt: list[int] = []
        self._last_logits = torch.empty(0)

    @staticmethod
    def _layer(layer: Any) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        return _Layer(
            input_norm=layer.input_layernorm.weight.detach().float().clone(),
            qkv=_Linear.of(
                [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight],
                [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias],
            ),
            o=_Linear.of([attn.o_proj.weight], [None]),
            post_norm=layer.post_attention_layernorm.weight.detach().float().clone(),
            gate_up=_Linear.of([mlp.gate_proj.weight, mlp.up_proj.weight], [None, None]),
            down=_Linear.of([mlp.down_proj.weight], [None]),
        )

    def start(self, ids: list[int]) -> Any:
        """Logits after `ids`, prefilling only what the cache does not already hold.

        The prompt of the previous `start`, asked again, gets the very logits it got then (so a
        repeated prompt with a seed samples the same tokens).
        """
        if not ids:
            raise ValueError("FastDecoder.start needs at least one token")
        if ids == self._last_prompt and self.tokens[: len(ids)] == ids:
            self.tokens = self.tokens[: len(ids)]
            self.reused = len(ids)
            return self._last_logits.clone()
        limit = min(len(ids) - 1, len(self.tokens))  # the last token is always run: its logits are needed
        common = next((i for i in range(limit) if self.tokens[i] != ids[i]), limit)
        self.tokens = self.tokens[:common]
        self.reused = common
        self._last_logits = self._forward(ids[common:])
        self._last_prompt = list(ids)
        return self._last_logits.clone()

    def step(self, token: int) -> Any:
        """Logits after appending `token`."""
        return self._forward([token])

    def _forward(self, ids: list[int]) -> Any:
        import torch

        if len(self.tokens) + len(ids) > self.max_positions:
            raise ValueError(f"{len(self.tokens) + len(ids)} positions exceed {self.max_positions}")
        with torch.inference_mode():
            for begin in range(0, len(ids), _PREFILL_CHUNK):
                chunk = ids[begin : begin + _PREFILL_CHUNK]
                hidden = self._run(chunk)
                self.tokens.extend(chunk)
            last = self._rms_norm(hidden[-1:], self.norm)
            return self.lm_head(last)[0].float()

    def _run(self, ids: list[int]) -> Any:
        """Run the layers over `ids` at the positions after the cache; return the last hidden states."""
        import torch

        start, count = len(self.tokens), len(ids)
        end = start + count
        self._reserve(end)
        cos, sin = self._cos[start:end], self._sin[start:end]
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        mask = None
        if count > 1 and start > 0:  # causal, aligned to the end of the keys
            mask = torch.ones(count, end, dtype=torch.bool).tril(diagonal=start)
        x = self.embed[torch.tensor(ids)].float()
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv(self._rms_norm(x, layer.input_norm))
            qk = _rope(qkv[:, : q_size + kv_size].view(count, -1, self.head_dim), cos, sin)  # q and k at once
            q, k = qk[:, : self.heads], qk[:, self.heads :]
            v = qkv[:, q_size + kv_size :].view(count, self.kv_heads, self.head_dim)
            self._keys[index, :, start:end] = k.transpose(0, 1)
            self._values[index, :, start:end] = v.transpose(0, 1)
            attended = self._attend(q, self._keys[index, :, :end], self._values[index, :, :end], mask)
            x += layer.o(attended)
            gate, up = layer.gate_up(self._rms_norm(x, layer.post_norm)).chunk(2, dim=-1)
            x += layer.down(torch.nn.functional.silu(gate) * up)
        return x

    def _attend(self, q: Any, keys: Any, values: Any, mask: Any) -> Any:
        """Scaled dot-product attention of `q` [n, heads, dim] over the cached [kv_heads, T, dim]."""
        import torch.nn.functional as F

        count = q.shape[0]
        if count == 1:  # one query: each kv head's group of query heads attends like a short sequence
            grouped = q.view(1, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
            out = F.scaled_dot_product_attention(grouped, keys[None], values[None])
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None],
                keys[None],
                values[None],
                attn_mask=mask,
                is_causal=mask is None,
                enable_gqa=True,
            )[0].transpose(0, 1)
        return out.reshape(count, self.heads * self.head_dim)

    def _rms_norm(self, x: Any, weight: Any) -> Any:
        import torch
        import torch.nn.functional as F

        return F.rms_norm(x, (x.shape[-1],), weight, self.eps).to(torch.bfloat16)

    def _reserve(self, positions: int) -> None:
        """Grow the KV cache and the RoPE tables to hold at least `positions` positions."""
        import torch

        capacity = self._keys.shape[2] if self._keys.dim() == 4 else 0
        if positions <= capacity:
            return
        capacity = max(-(-positions // _CACHE_BLOCK) * _CACHE_BLOCK, 2 * capacity)
        capacity = max(min(capacity, self.max_positions), positions)
        shape = (len(self.layers), self.kv_heads, capacity, self.head_dim)
        keys, values = torch.zeros(shape, dtype=torch.bfloat16), torch.zeros(shape, dtype=torch.bfloat16)
        if self.tokens:
            keys[:, :, : len(self.tokens)] = self._keys[:, :, : len(self.tokens)]
            values[:, :, : len(self.tokens)] = self._values[:, :, : len(self.tokens)]
        self._keys, self._values = keys, values
        angles = torch.outer(torch.arange(capacity, dtype=torch.float32), self.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        sin = angles.sin()
        sin[:, : self.inv_freq.numel()] *= -1  # rotate_half(x) * sin == roll(x, dim / 2) * this
        self._cos, self._sin = angles.cos()[:, None, :], sin[:, None, :]


def _rope(x: Any, cos: Any, sin: Any) -> Any:
    """Rotate `x` [n, heads, dim] (HF's rotate-half layout; `sin`'s first half negated) in float32."""
    full = x.float()
    return (full * cos).addcmul_(full.roll(full.shape[-1] // 2, dims=-1), sin).to(x.dtype)
