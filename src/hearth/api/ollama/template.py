"""The small subset of Ollama's Go prompt templates that `/api/generate` renders, with a scanner
that reads each character a bounded number of times (no regular expression, no backtracking) and
limits on the template's length, its nesting and the text it produces."""

from __future__ import annotations

from dataclasses import dataclass, field

from hearth.errors import InvalidRequest

MAX_TEMPLATE_CHARS = 64 * 1024  # Ollama's own templates are a few KB
MAX_OUTPUT_CHARS = 16 * 1024 * 1024
MAX_DEPTH = 16  # nested `if`s
_SHOWN_ACTION = 60  # characters of a refused action quoted in the error
_TRIM = " \t\r\n"  # what `{{-` and `-}}` remove, as Go's text/template does
_SUPPORTED = (
    "Hearth renders .System, .Prompt, .Response and 'if'/'else'/'end' on them; send a formatted "
    "prompt with 'raw': true instead"
)


def _invalid(problem: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for 'template': {problem}.", param="template")


@dataclass
class _Renderer:
    values: dict[str, str]
    out: list[str] = field(default_factory=list)
    size: int = 0
    taken: list[bool] = field(default_factory=list)  # per open `if`: was its condition true?
    hidden: int = 0  # open branches that are not rendered; text shows only when 0
    branch_hidden: list[bool] = field(default_factory=list)

    def emit(self, text: str) -> None:
        if self.hidden or not text:
            return
        self.size += len(text)
        if self.size > MAX_OUTPUT_CHARS:
            raise _invalid(f"the rendered prompt is longer than {MAX_OUTPUT_CHARS} characters")
        self.out.append(text)

    def open_if(self, condition: bool) -> None:
        if len(self.taken) >= MAX_DEPTH:
            raise _invalid(f"'if' is nested deeper than {MAX_DEPTH} levels")
        self.taken.append(condition)
        self.branch_hidden.append(not condition)
        self.hidden += not condition

    def else_(self) -> None:
        if not self.taken:
            raise _invalid("an 'else' has no 'if'")
        was_hidden = self.branch_hidden[-1]
        now_hidden = self.taken[-1]  # the else branch shows when the condition was false
        self.branch_hidden[-1] = now_hidden
        self.hidden += now_hidden - was_hidden

    def end(self) -> None:
        if not self.taken:
            raise _invalid("an 'end' has no 'if'")
        self.taken.pop()
        self.hidden -= self.branch_hidden.pop()

    def action(self, action: str) -> None:
        if action in self.values:
            self.emit(self.values[action])
        elif action.startswith("if ") and action[3:].strip() in self.values:
            self.open_if(bool(self.values[action[3:].strip()]))
        elif action == "else":
            self.else_()
        elif action == "end":
            self.end()
        else:
            shown = action if len(action) <= _SHOWN_ACTION else action[:_SHOWN_ACTION] + "…"
            raise InvalidRequest(
                f"Hearth does not support the template action '{{{{ {shown} }}}}'; {_SUPPORTED}.",
                param="template",
            )


def render_template(template: str, system: str, prompt: str) -> str:
    """Render `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}` (empty: the model writes it),
    `{{ if .X }}` ... `{{ else }}` ... `{{ end }}` on them, and `{{-`/`-}}` whitespace trimming.
    Anything else, an unclosed `{{`, an unbalanced `if`, or a template past the limits is an
    `InvalidRequest` naming the problem."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise _invalid(f"longer than {MAX_TEMPLATE_CHARS} characters")
    renderer = _Renderer({".System": system, ".Prompt": prompt, ".Response": ""})
    position = 0
    length = len(template)
    while True:
        start = template.find("{{", position)
        if start < 0:
            renderer.emit(template[position:])
            break
        close = template.find("}}", start + 2)
        if close < 0:
            raise _invalid(f"the '{{{{' at character {start} has no closing '}}}}'")
        inner = template[start + 2 : close]
        trim_left = inner.startswith("-")
        trim_right = inner.endswith("-") and len(inner) > 1
        text = template[position:start]
        renderer.emit(text.rstrip(_TRIM) if trim_left else text)
        action = inner[trim_left : len(inner) - trim_right].strip(_TRIM)
        position = close + 2
        if trim_right:
            while position < length and template[position] in _TRIM:
                position += 1
        renderer.action(action)
    if renderer.taken:
        raise _invalid("an 'if' has no 'end'")
    return "".join(renderer.out)
