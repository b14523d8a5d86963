"""The dashboard at /ui, end to end: a real `hearth serve` (the bundled model on the real engine,
plus remote deployments on a scripted upstream) and the page in headless Chromium (Debian's
`chromium`, driven by Playwright). Set DASHBOARD_SCREENSHOTS=docs to refresh the screenshots in
docs/ (the test then runs traffic for longer, so the charts have a shape)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright

from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for

pytestmark = pytest.mark.engine

UPSTREAM_KEY = "sk-dashboard-upstream-5e1d"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream().start()
    server.set_default("flaky", "status:503")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dashboard_hearth(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    """The bundled model (preloaded), two remote deployments and a route over local and remote."""
    config = tmp_path_factory.mktemp("dashboard") / "hearth.yaml"
    config.write_text(
        "routing:\n"
        "  retries: 0\n"
        "  health_check_interval: 0\n"
        "  breaker: {failures: 2, window: 60, cooldown: 600}\n"
        "deployments:\n"
        "  cloud-mini:\n"
        f"    url: {upstream.url('cloud-mini')}\n"
        "    model: gpt-4o-mini\n"
        "    api_key: env:TEST_UPSTREAM_KEY\n"
        "    max_concurrency: 8\n"
        "    price: {input: 0.15, output: 0.6}\n"
        "  flaky:\n"
        f"    url: {upstream.url('flaky')}\n"
        "routes:\n"
        "  assistant: {deployments: [gemma-3-270m, cloud-mini]}\n"
        "savings:\n"
        "  machines:\n"
        "    workstation: {deployments: [gemma-3-270m], hardware_price: 2000, lifetime_years: 3,"
        " power_watts: 150, power_price: 0.3}\n"
    )
    return start_hearth("--config", str(config), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is needed for the dashboard tests: run `make setup` (as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, dashboard_hearth: HearthServer) -> Iterator[Page]:
    context = browser.new_context(
        base_url=dashboard_hearth.base_url, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"the page raised: {errors}"


def chat(server: HearthServer, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json={**body, **extra}, timeout=60)


def open_the_breaker(server: HearthServer) -> None:
    for _ in range(2):
        assert chat(server, "flaky").status_code >= 500


class Traffic:
    """Chat requests in background threads: one after another to the remote deployment, and
    streamed ones to the local model, which takes longer."""

    def __init__(self, server: HearthServer) -> None:
        self.server = server
        self.sent = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=("cloud-mini", False, 0.2), daemon=True),
            threading.Thread(target=self._run, args=("gemma-3-270m", True, 0.5), daemon=True),
        ]

    def _run(self, model: str, stream: bool, pause: float) -> None:
        while not self._stop.is_set():
            chat(self.server, model, stream=stream).raise_for_status()
            self.sent += 1
            self._stop.wait(pause)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def figure(page: Page, name: str) -> float:
    text = page.locator(f"#fig-{name}").inner_text().split("/")[0].strip()
    return 0.0 if text == "\N{EN DASH}" else float(text.rstrip("kM"))


def test_the_page_and_its_assets_are_served(dashboard_hearth: HearthServer) -> None:
    base = dashboard_hearth.base_url
    for path in ("/ui", "/ui/"):
        page = httpx.get(base + path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/app.js"' in page.text
    assert httpx.get(base + "/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(base + "/ui/style.css").headers["content-type"].startswith("text/css")
    for missing in ("/ui/nothing.js", "/ui/..%2Fapp.py", "/ui/__init__.py"):
        answer = httpx.get(base + missing)
        assert answer.status_code == 404, missing
        assert "error" in answer.json()


def test_admin_deployments_shows_breakers_and_engine_state_but_no_key(
    dashboard_hearth: HearthServer,
) -> None:
    open_the_breaker(dashboard_hearth)
    chat(dashboard_hearth, "cloud-mini", stream=True).raise_for_status()
    answer = httpx.get(f"{dashboard_hearth.base_url}/admin/deployments")
    assert answer.status_code == 200
    assert UPSTREAM_KEY not in answer.text
    cards = {card["name"]: card for card in answer.json()["data"]}
    assert set(cards) == {"cloud-mini", "flaky", "gemma-3-270m", "all-minilm-l6-v2"}
    assert cards["flaky"]["breaker"] == "open"
    assert cards["flaky"]["breaker_retry_after_s"] > 500
    mini = cards["cloud-mini"]
    assert (mini["kind"], mini["breaker"], mini["capacity"]) == ("remote", "closed", 8)
    assert mini["url"].endswith("/cloud-mini/v1")
    assert mini["ttft_avg_ms"] > 0
    assert mini["price"] == {"input": 0.15, "output": 0.6, "audio_minute": 0.0}
    gemma = cards["gemma-3-270m"]
    assert (gemma["kind"], gemma["state"]) == ("local", "ready")
    assert gemma["memory_bytes"] > 100_000_000
    assert gemma["engine"]["slots"] >= 1


def test_admin_stats_counts_requests_tokens_and_latency(dashboard_hearth: HearthServer) -> None:
    url = f"{dashboard_hearth.base_url}/admin/stats"
    before = httpx.get(url).json()
    for _ in range(3):
        chat(dashboard_hearth, "cloud-mini").raise_for_status()
    chat(dashboard_hearth, "gemma-3-270m", stream=True).raise_for_status()
    httpx.get(url)  # the dashboard's own polling is not counted
    after = httpx.get(url).json()
    assert after["requests"] == before["requests"] + 4
    assert after["tokens_out"] >= before["tokens_out"] + 3 * 3  # the upstream says 3 each
    assert after["models"]["cloud-mini"]["requests"] >= 3
    duration = after["latency"]["request_duration"]
    assert duration["count"] >= after["requests"]
    assert 0 < duration["p50"] <= duration["p95"] <= duration["p99"]
    assert after["latency"]["time_to_first_token"]["count"] >= 1


def test_the_dashboard_shows_models_deployments_and_live_charts(
    page: Page, dashboard_hearth: HearthServer
) -> None:
    open_the_breaker(dashboard_hearth)
    page.goto("/ui")
    expect(page.locator("#connection")).to_have_text("online")

    def row(table: str, name: str) -> Locator:
        return page.locator(f"#{table} tbody tr[data-name='{name}']")

    expect(row("models", "gemma-3-270m").locator(".badge")).to_have_text("ready")
    expect(row("models", "gemma-3-270m")).to_contain_text("MiB")
    expect(row("models", "assistant").locator(".badge")).to_have_text("route")
    expect(row("models", "cloud-mini").locator(".badge")).to_have_text("remote")

    expect(row("deployments", "flaky").locator(".badge")).to_have_text("open")
    expect(row("deployments", "cloud-mini").locator(".badge")).to_have_text("closed")
    expect(row("deployments", "gemma-3-270m").locator(".badge")).to_have_text("closed")
    expect(page.locator("#deployments")).not_to_contain_text(UPSTREAM_KEY)

    with Traffic(dashboard_hearth) as traffic:
        # Rates come from the difference of two polls (2 s apart) that saw requests between them.
        page.wait_for_function(
            """() => ['chart-rps', 'chart-tps'].every(id => {
                 const chart = document.getElementById(id).dataset;
                 return Number(chart.points) >= 2 && Number(chart.peak) > 0;
               })""",
            timeout=20_000,
        )
        if SCREENSHOTS:  # while the traffic runs: live figures, a chart with a shape
            page.wait_for_timeout(40_000)
            page.screenshot(path=str(Path(SCREENSHOTS) / "dashboard.png"), full_page=True)
    assert traffic.sent > 0
    assert float(page.locator("#chart-rps").get_attribute("data-peak") or 0) > 0
    assert int(page.locator("#chart-rps").get_attribute("data-points") or 0) >= 2
    assert figure(page, "requests") > 0
    assert figure(page, "tokens") > 0
    # The line is really drawn: the chart's own colour (#d9541e) appears on the canvas. Nothing
    # else there is that colour; edge pixels are blended, hence the tolerance. With two or three
    # points the line is a short stroke at the right edge: a few pixels, not many.
    drawn = page.evaluate(
        """() => {
          const c = document.getElementById('chart-rps');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 0; i < d.length; i += 4) {
            const near = Math.abs(d[i] - 0xd9) < 24 && Math.abs(d[i + 1] - 0x54) < 24
              && Math.abs(d[i + 2] - 0x1e) < 24;
            if (near && d[i + 3] > 0) n++;
          }
          return n;
        }"""
    )
    assert drawn >= 4

    latency = page.locator("#latency tbody tr", has_text="request (whole answer)")
    expect(latency.locator("td").nth(1)).not_to_have_text("0")
    expect(latency.locator("td").nth(2)).to_contain_text("s")  # "12 ms" or "1.02 s"

    # The requests above are accounted, by model and by key (none: keys are off).
    assert httpx.get(f"{dashboard_hearth.base_url}/admin/usage").status_code == 200
    expect(page.locator("#usage-note")).to_have_text("")
    expect(row("usage-model", "flaky")).to_be_visible()
    expect(page.locator("#usage-key tbody")).to_contain_text("(no key)")


def test_the_playground_streams_a_reply(page: Page, dashboard_hearth: HearthServer) -> None:
    page.goto("/ui")
    expect(page.locator("#chat-model option[value='gemma-3-270m']")).to_have_count(1)
    # Only chat models are offered, routes and remote deployments included.
    options = page.locator("#chat-model option").all_inner_texts()
    assert {"gemma-3-270m", "assistant", "cloud-mini"} <= set(options)
    page.select_option("#chat-model", "gemma-3-270m")
    page.fill("#chat-max-tokens", "48")
    page.fill("#chat-prompt", "Write a short story about a lighthouse.")
    # Record the log's length each time it changes, as the user would see the reply grow.
    page.evaluate(
        """() => {
          window.logLengths = [];
          const log = document.getElementById('chat-log');
          new MutationObserver(() => window.logLengths.push(log.textContent.length))
            .observe(log, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.press("#chat-prompt", "Enter")
    reply = page.locator("#chat-log .turn[data-role='assistant']").last
    expect(reply).to_have_attribute("data-state", "done", timeout=60_000)
    lengths: list[int] = page.evaluate("window.logLengths")
    question = len("Write a short story about a lighthouse.")
    growth = [n for n in lengths if n > question]
    assert len(set(growth)) >= 3, lengths  # the reply grew chunk by chunk ...
    assert growth == sorted(growth)  # ... and only grew
    assert reply.inner_text().strip()
    expect(page.locator("#chat-log .turn[data-role='user']")).to_have_text(
        "Write a short story about a lighthouse."
    )
    expect(page.locator("#chat-stats")).to_contain_text(" out")
    expect(page.locator("#chat-send")).to_be_enabled()
    expect(page.locator("#chat-prompt")).to_have_value("")
    if SCREENSHOTS:
        page.locator("#playground").screenshot(
            path=str(Path(SCREENSHOTS) / "dashboard-playground.png")
        )


ADMIN_KEY = "sk-admin-dashboard-3c9e"


@pytest.fixture(scope="module")
def keyed_hearth(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    """Keys on (an admin key), no local model loaded, one remote deployment."""
    config = tmp_path_factory.mktemp("dashboard-keys") / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        "auth: {admin_key: env:TEST_ADMIN_KEY}\n"
        "routing: {health_check_interval: 0}\n"
        f"deployments:\n  cloud-mini: {{url: '{upstream.url('cloud-mini')}'}}\n"
    )
    return start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})


def test_with_keys_on_the_page_asks_for_the_admin_key_once_and_sends_it(
    browser: Browser, keyed_hearth: HearthServer
) -> None:
    assert httpx.get(f"{keyed_hearth.base_url}/admin/deployments").status_code == 401
    context = browser.new_context(base_url=keyed_hearth.base_url)
    page = context.new_page()
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")))
    page.goto("/ui")  # the page itself is open; what it reads is not
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.fill("#key-input", "sk-wrong")
    page.click("#key-dialog button[value='save']")
    # A refused key asks again, with the server's reason.
    expect(dialog).to_be_visible()
    expect(page.locator("#key-problem")).not_to_be_empty()
    page.fill("#key-input", ADMIN_KEY)
    page.click("#key-dialog button[value='save']")
    expect(page.locator("#connection")).to_have_text("online")
    expect(page.locator("#deployments tbody tr[data-name='cloud-mini'] .badge")).to_have_text(
        "closed"
    )
    assert page.evaluate("sessionStorage.getItem('hearth.adminKey')") == ADMIN_KEY
    sent.clear()
    page.wait_for_timeout(2500)  # later polls send the key straight away
    expect(dialog).not_to_be_visible()
    assert sent and set(sent) == {f"Bearer {ADMIN_KEY}"}
    # The playground sends it too, and each turn sends the conversation so far.
    bodies: list[Any] = []
    page.on(
        "request",
        lambda r: bodies.append(r.post_data_json) if r.url.endswith("/chat/completions") else None,
    )
    page.select_option("#chat-model", "cloud-mini")
    replies = page.locator("#chat-log .turn[data-role='assistant']")
    for turn, prompt in enumerate(("Hi", "And again?")):
        page.fill("#chat-prompt", prompt)
        page.click("#chat-send")
        expect(replies.nth(turn)).to_have_attribute("data-state", "done")
        expect(replies.nth(turn)).to_have_text("cloud-mini says hi")
    assert [m["content"] for m in bodies[-1]["messages"]] == [
        "Hi",
        "cloud-mini says hi",
        "And again?",
    ]
    page.click("#chat-new")
    expect(page.locator("#chat-log .turn")).to_have_count(0)
    context.close()


def test_usage_by_key_and_model_fills_its_tables_for_the_chosen_period(
    page: Page, dashboard_hearth: HearthServer
) -> None:
    """/admin/usage is the access issue's; its answer is played by the browser here."""
    asked: list[str] = []

    def usage(route: Route) -> None:
        asked.append(route.request.url)
        by = "key" if "by=key" in route.request.url else "model"
        name = "alice" if by == "key" else "gemma-3-270m"
        row = {by: name, "requests": 12, "prompt_tokens": 340, "completion_tokens": 99, "cost": 0.5}
        route.fulfill(json={"data": [row]})

    page.route("**/admin/usage?**", usage)
    page.goto("/ui")
    expect(page.locator("#usage-key tbody tr")).to_contain_text("alice")
    expect(page.locator("#usage-model tbody tr")).to_contain_text("gemma-3-270m")
    expect(page.locator("#usage-model thead")).to_contain_text("completion tokens")
    expect(page.locator("#usage-note")).to_have_text("")
    page.select_option("#usage-period", "7d")
    expect(page.locator("#usage-key tbody tr")).to_contain_text("12")
    assert any("since=7d" in url for url in asked)


def test_the_savings_panel_shows_what_local_tokens_saved(
    page: Page, dashboard_hearth: HearthServer
) -> None:
    """/admin/savings on real usage: the local model's tokens against the cloud reference, the
    machine's throughput and break-even; the remote deployment's tokens are not local."""
    chat(dashboard_hearth, "gemma-3-270m").raise_for_status()
    chat(dashboard_hearth, "cloud-mini").raise_for_status()

    def local_figures() -> dict[str, Any] | None:
        url = f"{dashboard_hearth.base_url}/admin/savings?by=model&since=30d"
        answer = httpx.get(url).json()
        assert "data" in answer, answer
        rows = answer["data"]
        return next((r for r in rows if r["model"] == "gemma-3-270m"), None)

    # The page reads savings once at load (then every 30 s): wait for the usage to be written.
    wait_for(local_figures, timeout=20, what="the local model's usage in /admin/savings")
    figures = local_figures()
    assert figures is not None
    assert figures["local_tokens"] > 0 and figures["cloud_cost"] > 0
    page.goto("/ui")
    gemma = page.locator("#savings tbody tr[data-name='gemma-3-270m']")
    expect(gemma).to_be_visible()
    expect(gemma.locator("td").nth(3)).to_have_text(f"${figures['cloud_cost']:.4f}")
    expect(page.locator("#savings tbody")).not_to_contain_text("cloud-mini")
    expect(page.locator("#savings-note")).to_contain_text("openai/gpt-4o-mini")
    expect(page.locator("#fig-saved")).to_contain_text("$")
    machine = page.locator("#savings-machines tbody tr[data-name='workstation']")
    expect(machine.locator("td").nth(1)).to_contain_text("$")  # its $/hour
    expect(machine.locator("td").nth(2)).not_to_have_text("not measured yet")
    expect(machine.locator("td").nth(6)).to_have_text("$2000")
    expect(machine.locator("td").nth(7)).not_to_have_text("\N{EN DASH}")  # a break-even
    page.select_option("#savings-by", "key")
    expect(page.locator("#savings-by-head")).to_have_text("key")
    expect(page.locator("#savings tbody")).to_contain_text("(no key)")
    if SCREENSHOTS:
        page.locator("#savings-panel").screenshot(
            path=str(Path(SCREENSHOTS) / "dashboard-savings.png")
        )


def test_a_loaded_model_is_unloaded_from_the_page(
    browser: Browser, keyed_hearth: HearthServer
) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    body = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}]}
    httpx.post(
        f"{keyed_hearth.base_url}/v1/chat/completions",
        json={**body, "max_tokens": 2},
        headers=admin,
        timeout=120,
    ).raise_for_status()  # loads it
    context = browser.new_context(base_url=keyed_hearth.base_url)
    # A key already in this tab's storage is used without asking.
    context.add_init_script(f"sessionStorage.setItem('hearth.adminKey', '{ADMIN_KEY}')")
    page = context.new_page()
    page.goto("/ui")
    model = page.locator("#models tbody tr[data-name='gemma-3-270m']")
    expect(model.locator(".badge")).to_have_text("ready")
    expect(page.locator("#models-summary")).to_contain_text("1 loaded")
    model.get_by_role("button", name="unload").click()
    expect(model.locator(".badge")).to_have_text("not loaded")
    expect(page.locator("#models-summary")).to_contain_text("0 loaded")
    expect(page.locator("#key-dialog")).not_to_be_visible()
    loaded = httpx.get(f"{keyed_hearth.base_url}/admin/models/loaded", headers=admin).json()
    assert loaded["data"] == []
    context.close()
