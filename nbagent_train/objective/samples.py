"""From recorded trajectories to token-exact training samples.

Rules (docs/training.md has a worked example):

- **Recorded ids first.** A step's sample is its `prompt_token_ids` as the server saw them and its
  `completion_token_ids` as sampled, loss on the completion only, with the recorded behaviour logprobs.
  Text is never re-tokenized when ids exist.
- **per_step** (default, as L0): one sample per step. **merged**: a step whose prompt starts with the
  previous sample's prompt + completion (+ observations) exactly is appended to it: the new prompt tokens
  (the observation) are masked, its completion is scored. A prefix break (context trimmed, a template that
  drops old reasoning) or the length cap starts a new sample; both are counted.
- **Steps without ids** are re-tokenized with the policy tokenizer's chat template (`retokenized=True`,
  behaviour logprobs unknown, a warning); `allow_retokenized=False` refuses them.
- **Length limits.** A completion longer than `max_completion_tokens` keeps its first tokens (each token
  kept is still exactly what was sampled in that context). A prompt longer than `max_prompt_tokens` drops the
  sample (default) or keeps its last tokens (`prompt_overflow="truncate_left"`). Everything is counted
  in the `BuildSummary`.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nbagent.trajectory import ModelCall, Trajectory
from nbagent_train.config.base import SampleConfig
from nbagent_train.errors import SampleBuildError
from nbagent_train.objective.retokenize import Retokenizer

logger = logging.getLogger("nbagent_train")

NAN = float("nan")


@dataclass(slots=True)
class Segment:
    """The scored tokens of one agent step inside a sample: ``completion_ids[start:end]``."""

    step_index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class EpisodeInfo:
    """What the advantage estimators need to know about one episode."""

    episode_id: str
    group_id: str
    task_id: str
    reward: float
    num_steps: int
    termination: str


@dataclass(slots=True)
class Sample:
    """One training sequence: an unscored prompt, then a completion region scored where `loss_mask` is 1."""

    episode_id: str
    group_id: str
    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]
    behaviour_logprobs: list[float] | None
    """Aligned with `completion_ids`; NaN where unknown (observation tokens); None when none are known."""
    segments: list[Segment]
    reward: float
    retokenized: bool = False
    advantages: list[float] = field(default_factory=list)
    """One advantage per segment, set by `nbagent_train.objective.advantages`."""

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    @property
    def num_scored(self) -> int:
        return sum(self.loss_mask)

    def token_advantages(self) -> list[float]:
        """The advantage of every completion token (0 where the token is not scored)."""
        if len(self.advantages) != len(self.segments):
            raise SampleBuildError(
                f"sample of episode {self.episode_id} has {len(self.segments)} segments but "
                f"{len(self.advantages)} advantages; compute them first (nbagent_train.compute_advantages)"
            )
        out = [0.0] * len(self.completion_ids)
        for seg, adv in zip(self.segments, self.advantages, strict=True):
            out[seg.start : seg.end] = [adv] * seg.length
        return out


@dataclass
class BuildSummary:
    """Counts of every choice the sample builder made."""

    mode: str = "per_step"
    trajectories: int = 0
    episodes: int = 0
    episodes_without_reward: int = 0
    episodes_dropped: int = 0
    episodes_without_samples: int = 0
    steps: int = 0
    steps_empty: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    observation_tokens: int = 0
    merged_steps: int = 0
    prefix_breaks: int = 0
    length_breaks: int = 0
    prompts_truncated: int = 0
    prompts_dropped: int = 0
    completions_truncated: int = 0
    retokenized_steps: int = 0
    steps_without_logprobs: int = 0
    logprob_length_mismatch: int = 0
    terminations: dict[str, int] = field(default_factory=dict)
    reward_mean: float = 0.0
    reward_std: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs in display order."""
        terms = ", ".join(f"{k} {v}" for k, v in sorted(self.terminations.items())) or "-"
        return [
            ("mode", self.mode),
            ("trajectories read", str(self.trajectories)),
            ("episodes used", str(self.episodes)),
            ("  terminations", terms),
            ("  reward mean / std", f"{self.reward_mean:.4f} / {self.reward_std:.4f}"),
            ("  without reward", str(self.episodes_without_reward)),
            ("  dropped (no reward)", str(self.episodes_dropped)),
            ("  left without any sample", str(self.episodes_without_samples)),
            ("steps", str(self.steps)),
            ("  empty completions skipped", str(self.steps_empty)),
            ("  re-tokenized (no ids recorded)", str(self.retokenized_steps)),
            ("  without behaviour logprobs", str(self.steps_without_logprobs)),
            ("  logprobs not matching ids (ignored)", str(self.logprob_length_mismatch)),
            ("samples", str(self.samples)),
            ("  steps merged into a previous sample", str(self.merged_steps)),
            ("  prefix breaks (new sample)", str(self.prefix_breaks)),
            ("  length breaks (new sample)", str(self.length_breaks)),
            ("prompt tokens", str(self.prompt_tokens)),
            ("completion tokens (scored)", str(self.completion_tokens)),
            ("observation tokens (masked)", str(self.observation_tokens)),
            ("prompts truncated (left)", str(self.prompts_truncated)),
            ("prompts too long (sample dropped)", str(self.prompts_dropped)),
            ("completions truncated", str(self.completions_truncated)),
        ]

    def as_table(self) -> Any:
        """A `rich.table.Table` of `rows()`."""
        from rich.table import Table

        table = Table(title="Sample build summary", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("count", justify="right")
        for label, value in self.rows():
            table.add_row(label, value)
        return table


@dataclass
class SampleSet:
    """The result of `build_samples`."""

    samples: list[Sample]
    episodes: list[EpisodeInfo]
    summary: BuildSummary


@dataclass(slots=True)
class _StepTokens:
    index: int
    prompt: list[int]
    completion: list[int]
    logprobs: list[float] | None
    retokenized: bool
    completion_truncated: bool


class SampleBuilder:
    """Turns trajectories into samples following a `SampleConfig`; see the module docstring."""

    def __init__(self, config: SampleConfig | None = None, tokenizer: Any | None = None) -> None:
        self.config = config or SampleConfig()
        self._tokenizer = tokenizer
        self._retokenizer: Retokenizer | None = None

    def build(self, trajectories: Iterable[Trajectory]) -> SampleSet:
        summary = BuildSummary(mode=self.config.mode)
        samples: list[Sample] = []
        episodes: list[EpisodeInfo] = []
        terminations: Counter[str] = Counter()
        for traj in trajectories:
            summary.trajectories += 1
            reward = self._reward(traj, summary)
            if reward is None:
                continue
            episode = EpisodeInfo(
                episode_id=traj.id,
                group_id=traj.group_id or traj.task.id,
                task_id=traj.task.id,
                reward=reward,
                num_steps=len(traj.steps),
                termination=str(traj.termination),
            )
            episodes.append(episode)
            terminations[episode.termination] += 1
            new = self._episode_samples(traj, episode, summary)
            if not new:
                summary.episodes_without_samples += 1
            samples.extend(new)
        summary.episodes = len(episodes)
        summary.terminations = dict(terminations)
        rewards = [e.reward for e in episodes]
        if rewards:
            summary.reward_mean = statistics.fmean(rewards)
            summary.reward_std = statistics.pstdev(rewards)
        summary.samples = len(samples)
        if summary.retokenized_steps:
            logger.warning(
                "%d step(s) had no recorded token ids and were re-tokenized from their messages; their "
                "tokens may differ from what the model sampled and their behaviour logprobs are unknown "
                "(set samples.allow_retokenized=false to refuse them)",
                summary.retokenized_steps,
            )
        return SampleSet(samples=samples, episodes=episodes, summary=summary)

    # -- per episode ---------------------------------------------------------------------------------

    def _reward(self, traj: Trajectory, summary: BuildSummary) -> float | None:
        if traj.reward is not None:
            return float(traj.reward.total)
        summary.episodes_without_reward += 1
        policy = self.config.missing_reward
        if policy == "zero":
            return 0.0
        if policy == "drop":
            summary.episodes_dropped += 1
            return None
        raise SampleBuildError(
            f"episode {traj.id} (task {traj.task.id!r}) has no reward. Score the trajectories first "
            "(the environment's score), or set samples.missing_reward to `zero` or `drop`"
        )

    def _episode_samples(self, traj: Trajectory, episode: EpisodeInfo, summary: BuildSummary) -> list[Sample]:
        steps: list[_StepTokens] = []
        stop_strings = traj.model.sampling.stop
        for step in traj.steps:
            summary.steps += 1
            tokens = self._step_tokens(traj, step.index, step.model_call, stop_strings, summary)
            if tokens is not None:
                steps.append(tokens)
        if self.config.mode == "per_step":
            out = [self._single(episode, s, summary) for s in steps]
            return [s for s in out if s is not None]
        return self._merged(episode, steps, summary)

    def _step_tokens(
        self,
        traj: Trajectory,
        index: int,
        call: ModelCall,
        stop_strings: Sequence[str] | None,
        summary: BuildSummary,
    ) -> _StepTokens | None:
        logprobs: list[float] | None
        if call.prompt_token_ids is not None and call.completion_token_ids is not None:
            prompt, completion = list(call.prompt_token_ids), list(call.completion_token_ids)
            logprobs = None if call.completion_logprobs is None else list(call.completion_logprobs)
            if logprobs is not None and len(logprobs) != len(completion):
                summary.logprob_length_mismatch += 1
                logprobs = None
            retokenized = False
        else:
            prompt, completion = self._retokenize(traj, index, call, stop_strings)
            logprobs = None
            retokenized = True
            summary.retokenized_steps += 1
        if not completion:
            summary.steps_empty += 1
            return None
        if logprobs is None:
            summary.steps_without_logprobs += 1
        limit = self.config.max_completion_tokens
        truncated = limit is not None and len(completion) > limit
        if truncated:
            assert limit is not None
            summary.completions_truncated += 1
            completion = completion[:limit]
            logprobs = None if logprobs is None else logprobs[:limit]
        return _StepTokens(index, prompt, completion, logprobs, retokenized, truncated)

    def _retokenize(
        self, traj: Trajectory, index: int, call: ModelCall, stop_strings: Sequence[str] | None
    ) -> tuple[list[int], list[int]]:
        where = f"step {index} of episode {traj.id} (task {traj.task.id!r})"
        if not self.config.allow_retokenized:
            raise SampleBuildError(
                f"{where} was recorded without token ids and samples.allow_retokenized is false. Record "
                "token ids (a vLLM server returns them) or allow re-tokenization"
            )
        if self._retokenizer is None:
            if self._tokenizer is None:
                raise SampleBuildError(
                    f"{where} was recorded without token ids; pass the policy's tokenizer to re-tokenize it"
                )
            self._retokenizer = Retokenizer(self._tokenizer)
        return self._retokenizer.encode(call, stop_strings)

    def _fit_prompt(self, prompt: list[int], summary: BuildSummary) -> list[int] | None:
        limit = self.config.max_prompt_tokens
        if limit is None or len(prompt) <= limit:
            return prompt
        if self.config.prompt_overflow == "drop":
            summary.prompts_dropped += 1
            return None
        summary.prompts_truncated += 1
        return prompt[-limit:]

    def _single(self, episode: EpisodeInfo, step: _StepTokens, summary: BuildSummary) -> Sample | None:
        prompt = self._fit_prompt(step.prompt, summary)
        if prompt is None:
            return None
        summary.prompt_tokens += len(prompt)
        summary.completion_tokens += len(step.completion)
        return Sample(
            episode_id=episode.episode_id,
            group_id=episode.group_id,
            prompt_ids=prompt,
            completion_ids=list(step.completion),
            loss_mask=[1] * len(step.completion),
            behaviour_logprobs=step.logprobs,
            segments=[Segment(step.index, 0, len(step.completion))],
            reward=episode.reward,
            retokenized=step.retokenized,
        )

    def _merged(self, episode: EpisodeInfo, steps: list[_StepTokens], summary: BuildSummary) -> list[Sample]:
        out: list[Sample] = []
        current: Sample | None = None
        closed = False  # the current sample ends with a truncated completion: nothing can follow it
        cap = self.config.max_prompt_tokens, self.config.max_completion_tokens
        max_total = None if None in cap else sum(c for c in cap if c is not None)
        for step in steps:
            if current is not None:
                context = current.prompt_ids + current.completion_ids
                fits = max_total is None or len(step.prompt) + len(step.completion) <= max_total
                if closed or not fits:
                    summary.length_breaks += 1
                elif step.prompt[: len(context)] != context:
                    summary.prefix_breaks += 1
                else:
                    self._extend(current, step, step.prompt[len(context) :], summary)
                    closed = step.completion_truncated
                    continue
            current = self._single(episode, step, summary)
            closed = step.completion_truncated
            if current is not None:
                out.append(current)
        return out

    @staticmethod
    def _extend(sample: Sample, step: _StepTokens, observation: list[int], summary: BuildSummary) -> None:
        if sample.behaviour_logprobs is None and step.logprobs is not None:
            sample.behaviour_logprobs = [NAN] * len(sample.completion_ids)
        if sample.behaviour_logprobs is not None:
            sample.behaviour_logprobs.extend([NAN] * len(observation))
            sample.behaviour_logprobs.extend(step.logprobs or [NAN] * len(step.completion))
        sample.completion_ids.extend(observation)
        sample.loss_mask.extend([0] * len(observation))
        start = len(sample.completion_ids)
        sample.completion_ids.extend(step.completion)
        sample.loss_mask.extend([1] * len(step.completion))
        sample.segments.append(Segment(step.index, start, start + len(step.completion)))
        sample.retokenized = sample.retokenized or step.retokenized
        summary.merged_steps += 1
        summary.observation_tokens += len(observation)
        summary.completion_tokens += len(step.completion)


def build_samples(
    trajectories: Iterable[Trajectory], config: SampleConfig | None = None, tokenizer: Any | None = None
) -> SampleSet:
    """Build training samples from trajectories; see the module docstring for the rules."""
    return SampleBuilder(config, tokenizer).build(trajectories)
