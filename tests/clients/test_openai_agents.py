"""The `openai-agents` SDK against a real `hearth serve` with the bundled model: an agent with one
function tool completes a turn that calls it, with the SDK's chat-completions model and with its
default, the Responses model. Tracing (which would send spans to OpenAI) is off."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from agents import (
    Agent,
    FunctionTool,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ToolCallItem, ToolCallOutputItem
from agents.models.interface import Model
from openai import AsyncOpenAI

from support.hearth_server import HearthServer

MODEL = "gemma-3-270m"


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)
    yield
    set_tracing_disabled(False)


def weather_tool(calls: list[str]) -> FunctionTool:
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}."

    return get_weather


@asynccontextmanager
async def client(server: HearthServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0
    ) as openai_client:
        yield openai_client


async def run_agent(
    server: HearthServer, model_class: Callable[..., Model]
) -> tuple[list[str], object]:
    """One run of an agent that must call its tool; what the tool was called with, and the run."""
    async with client(server) as openai_client:
        return await _run(model_class(model=MODEL, openai_client=openai_client))


async def _run(model: Model) -> tuple[list[str], object]:
    calls: list[str] = []
    agent = Agent(
        name="forecaster",
        instructions="Answer questions about the weather with the get_weather tool.",
        tools=[weather_tool(calls)],
        model=model,
        model_settings=ModelSettings(tool_choice="required", max_tokens=64, temperature=0),
        # The tool's answer is the run's answer: the turn that calls the tool completes it.
        tool_use_behavior="stop_on_first_tool",
    )
    result = await Runner.run(
        agent,
        "What is the weather in Paris?",
        max_turns=2,
        run_config=RunConfig(tracing_disabled=True),
    )
    return calls, result


def assert_the_tool_was_called(calls: list[str], result: object) -> None:
    assert len(calls) >= 1 and all(isinstance(city, str) for city in calls)
    items = result.new_items  # type: ignore[attr-defined]
    called = [item for item in items if isinstance(item, ToolCallItem)]
    outputs = [item for item in items if isinstance(item, ToolCallOutputItem)]
    assert called and outputs, items
    raw = called[0].raw_item
    arguments = raw.arguments if hasattr(raw, "arguments") else raw["arguments"]
    assert set(json.loads(arguments)) == {"city"}  # the tool's schema: one string, `city`
    assert result.final_output == f"Sunny in {calls[0]}."  # type: ignore[attr-defined]


async def test_chat_completions_model_calls_the_tool(hearth: HearthServer) -> None:
    calls, result = await run_agent(hearth, OpenAIChatCompletionsModel)
    assert_the_tool_was_called(calls, result)


async def test_responses_model_calls_the_tool(hearth: HearthServer) -> None:
    """The SDK's default model speaks the Responses API (/v1/responses)."""
    calls, result = await run_agent(hearth, OpenAIResponsesModel)
    assert_the_tool_was_called(calls, result)
