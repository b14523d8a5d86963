"""A route's semantic classifier (routing/classifier.py) through a real `hearth serve` that serves
the bundled all-minilm-l6-v2 with llama-server: paraphrases of each class's examples go to that
class's deployment (a scripted upstream), text like no example goes by the strategy, the
examples are embedded once (and again after a reload), and a classifier whose embeddings model
cannot answer never fails a request."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from routing.test_gateway import scrape
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

CLASSES = {
    "code": [
        "Write a Python function that reverses a string.",
        "Why does my JavaScript code throw an undefined error?",
        "How do I sort a list of dictionaries by a key in Python?",
    ],
    "cooking": [
        "Give me a recipe for chocolate chip cookies.",
        "How long should I boil an egg for a soft yolk?",
        "What spices go well with roast lamb?",
    ],
    "travel": [
        "What should I pack for a week in Iceland?",
        "Which neighbourhoods in Lisbon are best to stay in?",
        "How do I get from the airport to the city centre in Tokyo?",
    ],
}
TARGETS = {"code": (1, "coder"), "cooking": (2, "chef"), "travel": (3, "guide")}
EMBEDDINGS = "all-minilm-l6-v2"


def config_text(upstream: ScriptedUpstream) -> str:
    lines = [
        "preload: []",
        "routing: {retries: 0, health_check_interval: 0}",
        "deployments:",
        *(
            f"  {name}: {{url: '{upstream.url(name)}'}}"
            for name in ("general", "coder", "chef", "guide")
        ),
        # Nothing listens on the discard port: its embeddings never come.
        "  deadembed: {url: 'http://127.0.0.1:9/v1', capabilities: [embeddings],"
        " timeouts: {connect: 0.5}}",
        "routes:",
        "  helper:",
        "    deployments: [general]",
        "    classifier:",
        f"      model: {EMBEDDINGS}",
        "      min_similarity: 0.25",
        "      classes:",
    ]
    for name, examples in CLASSES.items():
        lines.append(f"        {name}:")
        lines += [f"          - {example!r}" for example in examples]
    lines.append("    rules:")
    lines += [f"      - {{class: {c}, to: {t}}}" for c, (_, t) in TARGETS.items()]
    lines += [
        "  blind:",
        "    deployments: [general]",
        "    classifier: {model: deadembed, classes: {code: ['Write a Python function.']}}",
        "    rules: [{class: code, to: coder}]",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def config(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = tmp_path_factory.mktemp("classifier") / "hearth.yaml"
    path.write_text(config_text(upstream))
    return path


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, config: Path) -> HearthServer:
    return start_hearth("--config", str(config))


def ask(server: HearthServer, *texts: str, model: str = "helper") -> httpx.Response:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(texts)]
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": model, "messages": messages},
        timeout=120,
    )


def routed(answer: httpx.Response) -> tuple[str, str]:
    assert answer.status_code == 200, answer.text
    return answer.headers["x-hearth-route-reason"], answer.headers["x-hearth-deployment"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Can you help me write a function in Python to reverse a list?", "code"),
        ("My JS script crashes with 'undefined is not a function', what is wrong?", "code"),
        ("How can I order an array of objects by one of their fields in JavaScript?", "code"),
        ("What's a good recipe for oatmeal cookies?", "cooking"),
        ("How many minutes do I need to boil eggs?", "cooking"),
        ("Which herbs pair nicely with roasted chicken?", "cooking"),
        ("What clothes do I need for a trip to Norway in winter?", "travel"),
        ("Where is a good area to book a hotel in Barcelona?", "travel"),
        ("How can I get from Heathrow airport into central London?", "travel"),
    ],
)
def test_paraphrases_go_to_their_class(
    server: HearthServer, upstream: ScriptedUpstream, text: str, expected: str
) -> None:
    number, deployment = TARGETS[expected]
    before = upstream.hits(deployment)
    answer = ask(server, text)
    assert routed(answer) == (f"rule:{number} class:{expected}", deployment)
    assert answer.json()["choices"][0]["message"]["content"] == f"{deployment} says hi"
    assert upstream.hits(deployment) == before + 1


@pytest.mark.parametrize(
    "text",
    [
        "The quarterly board meeting has been moved to Thursday.",
        "My cat keeps sleeping on the keyboard.",
        "Tell me about the French revolution.",
    ],
)
def test_text_like_no_example_goes_by_the_strategy(server: HearthServer, text: str) -> None:
    assert routed(ask(server, text)) == ("strategy:priority", "general")


def test_the_last_user_message_is_classified(server: HearthServer) -> None:
    cooking = "Which herbs pair nicely with roasted chicken?"
    code = "Can you help me write a function in Python to reverse a list?"
    assert routed(ask(server, cooking, "Thyme.", code)) == ("rule:1 class:code", "coder")
    assert routed(ask(server, code, "Use slicing.", cooking)) == ("rule:2 class:cooking", "chef")


def test_examples_are_embedded_once_and_again_after_a_reload(
    server: HearthServer, config: Path
) -> None:
    labels = {"deployment": EMBEDDINGS, "result": "ok"}

    def embeddings_calls() -> float:
        return scrape(server, "hearth_upstream_attempts_total", **labels)

    ask(server, "How many minutes do I need to boil eggs?")  # examples embedded by now
    before = embeddings_calls()
    ask(server, "Where is a good area to book a hotel in Barcelona?")
    assert embeddings_calls() == before + 1  # the message only
    reloaded = httpx.post(f"{server.base_url}/admin/reload", timeout=60)
    assert reloaded.status_code == 200, reloaded.text
    ask(server, "Where is a good area to book a hotel in Barcelona?")
    assert embeddings_calls() == before + 3  # the examples again, then the message
    ask(server, "Where is a good area to book a hotel in Barcelona?")
    assert embeddings_calls() == before + 4


def test_a_classifier_that_cannot_embed_never_fails_a_request(server: HearthServer) -> None:
    for _ in range(2):
        assert routed(ask(server, "Write a Python function.", model="blind")) == (
            "strategy:priority",
            "general",
        )


def test_hostile_text_is_classified_by_its_start_only(server: HearthServer) -> None:
    # 2 MB: only its first characters are embedded (the model reads 256 word pieces).
    long = "Give me a recipe for chocolate chip cookies. " + "blah " * 400_000
    assert routed(ask(server, long)) == ("rule:2 class:cooking", "chef")
    # Characters that are a word piece each, and more than the model's context of them.
    odd = "\u2603\U0001f600\u00e9\u4e2d" * 2000
    assert routed(ask(server, odd))[0] in ("strategy:priority", "rule:1 class:code")
    assert routed(ask(server, "   "))[0] == "strategy:priority"  # nothing to classify
