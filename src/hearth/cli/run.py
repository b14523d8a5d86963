"""`hearth run MODEL PROMPT`: one answer, then exit, for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hearth.cli.chat_client import ChatError, Message
from hearth.cli.chat_server import connect, connection_options


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--system", help="A system prompt to send first.")
@click.option("--no-stream", is_flag=True, help="Print the answer once it is whole.")
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print the whole API answer as JSON (a chat.completion; implies --no-stream).",
)  # fmt: skip
@connection_options
def run(
    model: str,
    prompt: tuple[str, ...],
    system: str | None,
    no_stream: bool,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Answer PROMPT with MODEL once and exit (non-zero on an error).

    \b
    The prompt is read from stdin when none is given, or when stdin is not a terminal (then the
    input comes first and PROMPT after it):
      hearth run gemma-3-270m "Why is the sky blue?"
      echo "Why is the sky blue?" | hearth run gemma-3-270m
      hearth run gemma-3-270m "Summarise this:" < notes.txt
    """
    text = _prompt(prompt)
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    try:
        with connect(url, api_key, config_file, data_dir) as client:
            if as_json:
                click.echo(json.dumps(client.complete(model, messages), indent=2))
            elif no_stream:
                answer = client.complete(model, messages)
                choices = answer.get("choices") or [{}]
                click.echo((choices[0].get("message") or {}).get("content") or "")
            else:
                client.stream(model, messages, _write)
                click.echo()
    except ChatError as exc:
        raise click.ClickException(str(exc)) from None


def _prompt(words: tuple[str, ...]) -> str:
    parts = []
    if sys.stdin is not None and (not words or not sys.stdin.isatty()):
        parts.append(sys.stdin.read().strip())
    if words:
        parts.append(" ".join(words))
    text = "\n\n".join(part for part in parts if part)
    if not text:
        raise click.UsageError("no prompt: give one as an argument or on stdin")
    return text


def _write(piece: str, reasoning: bool) -> None:
    if not reasoning:  # thinking is not part of the answer a script reads
        sys.stdout.write(piece)
        sys.stdout.flush()
