"""Web pages attack a keyless local Hearth from a real headless Chromium (Debian's `chromium`,
driven by Playwright): a page of another origin fires CSRF requests (text/plain `no-cors` fetches
and a form) at chat, generate, copy, reload, unload and delete; a DNS-rebinding page, same-origin
in the browser's eyes, tries to read answers and delete a model. The test then reads Hearth's
state (the scripted upstream's request count, the model store, the loaded models, the audit log)
to show none took effect, and that a web app listed in `allowed_origins` and the dashboard still
work."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from support.hearth_server import HearthServer, StartHearth
from support.ports import free_port
from support.scripted_upstream import ScriptedUpstream

CHROMIUM = "/usr/bin/chromium"
MODEL = "gemma-3-270m"
KEEPSAKE = "keepsake"  # a copy the owner made, which the attacks try to delete
# The rebinding attacker's name: Chromium resolves it to loopback, as after the rebind.
EVIL = "evil.example"

PAGE = b"<!doctype html><title>cute cats</title><p>Nothing to see here.</p>"


class AttackerSite:
    """A web server of the attacker's on another loopback port: one harmless-looking page,
    from which the test runs the page's script (page.evaluate runs in the page's origin)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(PAGE)))
                self.end_headers()
                self.wfile.write(PAGE)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def attacker() -> Iterator[AttackerSite]:
    site = AttackerSite()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is needed for the browser tests: run `make setup` (as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--no-proxy-server",
                f"--host-resolver-rules=MAP {EVIL} 127.0.0.1",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def write_config(folder: Path, upstream: ScriptedUpstream, extra: str = "") -> Path:
    config = folder / "hearth.yaml"
    config.write_text(
        "routing: {health_check_interval: 0}\n"
        f"deployments:\n  cloud: {{url: '{upstream.url('cloud')}'}}\n" + extra
    )
    return config


@pytest.fixture(scope="module")
def victim(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    """A keyless local Hearth with the defaults: the bundled model loaded on the real engine
    (unload is an attack), a remote deployment, and a copy of the model its owner made with
    the command line (delete is an attack)."""
    server = start_hearth("--config", str(write_config(tmp_path_factory.mktemp("v"), upstream)))
    copied = httpx.post(
        f"{server.base_url}/api/copy", content=f'{{"source":"{MODEL}","destination":"{KEEPSAKE}"}}'
    )
    assert copied.status_code == 200, copied.text  # curl -d: no content type needed
    return server


class State:
    """What the attacks would change, read from Hearth as its owner would."""

    def __init__(self, server: HearthServer, upstream: ScriptedUpstream) -> None:
        base = server.base_url
        time.sleep(0.5)  # audit entries are written off the request path
        self.upstream_hits = upstream.hits("cloud")
        tags = _get(f"{base}/api/tags")["models"]
        self.models = {m["name"].removesuffix(":latest") for m in tags}
        self.loaded = {m["name"] for m in _get(f"{base}/admin/models/loaded")["data"]}
        self.audit = [(e["action"], e["target"]) for e in _get(f"{base}/admin/audit")["data"]]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return repr(vars(self))


def _get(url: str) -> Any:
    answer = httpx.get(url, timeout=30)
    answer.raise_for_status()
    return answer.json()


CSRF = """async (hearth) => {
  // text/plain bodies and no-cors: "simple" requests a browser sends without a preflight.
  const text = (body) => ({method: "POST", mode: "no-cors", body: JSON.stringify(body)});
  const chat = {model: "cloud", messages: [{role: "user", content: "pwned"}], stream: false};
  const attacks = [
    ["/v1/chat/completions", text(chat)],
    ["/api/chat", text(chat)],
    ["/api/generate", text({model: "cloud", prompt: "pwned", stream: false})],
    ["/api/copy", text({source: "gemma-3-270m", destination: "pwned"})],
    ["/admin/reload", text({})],
    ["/admin/models/gemma-3-270m/unload", text({})],
    // DELETE needs a CORS preflight: only an answer to it would let the browser go on.
    ["/api/delete", {method: "DELETE", body: JSON.stringify({model: "keepsake"})}],
  ];
  const results = await Promise.all(attacks.map(([path, init]) =>
    fetch(hearth + path, init).then((r) => r.type, (e) => "failed")));
  // A classic form post (text/plain encoding makes the body JSON) into a hidden frame.
  const frame = document.createElement("iframe");
  frame.name = "sink";
  document.body.append(frame);
  const form = document.createElement("form");
  form.method = "POST";
  form.enctype = "text/plain";
  form.target = "sink";
  form.action = hearth + "/api/copy";
  const input = document.createElement("input");
  input.name = '{"source":"gemma-3-270m","destination":"pwned-form","x":"';
  input.value = '"}';
  form.append(input);
  document.body.append(form);
  await new Promise((done) => { frame.onload = done; form.submit(); });
  return results;
}"""

REFUSED_IN_LOG = [
    "POST /v1/chat/completions 403",
    "POST /api/chat 403",
    "POST /api/generate 403",
    "POST /api/copy 403",
    "POST /admin/reload 403",
    "POST /admin/models/gemma-3-270m/unload 403",
    "OPTIONS /api/delete 403",
]


@pytest.mark.engine
@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "localhost"])  # same-site, cross-site
def test_a_page_of_another_origin_cannot_drive_hearth(
    page: Page,
    victim: HearthServer,
    upstream: ScriptedUpstream,
    attacker: AttackerSite,
    attacker_host: str,
) -> None:
    before = State(victim, upstream)
    assert MODEL in before.loaded and KEEPSAKE in before.models
    log_start = len(victim.log())
    page.goto(f"http://{attacker_host}:{attacker.port}/")
    results = page.evaluate(CSRF, victim.base_url)
    # The browser sent them all (the opaque answers tell nothing), except the DELETE, whose
    # preflight was refused.
    assert results == ["opaque"] * 6 + ["failed"], results
    after = State(victim, upstream)
    assert after == before
    assert "pwned" not in after.models and "pwned-form" not in after.models
    # They reached Hearth, were refused there, and the access log shows it.
    log = victim.log()[log_start:]
    for line in REFUSED_IN_LOG:
        assert line in log, line
    assert log.count("POST /api/copy 403") == 2  # the fetch and the form


REBIND = """async () => {
  // Same-origin now: the browser lets this page read every answer and send any method.
  const json = {"content-type": "application/json"};
  const read = await fetch("/api/tags");
  const chat = await fetch("/v1/chat/completions", {method: "POST", headers: json,
    body: JSON.stringify({model: "cloud", messages: [{role: "user", content: "Hi"}]})});
  const removed = await fetch("/api/delete", {method: "DELETE", headers: json,
    body: JSON.stringify({model: "keepsake"})});
  return {tags: [read.status, await read.text()], chat: chat.status, delete: removed.status};
}"""


class RebindingName:
    """evil.example:PORT as the attacker's DNS plays it: at first the attacker's own server,
    after `rebind`, Hearth. Chromium resolves the name to loopback, where this TCP relay stands
    for the name's address: each new connection goes where the name points when its first bytes
    arrive. Everything stays on loopback, as a page rebound to 127.0.0.1 would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def rebind(self, port: int) -> None:
        self.target_port = port

    def stop(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            first = client.recv(65536)
            if not first:
                return
            with socket.create_connection(("127.0.0.1", self.target_port)) as server:
                server.sendall(first)
                back = threading.Thread(target=_pump, args=(server, client), daemon=True)
                back.start()
                _pump(client, server)
                back.join(timeout=30)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.mark.engine
def test_a_dns_rebinding_page_can_neither_read_nor_delete(
    page: Page, victim: HearthServer, upstream: ScriptedUpstream, attacker: AttackerSite
) -> None:
    """The page comes from the attacker's server at evil.example:PORT; then the name is rebound
    to Hearth, and the page's requests, same-origin in the browser's eyes, reach Hearth with
    `Host: evil.example:PORT`."""
    name = RebindingName(attacker.port)
    try:
        page.goto(f"http://{EVIL}:{name.port}/")
        expect(page).to_have_title("cute cats")
        before = State(victim, upstream)
        name.rebind(victim.port)
        results = page.evaluate(REBIND)
    finally:
        name.stop()
    status, text = results["tags"]
    assert (status, results["chat"], results["delete"]) == (403, 403, 403), results
    assert "allowed_hosts" in text and KEEPSAKE not in text  # no model list for the attacker
    assert State(victim, upstream) == before
    # And from outside a browser: the same request with the rebound Host.
    direct = httpx.get(f"{victim.base_url}/api/tags", headers={"host": f"{EVIL}:{victim.port}"})
    assert direct.status_code == 403


@pytest.fixture(scope="module")
def web_app_hearth(
    start_hearth: StartHearth,
    upstream: ScriptedUpstream,
    attacker: AttackerSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> HearthServer:
    """Gateway only; the page server on localhost:<port> plays a web app its owner allowed."""
    extra = f"preload: []\nallowed_origins: ['http://localhost:{attacker.port}']\n"
    config = write_config(tmp_path_factory.mktemp("webapp"), upstream, extra)
    return start_hearth("--config", str(config))


WEB_APP_CHAT = """async (hearth) => {
  try {
    const answer = await fetch(hearth + "/v1/chat/completions", {method: "POST",
      headers: {"content-type": "application/json", "authorization": "Bearer unused"},
      body: JSON.stringify({model: "cloud", messages: [{role: "user", content: "Hi"}]})});
    return (await answer.json()).choices[0].message.content;
  } catch (error) {
    return "blocked";
  }
}"""


def test_a_web_app_in_allowed_origins_works_and_no_other_page_does(
    page: Page, web_app_hearth: HearthServer, upstream: ScriptedUpstream, attacker: AttackerSite
) -> None:
    before = upstream.hits("cloud")
    page.goto(f"http://localhost:{attacker.port}/")  # listed: CORS answers, a preflight first
    assert page.evaluate(WEB_APP_CHAT, web_app_hearth.base_url) == "cloud says hi"
    page.goto(f"http://127.0.0.1:{attacker.port}/")  # the same server under another origin
    assert page.evaluate(WEB_APP_CHAT, web_app_hearth.base_url) == "blocked"
    assert upstream.hits("cloud") == before + 1
    log = web_app_hearth.log()
    assert "OPTIONS /v1/chat/completions 204" in log
    assert "OPTIONS /v1/chat/completions 403" in log


@pytest.mark.engine
@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_the_dashboard_still_works_under_its_security_headers(
    page: Page, victim: HearthServer, name: str
) -> None:
    """Same-origin fetches to /admin/* pass the guard; the page needs nothing its
    Content-Security-Policy forbids."""
    violations: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def note(message: ConsoleMessage) -> None:
        if "Content Security" in message.text:
            violations.append(message.text)

    page.on("console", note)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation',"
        " (e) => console.error('Content Security Policy: ' + e.violatedDirective))"
    )
    answer = page.goto(f"http://{name}:{victim.port}/ui")
    assert answer is not None
    headers = answer.headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    expect(page.locator("#connection")).to_have_text("online")
    row = page.locator(f"#models tbody tr[data-name='{MODEL}']")
    expect(row.locator(".badge")).to_have_text("ready")
    expect(page.locator("#deployments tbody tr[data-name='cloud']")).to_be_visible()
    page.select_option("#chat-model", "cloud")  # the playground, through the guard too
    page.fill("#chat-prompt", "Hi")
    page.click("#chat-send")
    reply = page.locator("#chat-log .turn[data-role='assistant']").last
    expect(reply).to_have_text("cloud says hi")
    assert violations == [] and errors == [], (violations, errors)
