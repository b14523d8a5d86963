"""The Ollama prompt template subset: what it renders, what it refuses, and that hostile templates
cost linear time (the regular expression it replaces took seconds on `{{` and 1,000 spaces)."""

from __future__ import annotations

import contextlib
import time

import pytest

from hearth.api.ollama.template import (
    MAX_DEPTH,
    MAX_OUTPUT_CHARS,
    MAX_TEMPLATE_CHARS,
    render_template,
)
from hearth.errors import InvalidRequest


def test_templates_render_their_common_subset() -> None:
    template = (
        "{{ if .System }}<sys>{{ .System }}</sys>\n{{ end }}<user>{{ .Prompt }}</user>\n"
        "<model>{{ .Response }}"
    )
    assert render_template(template, "Be brief.", "Hi") == (
        "<sys>Be brief.</sys>\n<user>Hi</user>\n<model>"
    )
    assert render_template(template, "", "Hi") == "<user>Hi</user>\n<model>"
    assert render_template("A {{- .Prompt -}} B", "", "x") == "AxB"
    assert render_template("A\n\t {{- .Prompt }} \nB", "", "x") == "Ax \nB"
    assert render_template("{{.Prompt}}", "", "x") == "x"
    assert render_template("no actions at all", "", "x") == "no actions at all"
    assert render_template("{{ if .System }}s{{ else }}none{{ end }}", "", "") == "none"
    assert render_template("{{ if .System }}s{{ else }}none{{ end }}", "y", "") == "s"


def test_nested_ifs_render_only_the_branches_taken() -> None:
    template = (
        "{{ if .System }}S{{ if .Prompt }}P{{ else }}p{{ end }}{{ else }}"
        "s{{ if .Prompt }}P{{ else }}p{{ end }}{{ end }}"
    )
    assert render_template(template, "x", "y") == "SP"
    assert render_template(template, "x", "") == "Sp"
    assert render_template(template, "", "y") == "sP"
    assert render_template(template, "", "") == "sp"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ range .Messages }}{{ end }}", r"range \.Messages"),
        ("{{ .Prompt | upper }}", "does not support"),
        ("{{ if .System }}x", "no 'end'"),
        ("x{{ end }}", "'end' has no 'if'"),
        ("x{{ else }}", "'else' has no 'if'"),
        ("a {{ .Prompt", "'{{' at character 2 has no closing '}}'"),
        ("{{" + " " * 4000, "no closing"),
    ],
)
def test_invalid_templates_are_refused_naming_the_problem(template: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem) as caught:
        render_template(template, "s", "p")
    assert caught.value.status_code == 400
    assert caught.value.param == "template"


def test_limits_are_named() -> None:
    with pytest.raises(InvalidRequest, match=f"longer than {MAX_TEMPLATE_CHARS} characters"):
        render_template("x" * (MAX_TEMPLATE_CHARS + 1), "", "")
    deep = "{{ if .Prompt }}" * (MAX_DEPTH + 1) + "{{ end }}" * (MAX_DEPTH + 1)
    with pytest.raises(InvalidRequest, match=f"deeper than {MAX_DEPTH}"):
        render_template(deep, "", "p")
    many = "{{ .Prompt }}" * 100
    with pytest.raises(InvalidRequest, match="rendered prompt is longer"):
        render_template(many, "", "p" * (MAX_OUTPUT_CHARS // 50))


HOSTILE = [
    "{{" + " " * (MAX_TEMPLATE_CHARS - 2),
    "{{" * (MAX_TEMPLATE_CHARS // 2),
    "{{ }}" * (MAX_TEMPLATE_CHARS // 5 - 1) + "{{",
    "{{-" + "-" * (MAX_TEMPLATE_CHARS - 3),
    "{{ .Prompt -}}" + " " * (MAX_TEMPLATE_CHARS - 14),
    "{{ .Prompt -}}" * (MAX_TEMPLATE_CHARS // 14),
    "{{ if .Prompt }}" * (MAX_TEMPLATE_CHARS // 16),
    "{{ if .System }}{{ else }}{{ end }}" * (MAX_TEMPLATE_CHARS // 35),
    "}}" * (MAX_TEMPLATE_CHARS // 2),
]


@pytest.mark.parametrize("template", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_templates_take_linear_time(template: str) -> None:
    started = time.perf_counter()
    with contextlib.suppress(InvalidRequest):
        render_template(template, "s", "p" * 1000)
    # Linear work on 64 KiB is well under a millisecond per KiB; the old regex took seconds
    # on 1 KiB. The bound is loose for a busy machine, not a benchmark.
    assert time.perf_counter() - started < 0.5
