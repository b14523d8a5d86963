"""`hearth chat`, driven through a pseudo-terminal against a real `hearth serve`: streamed answers
and the history sent with each question, /system, /clear, /model, /save, multi-line input, Ctrl-C
(stops an answer, not the chat; at the prompt it says how to leave) and Ctrl-D. The scripted
upstream stands behind the remote deployments, so what the server was sent can be checked."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

PROMPT = ">>> "
# Run in the terminal's own session, with it as controlling terminal, so that \x03 is a SIGINT.
TRAMPOLINE = (
    "import os, sys; os.close(os.open(os.ttyname(0), os.O_RDWR)); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    """A command on a pseudo-terminal: what it writes is read back, what we send is typed."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        self.fd = master
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env=env,
        )
        os.close(slave)
        self.output = ""
        self._seen = 0

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def interrupt(self) -> None:
        """Ctrl-C. Python's readline loses a SIGINT that arrives between drawing the prompt and
        waiting for a key (until the next key), so a person's pause comes first."""
        time.sleep(0.3)
        self.send("\x03")

    def leave(self) -> int:
        """Ctrl-D, and the exit code. Typed before readline is waiting for a key (the prompt is
        drawn first), the end-of-file can be lost as the terminal changes mode, as a person's
        key would be; like a person, press it again if nothing happened."""
        time.sleep(0.3)
        self.send("\x04")
        deadline = time.monotonic() + 5
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        if self.proc.poll() is None:
            self.send("\x04")
        return self.wait()

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait for `pattern` in the output after the last match."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.output, self._seen)
            if found:
                self._seen = found.end()
                return found
            if not self._read(deadline - time.monotonic()):
                shown = self.output
                pytest.fail(f"no {pattern!r} within {timeout}s; the terminal showed:\n{shown}")

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        try:
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"hearth chat did not exit; the terminal showed:\n{self.output}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        os.close(self.fd)

    def _read(self, timeout: float) -> bool:
        if timeout <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the program has exited and the terminal is closed
            time.sleep(timeout)
            return False
        self.output += data.decode(errors="replace").replace("\r\n", "\n")
        return True


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    upstream.set_default("stall", "stall")
    config: Path = tmp_path_factory.mktemp("chat") / "hearth.yaml"
    # A short cap: the tiny bundled model may otherwise ramble on for minutes.
    lines = ["preload: []", "max_output_tokens: 24", "routing: {retries: 0}", "deployments:"]
    for name in ("echo", "stall", "block"):
        lines.append(f"  {name}: {{url: '{upstream.url(name)}'}}")
    config.write_text("\n".join(lines) + "\n")
    return start_hearth("--config", str(config))


OpenChat = Callable[..., Terminal]


@pytest.fixture
def chat(server: HearthServer) -> Iterator[OpenChat]:
    """`hearth chat echo` against the module's server, at the prompt."""
    terminals: list[Terminal] = []

    def open_chat(*args: str) -> Terminal:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        env["TERM"] = "dumb"
        argv = [sys.executable, "-m", "hearth", "chat", *args, "--url", server.base_url]
        terminal = Terminal(argv, env)
        terminals.append(terminal)
        terminal.expect(PROMPT)
        return terminal

    yield open_chat
    for terminal in terminals:
        terminal.close()


def sent(upstream: ScriptedUpstream, name: str) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = upstream.received[name][-1].body["messages"]
    return messages


def test_answers_stream_and_the_history_is_sent(chat: OpenChat, upstream: ScriptedUpstream) -> None:
    terminal = chat("echo")
    terminal.line("Hello there")
    terminal.expect("echo says hi")
    terminal.expect(r"3 tokens, [0-9.]+ tokens/s")  # the usage the upstream counted
    terminal.expect(PROMPT)
    body = upstream.received["echo"][-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    terminal.line("And again?")
    terminal.expect("echo says hi")
    terminal.expect(PROMPT)
    assert sent(upstream, "echo") == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "echo says hi"},
        {"role": "user", "content": "And again?"},
    ]
    assert terminal.leave() == 0  # Ctrl-D


def test_system_save_and_clear(chat: OpenChat, upstream: ScriptedUpstream, tmp_path: Path) -> None:
    terminal = chat("echo")
    terminal.line("/system You answer in French.")
    terminal.expect("system prompt set")
    terminal.line("Hi")
    terminal.expect("echo says hi")
    terminal.expect(PROMPT)
    system = {"role": "system", "content": "You answer in French."}
    assert sent(upstream, "echo") == [system, {"role": "user", "content": "Hi"}]
    saved = tmp_path / "conversation.json"
    terminal.line(f"/save {saved}")
    terminal.expect("saved to")
    assert json.loads(saved.read_text()) == {
        "model": "echo",
        "messages": [
            system,
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "echo says hi"},
        ],
    }
    terminal.line("/clear")
    terminal.expect("conversation cleared")
    terminal.line("Fresh start")
    terminal.expect("echo says hi")
    terminal.expect(PROMPT)
    assert sent(upstream, "echo") == [system, {"role": "user", "content": "Fresh start"}]
    terminal.line("/bye")
    assert terminal.wait() == 0


def test_multi_line_input(chat: OpenChat, upstream: ScriptedUpstream) -> None:
    terminal = chat("block")
    terminal.line('"""First line')
    terminal.expect(r"\.\.\. ")
    terminal.line("second line")
    terminal.expect(r"\.\.\. ")
    terminal.line('third line"""')
    terminal.expect("block says hi")
    terminal.expect(PROMPT)
    assert sent(upstream, "block") == [
        {"role": "user", "content": "First line\nsecond line\nthird line"}
    ]
    terminal.line('"""Never mind')  # Ctrl-C in a block drops the block
    terminal.expect(r"\.\.\. ")
    terminal.interrupt()
    terminal.expect(PROMPT)
    assert upstream.hits("block") == 1 and terminal.proc.poll() is None
    assert terminal.leave() == 0


def test_ctrl_c_stops_the_answer_not_the_chat(chat: OpenChat, upstream: ScriptedUpstream) -> None:
    terminal = chat("stall")  # one piece of the answer, then nothing until the client leaves
    terminal.line("Tell me a long story")
    terminal.expect(r"stall")
    terminal.interrupt()
    terminal.expect(r"\(stopped\)")
    terminal.expect(PROMPT)
    # The connection was closed, so the upstream (an engine would stop generating) saw it.
    deadline = time.monotonic() + 10
    while upstream.abandoned["stall"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.abandoned["stall"] == 1
    terminal.line("/model echo")
    terminal.expect("now talking to echo")
    terminal.line("Shorter, please")
    terminal.expect("echo says hi")
    terminal.expect(PROMPT)
    # What was written before Ctrl-C stays in the conversation.
    assert sent(upstream, "echo") == [
        {"role": "user", "content": "Tell me a long story"},
        {"role": "assistant", "content": "stall"},
        {"role": "user", "content": "Shorter, please"},
    ]
    assert terminal.proc.poll() is None
    assert terminal.leave() == 0


def test_ctrl_c_at_the_prompt_says_how_to_leave(chat: OpenChat) -> None:
    terminal = chat("echo")
    terminal.interrupt()
    terminal.expect("Ctrl-D or /bye to leave")
    terminal.expect(PROMPT)
    assert terminal.proc.poll() is None
    terminal.interrupt()  # a second press leaves
    assert terminal.wait() == 0


def test_a_server_error_is_one_line_and_the_chat_goes_on(chat: OpenChat) -> None:
    terminal = chat("no-such-model")
    terminal.line("Hello?")
    terminal.expect(r"error: [^\n]*no-such-model[^\n]*\n")
    terminal.expect(PROMPT)
    terminal.line("/help")
    terminal.expect("/system TEXT")
    terminal.line("/bye")
    assert terminal.wait() == 0
    assert "Traceback" not in terminal.output


def test_the_bundled_model_answers_with_its_speed(chat: OpenChat) -> None:
    terminal = chat()  # no MODEL: the bundled chat model, on the real engine
    assert "gemma-3-270m at" in terminal.output
    terminal.line("Say hello in one word.")
    speed = terminal.expect(r"(\d+) tokens, ([0-9.]+) tokens/s", timeout=180)
    assert int(speed[1]) > 0 and float(speed[2]) > 0
    terminal.expect(PROMPT)
    assert terminal.leave() == 0
