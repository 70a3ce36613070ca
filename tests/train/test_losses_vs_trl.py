"""Our advantages + losses against TRL 1.16's GRPOTrainer on the same model and the same token ids.

TRL's own code does the work on its side: a real `GRPOTrainer` gets our recorded completions through its
`rollout_func`, runs `_generate_and_score_completions` (GRPO advantages from the rewards, reference
logprobs, truncated importance sampling against the recorded logprobs) and `_compute_loss`. TRL computes
the importance ratio only when it generated with vLLM, so the trainer is told it did (`use_vllm=True`
after construction; no vLLM is involved: the rollout function returns the recorded data). The loss values
and the gradients of every weight must match ours.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from nbagent_train.backends.trl import TRLBackend  # noqa: E402
from nbagent_train.config.base import TrainConfig  # noqa: E402
from nbagent_train.objective.advantages import compute_advantages  # noqa: E402
from nbagent_train.objective.samples import Sample, build_samples  # noqa: E402
from tests.fixtures.trajectories import episode as make_episode  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]

GROUPS, PER_GROUP, MAX_COMPLETION = 2, 4, 48
CLIP_LOW, CLIP_HIGH, BETA, IS_CAP = 0.2, 0.28, 0.04, 2.0
TEXTS = [
    "<think>sum</think><code>print(2 + 3)</code>",
    "<code>print(x)</code>",
    "The answer is 5.",
    "<think>I should compute the sum with Python.</think><code>result = add(40, 2)\nprint(result)</code>",
]
REWARDS = [[1.0, 0.0, 0.5, 0.2], [0.0, 0.0, 1.0, 0.3]]
TRL_LOSS = {"token_mean": "dapo", "sequence_mean": "grpo", "constant": "dr_grpo"}


class Setup:
    """A TRL trainer and our backend holding identical weights (perturbed away from the reference)."""

    def __init__(self, model_dir: Path, tokenizer: Any, out: Path) -> None:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
        self.config = TrainConfig(
            model=str(model_dir),
            lora={"rank": 0},
            loss={
                "clip_low": CLIP_LOW,
                "clip_high": CLIP_HIGH,
                "kl_coef": BETA,
                "kl_estimator": "k3",
                "is_mode": "token_truncate",
                "is_cap": IS_CAP,
                "constant_normalizer": MAX_COMPLETION,
            },
            samples={"max_completion_tokens": MAX_COMPLETION},
            run={"micro_batch_tokens": 4096, "log_entropy": False},
        )
        self.backend = TRLBackend(self.config)
        self.backend.setup()
        self.ours = self.backend.accelerator.unwrap_model(self.backend.model)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in self.ours.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        self.samples, self.trajectories = self._data(tokenizer)

        args = GRPOConfig(
            output_dir=str(out),
            per_device_train_batch_size=GROUPS * PER_GROUP,
            num_generations=PER_GROUP,
            max_completion_length=MAX_COMPLETION,
            beta=BETA,
            epsilon=CLIP_LOW,
            epsilon_high=CLIP_HIGH,
            vllm_importance_sampling_mode="token_truncate",
            vllm_importance_sampling_clip_max=IS_CAP,
            report_to=[],
            use_cpu=True,
            bf16=False,
        )
        dataset = Dataset.from_list([{"prompt": f"task-{g}"} for g in range(GROUPS)])
        self.trainer = GRPOTrainer(
            model=str(model_dir),
            reward_funcs=self._reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            rollout_func=self._rollout,
        )
        self.trainer.model.load_state_dict(self.ours.state_dict())
        self.trainer.model.train()
        self.trainer.current_gradient_accumulation_steps = 1
        self.trainer.use_vllm = True
        self.trainer.vllm_importance_sampling_correction = True
        self.trainer._last_loaded_step = self.trainer.state.global_step

    def _data(self, tokenizer: Any) -> tuple[list[Sample], list[Any]]:
        rng = random.Random(0)
        trajectories = []
        for g in range(GROUPS):
            for k in range(PER_GROUP):
                trajectories.append(
                    make_episode(
                        tokenizer,
                        f"task-{g}",
                        [(TEXTS[k], "")],
                        REWARDS[g][k],
                        group_id=f"task-{g}",
                        sample_index=k,
                        question=f"What is {g} + 3?",
                    )
                )
        built = build_samples(trajectories, self.config.samples)
        current = self.backend.score(built.samples)
        for traj, logps in zip(trajectories, current, strict=True):
            noisy = [x + rng.uniform(-1.0, 1.0) for x in logps]
            traj.steps[0].model_call.completion_logprobs = noisy
        built = build_samples(trajectories, self.config.samples)
        result = compute_advantages(built.samples, built.episodes, self.config.advantage)
        return result.samples, trajectories

    def _rollout(self, prompts: list[str], trainer: Any) -> dict[str, Any]:
        seen: dict[str, int] = {}
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "recorded": []}
        for prompt in prompts:
            k = seen.get(prompt, 0)
            seen[prompt] = k + 1
            traj = next(t for t in self.trajectories if t.task.id == prompt and t.sample_index == k)
            call = traj.steps[0].model_call
            out["prompt_ids"].append(call.prompt_token_ids)
            out["completion_ids"].append(call.completion_token_ids)
            out["logprobs"].append(call.completion_logprobs)
            out["recorded"].append(traj.reward.total)
        return out

    @staticmethod
    def _reward(prompts: list[Any], completions: list[Any], recorded: list[float], **_: Any) -> list[float]:
        return list(recorded)

    def trl_batch(self) -> dict[str, Any]:
        inputs = [{"prompt": f"task-{g}"} for g in range(GROUPS) for _ in range(PER_GROUP)]
        return self.trainer._generate_and_score_completions(inputs)


def _grads(model: Any) -> dict[str, Any]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _compare_grads(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours.keys() == theirs.keys()
    for name, g in ours.items():
        assert torch.allclose(g, theirs[name], rtol=1e-3, atol=1e-6), name


def _row_keys(batch: dict[str, Any]) -> list[tuple[int, ...]]:
    """prompt + completion ids of each TRL row, padding removed (to pair rows with our samples)."""
    keys = []
    for row in range(batch["prompt_ids"].shape[0]):
        p = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()].tolist()
        c = batch["completion_ids"][row][batch["completion_mask"][row].bool()].tolist()
        keys.append((*p, *c))
    return keys


def _key(sample: Sample) -> tuple[int, ...]:
    return (*sample.prompt_ids, *sample.completion_ids)


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tiny_model_dir, tiny_tokenizer, tmp_path_factory.mktemp("trl"))


def test_grpo_advantages_match_trl(setup: Setup) -> None:
    batch = setup.trl_batch()
    theirs = dict(zip(_row_keys(batch), batch["advantages"].tolist(), strict=True))
    ours = {_key(s): s.advantages[0] for s in setup.samples}
    assert ours.keys() == theirs.keys()
    assert any(abs(a) > 0.5 for a in ours.values())
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], abs=1e-5)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
@pytest.mark.parametrize("ratio_kl", [False, True])
def test_on_policy_loss_and_gradients_match_trl(setup: Setup, aggregation: str, ratio_kl: bool) -> None:
    """Advantages, reference KL (k3), truncated IS and aggregation, all through TRL's code."""
    setup.trainer.loss_type = TRL_LOSS[aggregation]
    setup.trainer.args.use_bias_correction_kl = ratio_kl
    setup.config.loss.aggregation = aggregation  # type: ignore[assignment]
    setup.config.loss.kl_ratio_correction = ratio_kl

    batch = setup.trl_batch()
    assert "importance_sampling_ratio" in batch
    assert "ref_per_token_logps" in batch
    setup.trainer.model.zero_grad()
    theirs = setup.trainer._compute_loss(setup.trainer.model, batch)
    theirs.backward()

    setup.ours.zero_grad()
    ours, stats = setup.backend.compute_loss(setup.samples)
    ours.backward()

    assert stats.kl > 0  # the policy was moved away from the reference
    assert stats.is_weight_max == pytest.approx(IS_CAP)  # some weights were truncated
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-4, abs=1e-7)
    _compare_grads(_grads(setup.ours), _grads(setup.trainer.model))


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_clipped_ratio_matches_trl(setup: Setup, aggregation: str) -> None:
    """Off-policy by a perturbation of the old logprobs: the low/high clips both engage."""
    setup.trainer.loss_type = TRL_LOSS[aggregation]
    setup.config.loss.aggregation = aggregation  # type: ignore[assignment]
    setup.config.loss.is_correction = False
    setup.config.loss.kl_coef = 0.0
    setup.trainer.beta = 0.0
    setup.trainer.use_vllm = False
    try:
        batch = setup.trl_batch()
        gen = torch.Generator().manual_seed(3)
        old = batch.get("old_per_token_logps", None)
        if old is None:
            with torch.no_grad():
                old, _, _ = setup.trainer._get_per_token_logps_and_entropies(
                    setup.trainer.model,
                    torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
                    torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
                    batch["completion_ids"].size(1),
                )
        old = old + (torch.rand(old.shape, generator=gen) - 0.5) * 1.2
        batch["old_per_token_logps"] = old
        setup.trainer.model.zero_grad()
        theirs = setup.trainer._compute_loss(setup.trainer.model, batch)
        theirs.backward()
        clip_low = setup.trainer._metrics["train"]["clip_ratio/low_mean"][-1]
        clip_high = setup.trainer._metrics["train"]["clip_ratio/high_mean"][-1]

        lengths = batch["completion_mask"].sum(dim=1).tolist()
        rows = {k: old[r, : int(lengths[r])].tolist() for r, k in enumerate(_row_keys(batch))}
        olds = [rows[_key(s)] for s in setup.samples]
        setup.ours.zero_grad()
        ours, stats = setup.backend.compute_loss(setup.samples, old_logps=olds)
        ours.backward()
    finally:
        setup.config.loss.is_correction = True
        setup.config.loss.kl_coef = BETA
        setup.trainer.beta = BETA
        setup.trainer.use_vllm = True

    report = stats.report()
    assert report["clip_frac_low"] > 0
    assert report["clip_frac_high"] > 0
    assert report["clip_frac_low"] == pytest.approx(clip_low, abs=1e-6)
    assert report["clip_frac_high"] == pytest.approx(clip_high, abs=1e-6)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-4, abs=1e-7)
    _compare_grads(_grads(setup.ours), _grads(setup.trainer.model))
