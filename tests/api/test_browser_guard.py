"""The browser guard (DNS rebinding and CSRF): the policy read from the settings, then a real
gateway-only `hearth serve` (no local model, a scripted upstream) answering requests shaped as a
browser on another site, a rebinding page and a command-line client send them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hearth.api.browser_guard import BrowserPolicy, split_host, split_origin
from hearth.config import Settings
from hearth.errors import ConfigError
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

WEB_APP = "http://localhost:3000"
CHAT = {"model": "cloud", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}

# ---- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8080", ("localhost", 8080)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("evil.example:notaport", ("evil.example", None)),
    ],
)
def test_split_host(header: str, expected: tuple[str, int | None]) -> None:
    assert split_host(header) == expected


def test_split_origin() -> None:
    assert split_origin("http://LOCALHOST:3000") == ("http", "localhost", 3000)
    assert split_origin("https://hearth.example") == ("https", "hearth.example", 443)
    assert split_origin("http://[::1]:8080") == ("http", "::1", 8080)
    for odd in ("null", "file://", "chrome-extension://abc", "http://x:99999", ""):
        assert split_origin(odd) is None, odd


def test_a_loopback_bind_accepts_only_loopback_names_and_its_own_address() -> None:
    policy = BrowserPolicy.from_settings(Settings(host="127.0.0.2"))
    for name in ("localhost", "127.0.0.1", "::1", "127.0.0.2"):
        assert policy.host_allowed(name), name
    for name in ("evil.example", "localhost.evil.example", "0.0.0.0", "127.0.0.3", ""):
        assert not policy.host_allowed(name), name
    assert not policy.origin_listed(WEB_APP) and not policy.any_origin


def test_allowed_hosts_adds_names_subdomains_or_any() -> None:
    policy = BrowserPolicy.from_settings(
        Settings(allowed_hosts=["Hearth.Example:8443", "*.lan", "[fd00::5]"])
    )
    for name in ("localhost", "hearth.example", "gpu.lan", "a.b.lan", "fd00::5"):
        assert policy.host_allowed(name), name
    for name in ("lan", "evillan", "hearth.example.evil", "evil.example"):
        assert not policy.host_allowed(name), name
    assert BrowserPolicy.from_settings(Settings(allowed_hosts=["*"])).host_allowed("evil.example")


def test_a_non_loopback_bind_accepts_any_host_unless_allowed_hosts_says_otherwise() -> None:
    assert BrowserPolicy.from_settings(Settings(host="0.0.0.0")).host_allowed("evil.example")
    policy = BrowserPolicy.from_settings(Settings(host="0.0.0.0", allowed_hosts=["gpu.lan"]))
    assert policy.host_allowed("gpu.lan") and policy.host_allowed("localhost")
    assert not policy.host_allowed("evil.example") and not policy.host_allowed("0.0.0.0")
    fixed = BrowserPolicy.from_settings(Settings(host="10.0.0.7", allowed_hosts=["gpu.lan"]))
    assert fixed.host_allowed("10.0.0.7") and not fixed.host_allowed("10.0.0.8")


def test_allowed_origins_are_origins_or_any() -> None:
    policy = BrowserPolicy.from_settings(Settings(allowed_origins=["HTTP://LocalHost:3000/"]))
    assert policy.origin_listed("http://localhost:3000")
    assert not policy.origin_listed("http://localhost:3001")
    assert BrowserPolicy.from_settings(Settings(allowed_origins=["*"])).origin_listed("null")
    extension = "chrome-extension://abcdefghijklmnop"
    assert BrowserPolicy.from_settings(Settings(allowed_origins=[extension])).origin_listed(
        extension
    )
    wrong_ones = ("localhost:3000", "http://localhost:3000/app", "null", "file:///x", "http://h:x")
    for wrong in wrong_ones:
        with pytest.raises(ConfigError, match="allowed_origins"):
            BrowserPolicy.from_settings(Settings(allowed_origins=[wrong]))


# ---- a real server ---------------------------------------------------------------------------


def _start(
    start_hearth: StartHearth,
    upstream: ScriptedUpstream,
    folder: Path,
    extra: str = "",
    *args: str,
    env: dict[str, str] | None = None,
) -> HearthServer:
    config = folder / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        "routing: {health_check_interval: 0}\n"
        f"deployments:\n  cloud: {{url: '{upstream.url('cloud')}'}}\n" + extra
    )
    return start_hearth("--config", str(config), *args, env=env)


@pytest.fixture(scope="module")
def guarded(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    """The defaults: a loopback bind, no allowed hosts or origins."""
    return _start(start_hearth, upstream, tmp_path_factory.mktemp("guard-defaults"))


@pytest.fixture(scope="module")
def configured(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    """A web app's origin allowed (CORS), a proxy's host names allowed."""
    extra = f"allowed_origins: ['{WEB_APP}']\nallowed_hosts: [hearth.internal, '*.lan']\n"
    return _start(start_hearth, upstream, tmp_path_factory.mktemp("guard-configured"), extra)


Send = Callable[..., httpx.Response]


def sender(server: HearthServer) -> Send:
    def send(method: str, path: str, body: object = None, **headers: str) -> httpx.Response:
        content = None if body is None else json.dumps(body).encode()
        return httpx.request(
            method,
            server.base_url + path,
            content=content,
            headers={k.replace("_", "-"): v for k, v in headers.items()},
            timeout=30,
        )

    return send


# Every kind of endpoint: probes, OpenAI, Ollama (its own error shape), admin, dashboard.
ENDPOINTS = [
    ("GET", "/health", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", CHAT),
    ("GET", "/api/tags", None),
    ("POST", "/api/generate", {"model": "cloud", "prompt": "Hi", "stream": False}),
    ("POST", "/api/copy", {"source": "gemma-3-270m", "destination": "stolen"}),
    ("DELETE", "/api/delete", {"model": "gemma-3-270m"}),
    ("POST", "/admin/reload", None),
    ("POST", "/admin/models/gemma-3-270m/unload", None),
    ("GET", "/ui", None),
    ("GET", "/metrics", None),
]


def error_of(answer: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from an OpenAI-shaped or an Ollama-shaped (`/api/*`) error body."""
    error = answer.json()["error"]
    if isinstance(error, str):
        return error, None
    return error["message"], error["code"]


def test_command_line_clients_pass_whatever_the_content_type(
    guarded: HearthServer, upstream: ScriptedUpstream
) -> None:
    send = sender(guarded)
    before = upstream.hits("cloud")
    # `curl -d '{...}'` sends application/x-www-form-urlencoded, as Ollama's own examples do.
    curl = send(
        "POST", "/v1/chat/completions", CHAT, content_type="application/x-www-form-urlencoded"
    )
    assert curl.status_code == 200, curl.text
    assert send("POST", "/api/chat", {**CHAT, "stream": False}).status_code == 200
    sdk = guarded.openai().chat.completions.create(
        model="cloud", messages=[{"role": "user", "content": "Hi"}]
    )
    assert sdk.choices[0].message.content == "cloud says hi"
    assert upstream.hits("cloud") == before + 3
    assert "access-control-allow-origin" not in curl.headers


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}"]
)
def test_the_loopback_names_pass_with_or_without_the_port(guarded: HearthServer, host: str) -> None:
    answer = sender(guarded)("GET", "/v1/models", host=host.format(port=guarded.port))
    assert answer.status_code == 200, answer.text


def test_a_foreign_host_is_refused_on_every_endpoint(
    guarded: HearthServer, upstream: ScriptedUpstream
) -> None:
    """DNS rebinding: evil.example now resolves to 127.0.0.1, so the attacker's page is
    same-origin with what it reaches, and its Origin matches its Host. Only the Host tells."""
    send = sender(guarded)
    before = upstream.hits("cloud")
    host = f"evil.example:{guarded.port}"
    for method, path, body in ENDPOINTS:
        for origin in (None, f"http://{host}"):
            headers = {"host": host} | ({"origin": origin} if origin else {})
            answer = send(method, path, body, **headers)
            assert answer.status_code == 403, (method, path, answer.text)
            message, code = error_of(answer)
            assert "allowed_hosts" in message and "evil.example" in message
            assert code in ("host_not_allowed", None)  # None: Ollama's shape has no code
    assert upstream.hits("cloud") == before
    assert "stolen" not in send("GET", "/api/tags").text


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://127.0.0.1:1",  # another port of this machine: another origin
        "http://localhost:{port}",  # the page asked for 127.0.0.1: localhost is another origin
        "null",  # a sandboxed frame or a local file
    ],
)
def test_a_foreign_origin_is_refused_on_every_endpoint(
    guarded: HearthServer, upstream: ScriptedUpstream, origin: str
) -> None:
    send = sender(guarded)
    origin = origin.format(port=guarded.port)
    before = upstream.hits("cloud")
    for method, path, body in ENDPOINTS:
        # What a page's fetch(..., {mode: 'no-cors', body}) sends: text/plain, no preflight.
        answer = send(method, path, body, origin=origin, content_type="text/plain;charset=UTF-8")
        assert answer.status_code == 403, (method, path, answer.text)
        message, code = error_of(answer)
        assert "allowed_origins" in message
        assert code in ("origin_not_allowed", None)
        assert "access-control-allow-origin" not in answer.headers
    preflight = send(
        "OPTIONS", "/v1/chat/completions", origin=origin, access_control_request_method="POST"
    )
    assert preflight.status_code == 403
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    assert upstream.hits("cloud") == before
    assert "stolen" not in send("GET", "/api/tags").text


def test_same_origin_requests_pass(guarded: HearthServer, upstream: ScriptedUpstream) -> None:
    """The dashboard's own fetches carry the server's own origin, as the Host names it."""
    send = sender(guarded)
    port = guarded.port
    for host, origin in [
        (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
        (f"localhost:{port}", f"http://localhost:{port}"),
        (f"[::1]:{port}", f"http://[::1]:{port}"),
    ]:
        answer = send("POST", "/v1/chat/completions", CHAT, host=host, origin=origin)
        assert answer.status_code == 200, (host, answer.text)
        assert "access-control-allow-origin" not in answer.headers


def test_sec_fetch_site_refuses_what_a_browser_sends_without_origin(
    guarded: HearthServer,
) -> None:
    send = sender(guarded)
    for site in ("cross-site", "same-site"):
        # An <img src> or a no-cors GET from another site, and a POST that lost its Origin.
        for method, path, body in [("GET", "/v1/models", None), ("POST", "/admin/reload", None)]:
            answer = send(method, path, body, sec_fetch_site=site, sec_fetch_mode="no-cors")
            assert answer.status_code == 403, (site, path)
            assert error_of(answer)[1] == "origin_not_allowed"
        # A link to the dashboard from another site still opens it; a form POST does not.
        nav = send("GET", "/ui", sec_fetch_site=site, sec_fetch_mode="navigate")
        assert nav.status_code == 200
        posted = send("POST", "/admin/reload", sec_fetch_site=site, sec_fetch_mode="navigate")
        assert posted.status_code == 403
    for site in ("same-origin", "none"):  # the dashboard's own fetches; a typed-in address
        assert send("GET", "/v1/models", sec_fetch_site=site).status_code == 200


def test_refusals_are_logged_and_counted_and_change_nothing(guarded: HearthServer) -> None:
    send = sender(guarded)
    audit_before = send("GET", "/admin/audit").json()["data"]
    answer = send("POST", "/admin/reload", origin="http://evil.example")
    assert answer.status_code == 403
    assert answer.headers["x-request-id"]  # the observer (outermost) answered it
    refused = send("POST", "/admin/reload", host="evil.example")
    assert refused.status_code == 403
    metrics = send("GET", "/metrics").text
    assert any(
        line.startswith("hearth_requests_total{") and 'status="403"' in line
        for line in metrics.splitlines()
    )
    time.sleep(0.5)  # audit entries are written off the request path
    assert send("GET", "/admin/audit").json()["data"] == audit_before
    log = guarded.log()
    assert "POST /admin/reload 403" in log
    assert log.count("POST /admin/reload 403") >= 2
    assert "allowed_origins" in log and "allowed_hosts" in log  # the warning names the fix


def test_a_listed_origin_gets_cors_and_others_still_do_not(
    configured: HearthServer, upstream: ScriptedUpstream
) -> None:
    send = sender(configured)
    preflight = send(
        "OPTIONS",
        "/v1/chat/completions",
        origin=WEB_APP,
        access_control_request_method="POST",
        access_control_request_headers="authorization, content-type",
    )
    assert preflight.status_code == 204, preflight.text
    assert preflight.headers["access-control-allow-origin"] == WEB_APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert preflight.headers["vary"] == "Origin"
    before = upstream.hits("cloud")
    answer = send(
        "POST", "/v1/chat/completions", CHAT, origin=WEB_APP, content_type="application/json"
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == WEB_APP
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    assert upstream.hits("cloud") == before + 1
    # Errors from further in carry CORS too, so the web app can read why.
    missing = send("POST", "/v1/chat/completions", {**CHAT, "model": "nope"}, origin=WEB_APP)
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == WEB_APP
    for other in ("http://localhost:3001", "https://localhost:3000", "http://evil.example"):
        refused = send("POST", "/v1/chat/completions", CHAT, origin=other)
        assert refused.status_code == 403, other
        assert "access-control-allow-origin" not in refused.headers
    assert upstream.hits("cloud") == before + 1


def test_allowed_hosts_admits_a_proxy_name_and_its_pages(configured: HearthServer) -> None:
    send = sender(configured)
    port = configured.port
    for host in ("hearth.internal", f"hearth.internal:{port}", f"gpu.lan:{port}"):
        assert send("GET", "/v1/models", host=host).status_code == 200, host
    # A page served under the proxy's name is same-origin there, over http or (behind a TLS
    # proxy, which forwards the Host) https.
    for origin in ("http://hearth.internal", "https://hearth.internal"):
        answer = send("POST", "/admin/reload", host="hearth.internal", origin=origin)
        assert answer.status_code == 200, (origin, answer.text)
    # The defaults still hold beside the listed names.
    assert send("GET", "/v1/models", host=f"localhost:{port}").status_code == 200
    assert send("GET", "/v1/models", host="evil.example").status_code == 403
    assert send("GET", "/v1/models", host="hearth.internal.evil").status_code == 403


def test_a_non_loopback_bind_takes_any_host_but_still_refuses_foreign_origins(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """Off loopback, keys guard the server (here --no-auth stands in for them): any name may
    reach it, but a web page of another origin still may not drive it."""
    server = _start(start_hearth, upstream, tmp_path, "", "--host", "0.0.0.0", "--no-auth")
    send = sender(server)
    assert send("GET", "/v1/models", host="gpu-box.lan:8080").status_code == 200
    answer = send("POST", "/admin/reload", host="gpu-box.lan", origin="http://evil.example")
    assert answer.status_code == 403
    assert error_of(answer)[1] == "origin_not_allowed"
    server.stop()


def test_the_guard_answers_before_keys_and_bodies_are_looked_at(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """Inside the observer, outside authentication and the body limit: a page gets 403 for what
    it is, not 401 or 413, and learns nothing about keys."""
    server = _start(
        start_hearth,
        upstream,
        tmp_path,
        "auth: {admin_key: env:TEST_ADMIN_KEY}\nmax_request_bytes: 2048\n",
        env={"TEST_ADMIN_KEY": "sk-admin-guard-0d1e"},
    )
    send = sender(server)
    big = {"model": "cloud", "prompt": "x" * 4096}
    admin = {"authorization": "Bearer sk-admin-guard-0d1e"}
    assert send("POST", "/v1/completions", big, **admin).status_code == 413
    assert send("POST", "/v1/chat/completions", CHAT).status_code == 401
    for body in (CHAT, big):
        answer = send("POST", "/v1/chat/completions", body, origin="http://evil.example")
        assert answer.status_code == 403
        assert error_of(answer)[1] == "origin_not_allowed"
    server.stop()
