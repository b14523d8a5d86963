"""Task-aware routes (routing/rules.py): each kind of rule sends a request where the settings
say, through a real `hearth serve` with keys on, in front of a scripted upstream; a rule whose
target cannot take the request is passed over; the reason shows in a header and a metric; and
hostile requests (huge prompts, regular-expression bombs, odd headers) are answered at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearth.config import Settings
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.remote import add_remote_deployments, add_routes
from hearth.errors import ConfigError
from hearth.routing.rules import build_rule_book
from hearth.settings_layers import load_settings
from observability.test_tracing import Collector
from routing.test_gateway import scrape
from support.access import ADMIN_KEY, admin, gateway_config
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for

DEPLOYMENTS = {
    name: ""
    for name in (
        "general", "toolsbox", "visionbox", "schemabox", "bombbox", "longbox", "sysbox",
        "coder", "bothbox", "teambox", "keybox", "pa", "pb",
    )
}  # fmt: skip
DEPLOYMENTS["embedonly"] = "capabilities: [embeddings]"

ROUTES = r"""
cache: {enabled: true, ttl: 60}
routes:
  pair: {deployments: [pa, pb]}
  smart:
    deployments: [general]
    rules:
      - {tools: true, to: embedonly}             # 1: cannot chat: passed over
      - {tools: true, to: toolsbox}              # 2
      - {images: true, to: gemma-3-270m}         # 3: a local model without vision: passed over
      - {images: true, to: visionbox}            # 4
      - {json_schema: true, to: schemabox}       # 5
      - {message_matches: '^(a|aa)+$', to: bombbox}   # 6: backtracking would never end
      - {prompt_tokens_over: 1000, to: longbox}  # 7
      - {system_matches: '(?i)^you are a (senior )?programmer', to: sysbox}  # 8
      - {message_matches: '\bimport\s+\w+', to: coder}   # 9
      - {header: {x-task: both}, team: red, tools: false, to: bothbox}  # 10
      - {header: {X-Task: [code, coding]}, to: coder}    # 11
      - {header: {x-task: fallback}, to: pair}   # 12: a route of its own
      - {team: red, to: teambox}                 # 13
      - {key: alice, to: keybox}                 # 14
"""

TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object"}},
}


@pytest.fixture(scope="module")
def gateway(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    config = tmp_path_factory.mktemp("rules") / "hearth.yaml"
    db = tmp_path_factory.mktemp("rules-db") / "keys.db"
    gateway_config(config, upstream, f"sqlite:///{db}", DEPLOYMENTS, ROUTES)
    return start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})


@pytest.fixture(scope="module")
def keys(gateway: HearthServer) -> dict[str, str]:
    made = {}
    for name, team in (("bob", None), ("alice", None), ("carol", "red")):
        created = admin(gateway, "POST", "/admin/keys", json={"name": name, "team": team})
        assert created.status_code == 200, created.text
        made[name] = created.json()["key"]
    return made


def ask(
    gateway: HearthServer,
    key: str,
    text: str = "Hi",
    headers: dict[str, Any] | None = None,
    **fields: Any,
) -> httpx.Response:
    messages = fields.pop("messages", [{"role": "user", "content": text}])
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": "smart", "messages": messages, **fields},
        headers={"authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
    )


def routed(answer: httpx.Response) -> tuple[str, str]:
    assert answer.status_code == 200, answer.text
    return answer.headers["x-hearth-route-reason"], answer.headers["x-hearth-deployment"]


def test_a_request_no_rule_holds_for_goes_by_the_strategy(
    gateway: HearthServer, keys: dict[str, str], upstream: ScriptedUpstream
) -> None:
    before = upstream.hits("general")
    answer = ask(gateway, keys["bob"])
    assert routed(answer) == ("strategy:priority", "general")
    assert answer.json()["choices"][0]["message"]["content"] == "general says hi"
    assert upstream.hits("general") == before + 1


def test_tools_go_to_the_first_target_that_can_chat(
    gateway: HearthServer, keys: dict[str, str], upstream: ScriptedUpstream
) -> None:
    before = upstream.hits("toolsbox")
    answer = ask(gateway, keys["bob"], tools=[TOOL])
    assert routed(answer) == ("rule:2 tools", "toolsbox")
    assert answer.json()["model"] == "smart"  # the name the client asked for
    assert upstream.hits("toolsbox") == before + 1
    assert upstream.received["toolsbox"][-1].body["tools"] == [TOOL]
    assert upstream.hits("embedonly") == 0


def test_images_skip_a_local_model_without_vision(
    gateway: HearthServer, keys: dict[str, str]
) -> None:
    content = [{"type": "text", "text": "What is this?"}, IMAGE]
    answer = ask(gateway, keys["bob"], messages=[{"role": "user", "content": content}])
    assert routed(answer) == ("rule:4 images", "visionbox")


def test_a_json_schema_goes_to_its_deployment(gateway: HearthServer, keys: dict[str, str]) -> None:
    assert routed(ask(gateway, keys["bob"], response_format=SCHEMA)) == (
        "rule:5 json_schema",
        "schemabox",
    )
    # json_object is not a schema
    plain_json = ask(gateway, keys["bob"], response_format={"type": "json_object"})
    assert routed(plain_json) == ("strategy:priority", "general")


def test_a_long_prompt_goes_to_the_long_context_deployment(
    gateway: HearthServer, keys: dict[str, str]
) -> None:
    assert routed(ask(gateway, keys["bob"], "word " * 1200)) == ("rule:7 tokens", "longbox")
    assert routed(ask(gateway, keys["bob"], "word " * 500)) == ("strategy:priority", "general")


def test_the_system_prompt_and_the_messages_are_matched(
    gateway: HearthServer, keys: dict[str, str]
) -> None:
    system = [
        {"role": "system", "content": "You are a senior programmer."},
        {"role": "user", "content": "Hi"},
    ]
    assert routed(ask(gateway, keys["bob"], messages=system)) == ("rule:8 system", "sysbox")
    # The same words in a user message are not the system prompt.
    not_system = [{"role": "user", "content": "You are a programmer"}]
    assert routed(ask(gateway, keys["bob"], messages=not_system))[0] == "strategy:priority"
    code = "Why does this fail?\nimport numpy\nprint(numpy.zeros(3))"
    assert routed(ask(gateway, keys["bob"], code)) == ("rule:9 message", "coder")
    parts = [{"role": "user", "content": [{"type": "text", "text": "import os, please"}]}]
    assert routed(ask(gateway, keys["bob"], messages=parts)) == ("rule:9 message", "coder")
    assert routed(ask(gateway, keys["bob"], "aaaa")) == ("rule:6 message", "bombbox")


def test_headers_keys_and_teams_choose(
    gateway: HearthServer, keys: dict[str, str], upstream: ScriptedUpstream
) -> None:
    code = {"x-task": "coding"}
    assert routed(ask(gateway, keys["bob"], headers=code)) == ("rule:11 header", "coder")
    assert routed(ask(gateway, keys["bob"], headers={"x-task": "Code"}))[0] == "strategy:priority"
    assert routed(ask(gateway, keys["carol"])) == ("rule:13 team", "teambox")
    assert routed(ask(gateway, keys["alice"])) == ("rule:14 key", "keybox")
    # Every condition of a rule must hold.
    both = {"x-task": "both"}
    assert routed(ask(gateway, keys["carol"], headers=both)) == (
        "rule:10 no-tools team header",
        "bothbox",
    )
    assert routed(ask(gateway, keys["bob"], headers=both))[0] == "strategy:priority"
    assert routed(ask(gateway, keys["carol"], headers=both, tools=[TOOL]))[0] == "rule:2 tools"
    # A route as a target: its own strategy and fallback.
    upstream.script("pa", "status:500")
    answer = ask(gateway, keys["bob"], headers={"x-task": "fallback"})
    assert routed(answer) == ("rule:12 header", "pb")
    assert answer.json()["model"] == "smart"
    # An error names the rule too.
    upstream.script("pa", "status:500")
    upstream.script("pb", "status:500")
    failed = ask(gateway, keys["bob"], headers={"x-task": "fallback"})
    assert failed.status_code == 503
    assert failed.headers["x-hearth-route-reason"] == "rule:12 header"


def test_the_cache_keeps_a_rules_choice_apart(gateway: HearthServer, keys: dict[str, str]) -> None:
    code = {"x-task": "code"}
    first = ask(gateway, keys["bob"], "cache me", headers=code, temperature=0)
    assert routed(first) == ("rule:11 header", "coder")
    assert first.headers["x-hearth-cache"] == "miss"
    # The same request to the target under its own name is not the route's cached answer.
    direct = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={
            "model": "coder",
            "messages": [{"role": "user", "content": "cache me"}],
            "temperature": 0,
        },
        headers={"authorization": f"Bearer {keys['bob']}"},
        timeout=30,
    )
    assert direct.headers["x-hearth-cache"] == "miss"
    assert direct.json()["model"] == "coder"
    again = ask(gateway, keys["bob"], "cache me", headers=code, temperature=0)
    assert again.headers["x-hearth-cache"] == "hit"
    assert again.json()["model"] == "smart"
    # Without the header the rule does not hold: another answer, not the cached one.
    other = ask(gateway, keys["bob"], "cache me", temperature=0)
    assert routed(other) == ("strategy:priority", "general")
    assert other.headers["x-hearth-cache"] == "miss"


def test_streams_carry_the_reason_too(gateway: HearthServer, keys: dict[str, str]) -> None:
    answer = ask(gateway, keys["bob"], tools=[TOOL], stream=True)
    assert routed(answer) == ("rule:2 tools", "toolsbox")
    assert answer.text.rstrip().endswith("data: [DONE]")


def test_decisions_are_counted_by_route_and_reason(
    gateway: HearthServer, keys: dict[str, str]
) -> None:
    labels = {"model": "smart", "reason": "rule:2 tools"}
    before = scrape(gateway, "hearth_route_decisions_total", **labels)
    ask(gateway, keys["bob"], tools=[TOOL])
    assert scrape(gateway, "hearth_route_decisions_total", **labels) == before + 1
    plain = {"model": "pair", "reason": "strategy:priority"}
    assert scrape(gateway, "hearth_route_decisions_total", **plain) == 0  # no rules, no count


def test_hostile_requests_are_answered_at_once(gateway: HearthServer, keys: dict[str, str]) -> None:
    # A regular-expression bomb for a backtracking engine: '^(a|aa)+$' against a^n followed
    # by a character that fails it takes exponential time there, and linear time in RE2.
    started = time.monotonic()
    assert routed(ask(gateway, keys["bob"], "a" * 3000 + "!")) == (
        "strategy:priority",
        "general",
    )
    # A prompt of 6 MB: scanned within MAX_SCAN_CHARS, its tokens estimated.
    huge = ask(gateway, keys["bob"], "import this " * 500_000)
    assert routed(huge) == ("rule:7 tokens", "longbox")
    # Odd headers: a long value, one that is not ASCII, the header twice.
    odd = [
        {"x-task": "code" * 2000},
        {"x-task": "cod\xe9".encode("latin-1")},
    ]
    reasons = [routed(ask(gateway, keys["bob"], headers=h))[0] for h in odd]
    assert reasons == ["strategy:priority", "strategy:priority"]
    twice = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": "smart", "messages": [{"role": "user", "content": "Hi"}]},
        headers=[("authorization", f"Bearer {keys['bob']}"), ("x-task", "x"), ("x-task", "y")],
        timeout=30,
    )
    assert routed(twice)[0] == "strategy:priority"
    assert time.monotonic() - started < 20  # generous: a backtracking regex would never end


# The settings: a bad rule is a config error naming the route and the rule.


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hearth.yaml"
    path.write_text(text)
    return path


ROUTE_HEAD = "deployments:\n  a: {url: 'http://127.0.0.1:9/v1'}\nroutes:\n  smart:\n"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{message_matches: '(a)\\1', to: a}", r"routes\.smart\.rules\.0\.message_matches: .*RE2"),
        ("{system_matches: '(?<=x)y', to: a}", r"routes\.smart\.rules\.0\.system_matches"),
        ("{tool: true, to: a}", r"routes\.smart\.rules\.0\.tool: Extra inputs"),
        ("{to: a}", r"routes\.smart\.rules\.0: .*at least one condition"),
        ("{class: code, to: a}", r"routes\.smart: .*rules\.0\.class: 'code' needs a 'classifier'"),
        ("{header: {'bad name': x}, to: a}", r"routes\.smart\.rules\.0\.header: .*header name"),
        ("{prompt_tokens_over: -1, to: a}", r"routes\.smart\.rules\.0\.prompt_tokens_over"),
    ],
)
def test_a_bad_rule_is_a_config_error(tmp_path: Path, rule: str, expected: str) -> None:
    config = ROUTE_HEAD + f"    deployments: [a]\n    rules:\n      - {rule}\n"
    with pytest.raises(ConfigError, match=expected):
        load_settings(write(tmp_path, config), environ={})


def catalogue_of(settings: Settings) -> Catalogue:
    catalogue = Catalogue()
    add_remote_deployments(catalogue, settings)
    add_routes(catalogue, settings)
    return catalogue


def test_an_unknown_target_or_classifier_model_is_a_config_error(tmp_path: Path) -> None:
    config = ROUTE_HEAD + "    deployments: [a]\n    rules:\n      - {tools: true, to: nowhere}\n"
    settings = load_settings(write(tmp_path, config), environ={})
    with pytest.raises(ConfigError, match=r"routes\.smart\.rules\.0\.to: 'nowhere' is not"):
        build_rule_book(settings.routes, catalogue_of(settings))
    classifier = (
        "    deployments: [a]\n"
        "    classifier: {model: a, classes: {code: [write code]}}\n"
        "    rules: [{class: code, to: a}]\n"
    )
    settings = load_settings(write(tmp_path, ROUTE_HEAD + classifier), environ={})
    with pytest.raises(ConfigError, match=r"classifier\.model: 'a' does not serve embeddings"):
        build_rule_book(settings.routes, catalogue_of(settings))


def test_hearth_serve_refuses_to_start_with_a_bad_rule(
    start_hearth: StartHearth, tmp_path: Path
) -> None:
    config = "preload: []\nno_auth: true\n" + ROUTE_HEAD
    config += "    deployments: [a]\n    rules:\n      - {header: {x-task: code}, to: nowhere}\n"
    server = start_hearth("--config", str(write(tmp_path, config)), ready=False)
    assert server.proc.wait(timeout=60) != 0
    assert "routes.smart.rules.0.to: 'nowhere' is not a model" in server.log()


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_the_route_span_carries_the_reason(
    start_hearth: StartHearth, collector: Collector, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    config = (
        "preload: []\n"
        f"tracing: {{enabled: true, endpoint: '{collector.url}', service_name: hearth-test}}\n"
        f"deployments:\n  spanned: {{url: '{upstream.url('spanned')}'}}\n"
        f"  spantools: {{url: '{upstream.url('spantools')}'}}\n"
        "routes:\n  traced-rules:\n    deployments: [spanned]\n"
        "    rules: [{tools: true, to: spantools}]\n"
    )
    server = start_hearth(
        "--config", str(write(tmp_path, config)), env={"OTEL_BSP_SCHEDULE_DELAY": "100"}
    )
    body = {"model": "traced-rules", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)
    assert routed(answer) == ("strategy:priority", "spanned")
    answer = httpx.post(
        f"{server.base_url}/v1/chat/completions", json={**body, "tools": [TOOL]}, timeout=30
    )
    assert routed(answer) == ("rule:1 tools", "spantools")

    def reasons() -> list[str]:
        return [
            attribute.value.string_value
            for span in collector.spans
            if span.name == "route"  # type: ignore[attr-defined]
            for attribute in span.attributes  # type: ignore[attr-defined]
            if attribute.key == "hearth.route.reason"
        ]

    wait_for(lambda: len(reasons()) == 2)
    assert sorted(reasons()) == ["rule:1 tools", "strategy:priority"]
