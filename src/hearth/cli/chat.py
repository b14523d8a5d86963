"""`hearth chat`: an interactive, streaming chat in the terminal, like `ollama run`."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click
from rich.console import Console

from hearth.cli.chat_client import ChatClient, ChatError, Message, Reply
from hearth.cli.chat_server import connect, connection_options
from hearth.config import BUNDLED_MODEL_NAME

HELP = """\
  /system TEXT   set the system prompt (without TEXT: show it)
  /clear         forget the conversation (the system prompt stays)
  /model NAME    talk to another model (without NAME: show the current one)
  /save FILE     write the conversation to FILE as JSON
  /help          this list
  /bye           leave (Ctrl-D too)
  \"\"\"            start a multi-line message; a line ending with \"\"\" ends it
  Ctrl-C         stop the answer being written"""

BLOCK = '"""'


@click.command()
@click.argument("model", required=False)
@connection_options
def chat(
    model: str | None,
    url: str | None,
    api_key: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Chat with MODEL in the terminal, answers streamed as they are written.

    \b
    The conversation is kept for the session. Commands: /system TEXT, /clear, /model NAME,
    /save FILE, /help, /bye (or Ctrl-D). Start and end a multi-line message with \"\"\".
    Ctrl-C stops an answer (not the chat). MODEL defaults to the bundled model; when no Hearth
    answers, one is started for the session and stopped on exit.
    """
    try:
        with connect(url, api_key, config_file, data_dir) as client:
            ChatSession(client, model or BUNDLED_MODEL_NAME).run()
    except ChatError as exc:
        raise click.ClickException(str(exc)) from None


class ChatSession:
    """The read-answer loop, with the conversation so far."""

    def __init__(self, client: ChatClient, model: str) -> None:
        self.client = client
        self.model = model
        self.system: str | None = None
        self.history: list[Message] = []
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        with contextlib.suppress(ImportError):  # not on Windows
            import readline  # noqa: F401  (line editing and history for input())

    def run(self) -> None:
        self.out.print(
            f"{self.model} at {self.client.base_url}: /help for commands, /bye or Ctrl-D to leave",
            style="dim",
            markup=False,
        )
        interrupted = False
        while True:
            try:
                text = self._read()
            except EOFError:
                self.out.print()
                return
            except KeyboardInterrupt:
                if interrupted:
                    self.out.print()
                    return
                self.out.print("\n(Ctrl-D or /bye to leave; Ctrl-C again leaves too)", style="dim")
                interrupted = True
                continue
            interrupted = False
            if text is None:
                continue
            if text.startswith("/") and "\n" not in text:
                if not self._command(text):
                    return
            elif text.strip():
                self._ask(text)

    def _read(self) -> str | None:
        """One message: a line, or a block between lines starting and ending with \"\"\"."""
        line = input(">>> ")
        if not line.startswith(BLOCK):
            return line
        rest = line[len(BLOCK) :]
        if rest.endswith(BLOCK) and len(rest) >= len(BLOCK):
            return rest[: -len(BLOCK)]
        lines = [rest] if rest else []
        while True:
            try:
                more = input("... ")
            except KeyboardInterrupt:  # drops the block, not the chat
                self.out.print()
                return None
            if more.endswith(BLOCK):
                lines.append(more[: -len(BLOCK)])
                return "\n".join(lines).strip("\n")
            lines.append(more)

    def _command(self, text: str) -> bool:
        """Run a /command; False means leave."""
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name in ("/bye", "/exit", "/quit"):
            return False
        if name in ("/help", "/?"):
            self.out.print(HELP, markup=False)
        elif name == "/clear":
            self.history.clear()
            self.out.print("conversation cleared", style="dim")
        elif name == "/system":
            if arg:
                self.system = arg
                self.out.print("system prompt set", style="dim")
            else:
                self.out.print(self.system or "(no system prompt)", markup=False)
        elif name == "/model":
            if arg:
                self.model = arg
                self.out.print(f"now talking to {arg}", style="dim", markup=False)
            else:
                self.out.print(self.model, markup=False)
        elif name == "/save":
            self._save(arg)
        else:
            self.err.print(f"unknown command {name}: /help lists them", markup=False)
        return True

    def _messages(self) -> list[Message]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def _save(self, path: str) -> None:
        if not path:
            self.err.print("/save needs a file name")
            return
        document = {"model": self.model, "messages": self._messages()}
        try:
            Path(path).expanduser().write_text(json.dumps(document, indent=2) + "\n")
        except OSError as exc:
            self.err.print(f"could not save to {path}: {exc.strerror}", markup=False)
            return
        self.out.print(f"saved to {path}", style="dim", markup=False)

    def _ask(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})
        written: list[str] = []

        def show(piece: str, reasoning: bool) -> None:
            if reasoning:
                self.out.print(piece, end="", style="dim", markup=False)
            else:
                written.append(piece)
                sys.stdout.write(piece)
            sys.stdout.flush()

        try:
            reply = self.client.stream(self.model, self._messages(), show)
        except KeyboardInterrupt:
            # Leaving the stream closed the connection: the engine stops generating. What was
            # written stays in the conversation, so a follow-up can refer to it.
            self.out.print("\n(stopped)", style="dim")
            self._keep("".join(written))
            return
        except ChatError as exc:
            self.out.print()
            self.err.print(f"error: {exc}", style="red", markup=False)
            self.history.pop()
            return
        self.out.print()
        self._keep(reply.text)
        self._stats(reply)

    def _keep(self, answer: str) -> None:
        if answer:
            self.history.append({"role": "assistant", "content": answer})
        else:
            self.history.pop()  # an unanswered question is not part of the conversation

    def _stats(self, reply: Reply) -> None:
        rate = reply.tokens_per_s
        speed = f", {rate:.1f} tokens/s" if rate is not None else ""
        self.out.print(f"{reply.tokens} tokens{speed}", style="dim")
