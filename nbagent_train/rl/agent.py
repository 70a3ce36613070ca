"""The agent an RL run (or its evaluation) gives its episodes, sampling from the policy endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbagent.agent import Agent
    from nbagent.environments import Environment
    from nbagent_train.config.rl import RLConfig
    from nbagent_train.serving.endpoint import PolicyEndpoint

_AGENT_SETTINGS = (
    "max_steps",
    "episode_timeout_s",
    "cell_timeout_s",
    "context_budget_tokens",
    "context_policy",
    "action_format",
    "prefill",
    "system_prompt",
    "instructions",
    "max_format_errors",
    "observation_chars",
)
"""`AgentSection` fields that are `Agent` keyword arguments of the same name."""


def build_agent(config: RLConfig, env: Environment, endpoint: PolicyEndpoint) -> Agent[Any, Any]:
    """The recipe's agent for `env`, sampling from the endpoint's current model. Precedence is
    `nbagent.rollout.agent_for_environment`'s: the recipe's defaults, then the environment's
    `agent_overrides`, then the agent settings the recipe sets explicitly."""
    from nbagent.kernel import KernelConfig
    from nbagent.models.openai import OpenAIModel
    from nbagent.rollout import agent_for_environment
    from nbagent.trajectory import SamplingSettings

    a = config.agent
    settings = {name: getattr(a, name) for name in _AGENT_SETTINGS}
    chosen = {name: value for name, value in settings.items() if name in a.model_fields_set}
    sampling = SamplingSettings(temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens)
    tokenizer = config.resolved_model() if a.context_budget_tokens is not None else None
    model = OpenAIModel(endpoint.model_name, base_url=endpoint.base_url, tokenizer=tokenizer)
    kernel = KernelConfig(sandbox=True, allow_network=a.allow_network) if a.sandbox else None
    tools = []
    if a.mcp or a.mcp_url:
        from nbagent.tools.mcp import mcp_servers, mcp_tools

        tools = mcp_tools(*mcp_servers(a.mcp, a.mcp_url, a.mcp_headers))
    return agent_for_environment(
        env, model, chosen=chosen, sampling=sampling, kernel_config=kernel, tools=tools, **settings
    )
