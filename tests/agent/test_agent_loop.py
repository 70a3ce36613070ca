"""The agent loop with scripted models and a real Jupyter kernel."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import anyio
import psutil
import pytest
from pydantic import BaseModel

from nbagent.agent.actions import XmlActionParser
from nbagent.agent.agent import Agent, AgentRun, RunResult
from nbagent.agent.prompts import LAST_STEP_NOTE, SUMMARIZE_SYSTEM_PROMPT
from nbagent.errors import ConfigError, ToolDefinitionError
from nbagent.kernel import Kernel
from nbagent.models.base import ChatMessage, ModelError
from nbagent.models.testing import FunctionModel, ScriptedModel
from nbagent.tools import RunContext, tool
from nbagent.trajectory import CellStatus, SamplingSettings, Step, TaskSpec, Termination
from nbagent.trajectory.export import to_openai_messages


def code(body: str, think: str = "step") -> str:
    return f"<think>{think}</think>\n<code>\n{body}\n</code>"


def answer(value: str) -> str:
    return code(f"submit_final_answer({value})", "done")


async def test_two_steps_to_an_answer() -> None:
    completions = [code("x = 17 * 23\nprint(x)"), answer("x")]
    agent = Agent(ScriptedModel(completions), max_steps=5)
    result = await agent.run(TaskSpec(id="t17", prompt="What is 17 * 23?"))
    assert result.termination is Termination.SUBMITTED
    assert result.answer == "391"
    traj = result.trajectory
    assert traj.final_answer == "391"
    assert traj.task.id == "t17"
    assert traj.error is None
    assert [s.index for s in traj.steps] == [0, 1]
    assert [s.model_call.completion for s in traj.steps] == completions
    first, second = traj.steps
    assert first.action.think == "step"
    assert first.action.code == "x = 17 * 23\nprint(x)\n"
    assert first.cell is not None
    assert first.cell.status is CellStatus.OK
    assert first.observation == "<output>\n391\n</output>"
    # what the model saw: system prompt, task, then its own reply (closed) and the observation
    sent = second.model_call.messages
    assert sent[0] == {"role": "system", "content": traj.system_prompt}
    assert sent[1] == {"role": "user", "content": "Task: What is 17 * 23?"}
    assert traj.task_message == sent[1]["content"]
    assert sent[2]["role"] == "assistant"
    assert sent[2]["content"] == completions[0] == first.assistant_text
    assert sent[3] == {"role": "user", "content": "<output>\n391\n</output>"}
    assert second.cell is not None
    assert [c.name for c in second.cell.tool_calls] == ["submit_final_answer"]
    assert "def submit_final_answer(answer: str) -> str" in traj.system_prompt
    assert traj.metadata["action_format"] == "xml"
    assert {"python", "nbagent", "pydantic"} <= set(traj.versions)
    assert traj.wall_s > 0
    assert traj.metadata["timings"]["cell_s"] > 0


async def test_stop_sequence_is_sent_and_cut_reply_is_closed() -> None:
    seen: list[SamplingSettings] = []
    replies = iter(["<think>a</think><code>print('cut here')", answer("'ok'")])

    def respond(messages: list[ChatMessage], settings: SamplingSettings) -> str:
        seen.append(settings)
        return next(replies)

    agent = Agent(FunctionModel(respond), sampling=SamplingSettings(temperature=0.7, stop=["<end>"]))
    result = await agent.run("Print.")
    assert result.termination is Termination.SUBMITTED
    assert seen[0].stop == ["<end>", "</code>"]
    assert seen[0].temperature == 0.7
    assert result.steps[0].observation == "<output>\ncut here\n</output>"
    closed = "<think>a</think><code>print('cut here')</code>"
    assert result.steps[1].model_call.messages[2]["content"] == closed == result.steps[0].assistant_text
    assert result.trajectory.model.sampling.stop == ["<end>", "</code>"]


async def test_format_errors_are_corrected_then_end_the_episode() -> None:
    completions = ["I think it is 391.", code("print(1)"), "no code", "still none", "nothing"]
    agent = Agent(ScriptedModel(completions), max_steps=10, max_format_errors=3)
    result = await agent.run("q")
    assert result.termination is Termination.FORMAT
    kinds = [s.action.kind for s in result.steps]
    assert kinds == ["format_error", "code", "format_error", "format_error", "format_error"]
    first = result.steps[0]
    assert first.cell is None
    assert first.action.think == "I think it is 391."
    assert first.observation.startswith("Your reply could not be run: No <code> block found.")
    assert result.steps[1].model_call.messages[-1]["content"] == first.observation
    assert result.error is not None
    assert result.error.startswith("3 replies in a row had no usable action")


async def test_max_steps_and_last_step_note() -> None:
    agent = Agent(ScriptedModel([code("print(1)")] * 3), max_steps=3)
    result = await agent.run("q")
    assert result.termination is Termination.MAX_STEPS
    assert result.answer is None
    assert len(result.steps) == 3
    assert result.trajectory.final_answer is None
    assert LAST_STEP_NOTE in result.steps[2].model_call.messages[-1]["content"]
    assert LAST_STEP_NOTE not in result.steps[1].model_call.messages[-1]["content"]


async def test_episode_timeout_during_a_cell_keeps_the_step() -> None:
    completions = [code("print('before')"), code("import time\ntime.sleep(30)"), answer("'never'")]
    agent = Agent(ScriptedModel(completions), episode_timeout_s=4, cell_timeout_s=60)
    t0 = time.monotonic()
    result = await agent.run("q")
    assert result.termination is Termination.TIMEOUT
    assert len(result.steps) == 2
    cell = result.steps[1].cell
    assert cell is not None
    assert cell.status is CellStatus.TIMEOUT
    assert time.monotonic() - t0 < 30


async def test_episode_timeout_while_waiting_for_the_model() -> None:
    async def slow(messages: list[ChatMessage], settings: SamplingSettings) -> str:
        if len(messages) > 2:
            await asyncio.sleep(60)
        return code("print(1)")

    result = await Agent(FunctionModel(slow), episode_timeout_s=3).run("q")
    assert result.termination is Termination.TIMEOUT
    assert len(result.steps) == 1


async def test_cell_timeout_is_an_observation_not_the_end() -> None:
    completions = [code("while True: pass"), answer("'after'")]
    result = await Agent(ScriptedModel(completions), cell_timeout_s=1).run("q")
    assert result.termination is Termination.SUBMITTED
    cell = result.steps[0].cell
    assert cell is not None
    assert cell.status is CellStatus.TIMEOUT
    assert "timeout" in result.steps[0].observation


async def test_model_error_mid_episode_keeps_the_steps() -> None:
    calls = 0

    def respond(messages: list[ChatMessage], settings: SamplingSettings) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ModelError("the endpoint http://x/v1 answered 503 four times")
        return code("print('one')")

    result = await Agent(FunctionModel(respond)).run("q")
    assert result.termination is Termination.ERROR
    assert len(result.steps) == 1
    assert result.error is not None
    assert "503 four times" in result.error
    assert result.steps[0].observation == "<output>\none\n</output>"


async def test_token_budget_ends_the_episode_when_nothing_can_go() -> None:
    result = await Agent(ScriptedModel([code("print(1)")]), context_budget_tokens=50).run("q")
    assert result.termination is Termination.TOKEN_BUDGET
    assert result.steps == []
    assert result.error is not None
    assert "over the budget of 50" in result.error


async def test_hard_trimming_drops_old_steps_and_keeps_the_notepad() -> None:
    big = "print('y' * 1500)"
    completions = [
        code("notepad.add_facts(['kept fact'])"),
        code(big, "one"),
        code(big, "two"),
        code(big, "three"),
        code(big, "four"),
        answer("'done'"),
    ]
    probe = Agent(ScriptedModel([]))
    budget = len(probe.render_system_prompt()) // 4 + 1400
    result = await Agent(ScriptedModel(completions), context_budget_tokens=budget, max_steps=8).run("q")
    assert result.termination is Termination.SUBMITTED
    events = [e for s in result.steps for e in s.context_events]
    assert events
    assert all(e.kind == "trim" for e in events)
    dropped = [i for e in events for i in e.dropped_steps]
    assert dropped == list(range(len(dropped)))
    for step in result.steps:
        sent = step.model_call.messages
        assert sent[0]["role"] == "system"
        assert sent[1]["content"].startswith("Task: q")
        assert all(e.tokens_after <= budget for e in step.context_events)
    last = result.steps[-1].model_call.messages
    assert "were removed from this conversation" in last[1]["content"]
    assert last[-1]["content"].endswith("Facts:\n- kept fact")
    assert not any("notepad.add_facts" in m["content"] for m in last if m["role"] == "assistant")


async def test_summarize_policy_asks_the_model() -> None:
    summaries: list[str] = []
    steps = iter([code("print('z' * 1500)", f"s{i}") for i in range(4)] + [answer("'done'")])

    def respond(messages: list[ChatMessage], settings: SamplingSettings) -> str:
        if messages[0]["content"] == SUMMARIZE_SYSTEM_PROMPT:
            summaries.append(messages[1]["content"])
            return f"SUMMARY {len(summaries)}: printed z strings"
        return next(steps)

    probe = Agent(ScriptedModel([]))
    budget = len(probe.render_system_prompt()) // 4 + 1000
    agent = Agent(
        FunctionModel(respond), context_budget_tokens=budget, context_policy="summarize", max_steps=6
    )
    result = await agent.run("q")
    assert result.termination is Termination.SUBMITTED
    events = [e for s in result.steps for e in s.context_events]
    assert events
    assert events[0].kind == "summarize"
    assert events[0].detail == "SUMMARY 1: printed z strings"
    assert "Step 1:" in summaries[0]
    last = result.steps[-1].model_call.messages
    assert f"SUMMARY {len(summaries)}: printed z strings" in last[1]["content"]


async def test_notepad_is_rendered_at_the_end_and_survives_a_restart() -> None:
    completions = [
        code("notepad.add_todo(['find', 'submit'])\nnotepad.add_facts('x = 1')\nnotepad.mark_done(1)"),
        code("notepad.write_draft('about 1')\nimport os\nos._exit(1)"),
        code("print(repr(notepad))\nprint('x' in globals())"),
        answer("'1'"),
    ]
    result = await Agent(ScriptedModel(completions)).run("q")
    assert result.termination is Termination.SUBMITTED
    steps = result.steps
    assert steps[0].notepad is None
    assert steps[1].notepad == "Todo:\n1. [x] find\n2. [ ] submit\nFacts:\n- x = 1"
    assert steps[1].model_call.messages[-1]["content"].endswith(steps[1].notepad)
    crashed = steps[1].cell
    assert crashed is not None
    assert crashed.status is CellStatus.CRASHED
    assert crashed.state_lost
    # the kernel was restarted; the notepad came back with the draft written before the crash
    assert steps[2].notepad is not None
    assert steps[2].notepad.endswith("Draft:\nabout 1")
    assert steps[2].cell is not None
    assert steps[2].cell.ok
    assert "Draft:\nabout 1" in steps[2].observation


async def test_agent_names_cannot_be_redefined_and_reminder() -> None:
    completions = [
        code("notepad = 5\nprint(type(notepad).__name__)"),
        code("def submit_final_answer(a):\n    print('fake', a)\nsubmit_final_answer(17 * 23)"),
    ]
    agent = Agent(ScriptedModel(completions), reminder="Submit when you can.")
    result = await agent.run("q")
    assert result.termination is Termination.SUBMITTED
    assert result.answer == "391"
    first, second = result.steps
    assert "Notepad" in first.observation
    assert "line 1 was not run: notepad is provided by the agent" in first.observation
    assert "submit_final_answer is provided by the agent" in second.observation
    assert "fake" not in second.observation
    assert first.observation.endswith("</output>\nSubmit when you can.")
    assert second.cell is not None
    assert second.cell.code == completions[1].split("<code>\n")[1].split("\n</code>")[0] + "\n"


@dataclass
class Deps:
    prices: dict[str, float]
    calls: int = 0


@tool
def price(ctx: RunContext[Deps], item: str) -> float:
    """Price of an item in euros."""
    ctx.deps.calls += 1
    return ctx.deps.prices[item]


async def test_tools_get_the_run_context_deps() -> None:
    completions = [code("p = price('tea') + price('cake')\nprint(p)"), answer("p")]
    agent: Agent[Deps, str] = Agent(ScriptedModel(completions), tools=[price], deps_type=Deps)
    deps = Deps({"tea": 2.5, "cake": 4.0})
    result = await agent.run("Tea and cake?", deps=deps)
    assert result.answer == "6.5"
    assert deps.calls == 2
    cell = result.steps[0].cell
    assert cell is not None
    assert [(c.name, c.args, c.result) for c in cell.tool_calls] == [
        ("price", ["tea"], 2.5),
        ("price", ["cake"], 4.0),
    ]
    assert "def price(item: str) -> float" in result.trajectory.system_prompt


async def test_tool_error_reaches_the_model() -> None:
    completions = [code("price('caviar')"), answer("'unknown'")]
    agent: Agent[Deps, str] = Agent(ScriptedModel(completions), tools=[price])
    result = await agent.run("q", deps=Deps({}))
    cell = result.steps[0].cell
    assert cell is not None
    assert cell.status is CellStatus.ERROR
    assert "caviar" in result.steps[0].observation
    assert cell.tool_calls[0].error is not None


class Comparison(BaseModel):
    larger: str
    ratio: float


async def test_typed_answer_with_a_validation_retry() -> None:
    completions = [
        answer("{'larger': 'Lyon'}"),
        answer("{'larger': 'Lyon', 'ratio': '1.5'}"),
    ]
    agent = Agent(ScriptedModel(completions), output_type=Comparison)
    result: RunResult[Comparison] = await agent.run("Compare.")
    assert result.termination is Termination.SUBMITTED
    assert result.answer == Comparison(larger="Lyon", ratio=1.5)
    assert result.trajectory.final_answer == {"larger": "Lyon", "ratio": 1.5}
    failed = result.steps[0]
    assert failed.cell is not None
    assert failed.cell.status is CellStatus.ERROR
    assert "ratio" in failed.observation
    assert "class Comparison(TypedDict)" in result.trajectory.system_prompt


async def test_prefill_is_parsed_with_the_completion() -> None:
    completions = ["print(6 * 7)\n```", "submit_final_answer(42)\n```"]
    model = ScriptedModel(completions)
    agent = Agent(model, action_format="markdown", prefill="```python\n")
    result = await agent.run("q")
    assert result.answer == "42"
    first = result.steps[0]
    assert first.model_call.prefill == "```python\n"
    assert first.model_call.completion == completions[0]
    assert first.action.code == "print(6 * 7)\n"
    assert first.observation == "Output:\n```\n42\n```"
    assert result.steps[1].model_call.messages[2]["content"] == "```python\nprint(6 * 7)\n```"
    assert first.assistant_text == "```python\nprint(6 * 7)\n```"


class SigningParser(XmlActionParser):
    """An action format the exporters cannot know: it closes every reply its own way."""

    name = "signing"

    def close(self, text: str, *, truncated: bool = False) -> str:
        return super().close(text, truncated=truncated) + "\n-- signed"


async def test_export_repeats_the_assistant_turns_a_custom_parser_built() -> None:
    agent = Agent(
        ScriptedModel(["<think>a</think><code>print(1)", answer("1")]), action_format=SigningParser()
    )
    result = await agent.run("q")
    assert result.answer == "1"
    first, second = result.steps
    assert first.assistant_text == "<think>a</think><code>print(1)</code>\n-- signed"
    assert to_openai_messages(result.trajectory)[:4] == second.model_call.messages


async def test_iter_and_callbacks() -> None:
    completions = [code("print('a')"), code("print('b')"), answer("'c'")]
    agent = Agent(ScriptedModel(completions))
    agent_run: AgentRun[str] = agent.iter("q")
    indices = [step.index async for step in agent_run]
    assert indices == [0, 1, 2]
    assert agent_run.result is not None
    assert agent_run.result.answer == "c"

    got: list[int] = []

    async def on_step(step: Step) -> None:
        got.append(step.index)

    again = await agent.with_model(ScriptedModel(completions)).run("q", on_step=on_step)
    assert got == [0, 1, 2]
    assert again.answer == "c"


async def test_leaving_iter_early_stops_the_episode() -> None:
    agent = Agent(ScriptedModel([code("print('a')"), code("print('b')"), answer("'c'")]))
    async with agent.iter("q") as agent_run:
        async for step in agent_run:
            assert step.index == 0
            break
    assert agent_run.result is not None
    assert agent_run.result.termination is Termination.CANCELLED
    assert len(agent_run.result.steps) == 1


async def test_cancellation_shuts_the_kernel_down_and_keeps_the_steps() -> None:
    completions = [code("print('started')"), code("import time\ntime.sleep(60)")]
    agent = Agent(ScriptedModel(completions), cell_timeout_s=120)
    agent_run = agent.iter("q")
    kernel_processes: list[psutil.Process] = []

    async def consume() -> None:
        async for _step in agent_run:  # the kernel (under bwrap: bwrap, its init and the kernel)
            kernel_processes.extend(psutil.Process().children(recursive=True))

    with anyio.move_on_after(5):
        await consume()
    result = agent_run.result
    assert result is not None
    assert result.termination is Termination.CANCELLED
    assert len(result.steps) == 1
    assert kernel_processes
    _gone, alive = psutil.wait_procs(kernel_processes, timeout=10)
    assert alive == []


async def test_a_given_kernel_is_used_and_left_running() -> None:
    async with Kernel() as kernel:
        await kernel.execute("secret = 41")
        result = await Agent(ScriptedModel([answer("secret + 1")])).run("q", kernel=kernel)
        assert result.answer == "42"
        assert kernel.alive
        cell = await kernel.execute("print(secret)")
        assert cell.outputs[0].model_dump()["text"] == "41\n"


def test_run_sync_outside_and_inside_a_loop() -> None:
    agent = Agent(ScriptedModel([answer("'sync'")]))
    assert agent.run_sync("q").answer == "sync"

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="inside a running event loop"):
            agent.run_sync("q")

    asyncio.run(inside())


def test_reserved_tool_names() -> None:
    def notepad(x: str) -> str:
        return x

    with pytest.raises(ToolDefinitionError, match="reserved"):
        Agent(ScriptedModel([]), tools=[notepad])


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="max_steps must be at least 1"):
        Agent(ScriptedModel([]), max_steps=0)
    with pytest.raises(ConfigError, match="Unknown action format"):
        Agent(ScriptedModel([]), action_format="json")  # type: ignore[arg-type]
