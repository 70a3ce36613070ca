"""Training throughput on one GPU: nbagent's TRL backend next to TRL's own GRPOTrainer, same data, same run.

A prepared, self-contained script for a single H100/H200 where only torch and transformers are installed:

    python benchmarks/gpu_train.py --wheels ./wheels            # trl, peft (and their deps) as wheels there
    python benchmarks/gpu_train.py --cpu-smoke                  # tiny sizes, checks the script on a CPU

It builds a Qwen2-architecture model on the spot (random weights, about 0.5B parameters by default, the
shape of Qwen2.5-0.5B) and a word-level tokenizer, then runs each trainer in its own subprocess (so peak
memory is measured cleanly) on identical batches: B sequences of P prompt + C completion tokens, one
optimizer step per batch, no KL, token-mean loss, AdamW. It times the optimizer steps after a warm-up
step and prints tokens/s, seconds per step and peak memory for both, with the ratio ours / TRL.

Missing Python packages (trl, peft, accelerate, pydantic, ...) are installed from `--wheels DIR`
(``pip install --no-index --find-links DIR``) when that folder is given and an import fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["peft", "accelerate", "datasets", "trl.trainer.grpo_trainer", "nbagent_train.backends.trl"]
"""What both runs import; a module missing on the way is installed from --wheels."""
PIP_NAMES = {"yaml": "pyyaml", "google": "protobuf"}
WORD_VOCAB = 4096
"""Token ids drawn for prompts/completions are below this (the tokenizer knows them; decoding works)."""


# --------------------------------------------------------------------------------------------------
# Set-up: packages, model, tokenizer
# --------------------------------------------------------------------------------------------------


def ensure_packages(wheels: Path | None) -> None:
    """Import every needed module; install each missing top-level package from `wheels` (offline)."""
    sys.path.insert(0, str(ROOT))
    tried: set[str] = set()
    while True:
        missing = _first_missing()
        if missing is None:
            return
        package = PIP_NAMES.get(missing, missing.replace("_", "-"))
        if wheels is None or package in tried:
            hint = f"it is not among the wheels in {wheels}" if wheels else "pass --wheels DIR with its wheel"
            sys.exit(f"missing Python package {package!r} ({hint}); or pip install it")
        tried.add(package)
        print(f"installing {package} from {wheels}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), package],
            check=True,
        )
        importlib.invalidate_caches()


def _first_missing() -> str | None:
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            return (exc.name or module).split(".")[0]
    return None


def model_shape(cpu_smoke: bool) -> dict[str, Any]:
    if cpu_smoke:
        return dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=1,
            num_key_value_heads=1,
            vocab_size=WORD_VOCAB + 8,
        )
    # Qwen2.5-0.5B's shape: about 494M parameters with its 151,936-token vocabulary.
    return dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
    )


def build_model(folder: Path, cpu_smoke: bool) -> int:
    """Write a random Qwen2 model and a word-level tokenizer with a chat template to `folder`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), WORD_VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tokenizer.save_pretrained(folder)
    config = Qwen2Config(
        **model_shape(cpu_smoke),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def make_batch(
    batch: int, group: int, prompt_len: int, completion_len: int, seed: int
) -> list[dict[str, Any]]:
    """`batch` sequences in groups of `group` (a group shares its prompt), with a random advantage each."""
    rng = random.Random(seed)
    rows = []
    for g in range(batch // group):
        prompt = [rng.randrange(3, WORD_VOCAB) for _ in range(prompt_len)]
        for _ in range(group):
            rows.append(
                {
                    "group": f"g{g}",
                    "prompt_ids": prompt,
                    "completion_ids": [rng.randrange(3, WORD_VOCAB) for _ in range(completion_len)],
                    "advantage": rng.gauss(0.0, 1.0),
                }
            )
    return rows


# --------------------------------------------------------------------------------------------------
# Workers (one per subprocess)
# --------------------------------------------------------------------------------------------------


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_memory_gib() -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "GPU allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process RSS"


def run_ours(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from nbagent_train.backends.trl import TRLBackend
    from nbagent_train.config.base import LoraSettings, LossConfig, OptimConfig, RunConfig, TrainConfig
    from nbagent_train.objective.samples import Sample, Segment

    micro = args.micro_batch * (args.prompt_len + args.completion_len)
    config = TrainConfig(
        model=str(folder),
        lora=LoraSettings(rank=args.lora_rank),
        optim=OptimConfig(learning_rate=1e-6, max_grad_norm=1.0),
        loss=LossConfig(
            kl_coef=0.0, is_correction=False, clip_low=0.2, clip_high=0.2, aggregation="token_mean"
        ),
        run=RunConfig(
            micro_batch_tokens=micro,
            dtype=args.dtype,
            gradient_checkpointing=args.grad_ckpt,
            tensorboard=False,
        ),
    )
    backend = TRLBackend(config)
    backend.setup()
    stamps: list[float] = []
    tokens = 0
    for step in range(args.steps + 1):
        rows = make_batch(args.batch, args.group, args.prompt_len, args.completion_len, seed=step)
        samples = []
        for i, row in enumerate(rows):
            c = len(row["completion_ids"])
            sample = Sample(
                episode_id=f"e{step}-{i}",
                group_id=row["group"],
                prompt_ids=row["prompt_ids"],
                completion_ids=row["completion_ids"],
                loss_mask=[1] * c,
                behaviour_logprobs=None,
                segments=[Segment(0, 0, c)],
                reward=0.0,
                advantages=[row["advantage"]],
            )
            samples.append(sample)
        if step == 1:
            _sync()
            stamps.append(time.perf_counter())
        backend.step(samples)
        if step >= 1:
            _sync()
            stamps.append(time.perf_counter())
            tokens += sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows)
    backend.close()
    return _result("nbagent TRLBackend", stamps, tokens)


def run_trl(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    batches = [
        make_batch(args.batch, args.group, args.prompt_len, args.completion_len, seed=s)
        for s in range(args.steps + 1)
    ]
    state = {"call": 0}

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        # The same token ids as the nbagent run, in the order the trainer asks for them.
        rows = batches[min(state["call"], len(batches) - 1)]
        state["call"] += 1
        if len(prompts) != len(rows):
            raise RuntimeError(f"GRPOTrainer asked for {len(prompts)} rollouts, expected {len(rows)}")
        return {
            "prompt_ids": [r["prompt_ids"] for r in rows],
            "completion_ids": [r["completion_ids"] for r in rows],
            "logprobs": [[0.0] * len(r["completion_ids"]) for r in rows],
        }

    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        return [random.gauss(0.0, 1.0) for _ in completions]

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            _sync()
            stamps.append(time.perf_counter())

    bf16 = args.dtype == "bfloat16"
    grpo = GRPOConfig(
        output_dir=str(folder / "trl_out"),
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.batch // args.micro_batch,
        num_generations=args.group,
        max_completion_length=args.completion_len,
        max_steps=args.steps + 1,
        learning_rate=1e-6,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        loss_type="dapo",
        bf16=bf16,
        gradient_checkpointing=args.grad_ckpt,
        model_init_kwargs={"dtype": torch.bfloat16 if bf16 else torch.float32},
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )
    peft_config = None
    if args.lora_rank > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=args.lora_rank,
            lora_alpha=2 * args.lora_rank,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    n_prompts = (args.steps + 1) * args.batch // args.group
    dataset = Dataset.from_dict({"prompt": [f"w{3 + i % 100}" for i in range(n_prompts)]})
    trainer = GRPOTrainer(
        model=str(folder),
        reward_funcs=reward,
        args=grpo,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(folder),
        rollout_func=rollout_func,
        peft_config=peft_config,
        callbacks=[Stamp()],
    )
    trainer.train()
    tokens = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for b in batches[1:] for r in b)
    return _result("TRL GRPOTrainer", stamps, tokens)


def _result(name: str, stamps: list[float], tokens: int) -> dict[str, Any]:
    """Time from the end of the warm-up step to the end of the last step."""
    elapsed = stamps[-1] - stamps[0]
    steps = len(stamps) - 1
    peak, kind = _peak_memory_gib()
    return {
        "name": name,
        "steps": steps,
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "s_per_step": elapsed / steps,
        "peak_gib": peak,
        "memory": kind,
    }


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model and batch: check the script on a CPU")
    p.add_argument("--wheels", type=Path, default=None, help="folder of wheels for missing packages")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (after one warm-up step)")
    p.add_argument("--batch", type=int, default=None, help="sequences per optimizer step")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per forward pass")
    p.add_argument("--group", type=int, default=4, help="samples per prompt (GRPO group)")
    p.add_argument("--prompt-len", type=int, default=None)
    p.add_argument("--completion-len", type=int, default=None)
    p.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tuning")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in both trainers")
    p.add_argument("--only", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    small = args.cpu_smoke
    defaults = {
        "steps": 3 if small else 8,
        "batch": 8 if small else 64,
        "micro_batch": 4 if small else 8,
        "prompt_len": 32 if small else 1024,
        "completion_len": 16 if small else 512,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.dtype = "float32" if small else "bfloat16"
    if args.batch % args.group or args.batch % args.micro_batch:
        p.error("--batch must be a multiple of --group and of --micro-batch")
    return args


def worker(args: argparse.Namespace) -> None:
    assert args.model_dir is not None
    result = run_ours(args, args.model_dir) if args.only == "ours" else run_trl(args, args.model_dir)
    print("RESULT " + json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        worker(args)
        return
    ensure_packages(args.wheels)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("no GPU found; run with --cpu-smoke to check the script on a CPU")
    results = []
    with tempfile.TemporaryDirectory(prefix="nbagent-gpu-bench-") as tmp:
        folder = Path(tmp) / "model"
        params = build_model(folder, args.cpu_smoke)
        mode = f"LoRA r={args.lora_rank}" if args.lora_rank else "full fine-tuning"
        print(
            f"device: {device}; model: Qwen2 {params / 1e6:.1f}M params, random weights; "
            f"batch {args.batch} x ({args.prompt_len} + {args.completion_len}) tokens, micro-batch "
            f"{args.micro_batch}, {mode}, "
            f"{args.dtype}, {args.steps} timed steps",
            flush=True,
        )
        passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--cpu-smoke"]
        base = [sys.executable, __file__, *(["--cpu-smoke"] if args.cpu_smoke else []), *passthrough]
        for which in ("ours", "trl"):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [*base, "--only", which, "--model-dir", str(folder)],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                sys.exit(f"the {which} run failed (exit {proc.returncode}); its output is above")
            result = json.loads(lines[-1][len("RESULT ") :])
            result["process_s"] = time.perf_counter() - t0
            results.append(result)
    ours, trl = results
    header = f"{'trainer':<22}{'tokens/s':>12}{'s/step':>10}{'peak GiB':>10}  memory"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:<22}{r['tokens_per_s']:>12.0f}{r['s_per_step']:>10.3f}{r['peak_gib']:>10.2f}"
            f"  {r['memory']}"
        )
    print(
        f"ratio ours / TRL: tokens/s {ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x, "
        f"peak memory {ours['peak_gib'] / trl['peak_gib']:.2f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": device,
                    "args": vars(args)
                    | {"wheels": str(args.wheels), "json": str(args.json), "model_dir": None},
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
