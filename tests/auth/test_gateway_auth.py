"""Keys, scopes, limits and budgets through a real `hearth serve` gateway (SQLite file)."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from hearth.budget import Budget
from support.access import CHAT, admin, chat, create_key, hearth_cli, query
from support.hearth_server import HearthServer
from support.waiting import wait_for


def test_requests_without_a_key_are_refused(gateway: HearthServer) -> None:
    answer = chat(gateway, None)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    assert chat(gateway, "hk_00000000_wrong").status_code == 401
    assert httpx.get(f"{gateway.base_url}/v1/models").status_code == 401
    assert httpx.get(f"{gateway.base_url}/health").status_code == 200  # probes stay open


def test_key_lifecycle_through_the_cli(
    gateway: HearthServer, db_url: str, config_path: Path
) -> None:
    config = ["--config", str(config_path)]
    created = hearth_cli("keys", "create", "--name", "cli-user", *config)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("hk_")
    prefix = key[:11]
    assert prefix in created.stderr
    # Only the hash is stored.
    assert not [row for row in query(db_url, "SELECT * FROM api_keys") if key in map(str, row)]
    wait_for(lambda: chat(gateway, key).status_code == 200)  # within refresh_interval
    listed = hearth_cli("keys", "ls", *config)
    assert prefix in listed.stdout and "cli-user" in listed.stdout and key not in listed.stdout
    revoked = hearth_cli("keys", "revoke", prefix, *config)
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: chat(gateway, key).status_code == 401)
    answer = chat(gateway, key)
    assert "revoked" in answer.json()["error"]["message"]
    assert "revoked" in hearth_cli("keys", "ls", "--all", *config).stdout


def test_key_lifecycle_through_admin_endpoints(gateway: HearthServer) -> None:
    created = admin(gateway, "POST", "/admin/keys", json={"name": "api-user", "rpm": 100})
    assert created.status_code == 200, created.text
    key = created.json()["key"]
    assert chat(gateway, key).status_code == 200  # at once on the replica that made it
    listed = admin(gateway, "GET", "/admin/keys").json()["data"]
    mine = [k for k in listed if k["prefix"] == created.json()["prefix"]]
    assert mine and "key" not in mine[0] and "hash" not in mine[0]
    assert admin(gateway, "DELETE", f"/admin/keys/{created.json()['prefix']}").status_code == 200
    assert chat(gateway, key).status_code == 401
    actions = [e["action"] for e in admin(gateway, "GET", "/admin/audit").json()["data"]]
    assert "key.create" in actions and "key.revoke" in actions


def test_admin_endpoints_refuse_inference_keys(gateway: HearthServer, db_url: str) -> None:
    _, key = create_key(db_url, "not-admin")
    wait_for(lambda: chat(gateway, key).status_code == 200)
    for path in ("/admin/keys", "/admin/usage", "/admin/models/loaded"):
        refused = httpx.get(f"{gateway.base_url}{path}", headers={"authorization": f"Bearer {key}"})
        assert refused.status_code == 403, path
        assert "admin" in refused.json()["error"]["message"]
        assert httpx.get(f"{gateway.base_url}{path}").status_code == 401
    assert admin(gateway, "GET", "/admin/keys").status_code == 200
    # Ollama's model management is admin work too.
    removal = httpx.request(
        "DELETE",
        f"{gateway.base_url}/api/delete",
        json={"model": "free"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert removal.status_code == 403


def test_admin_actions_are_audited(gateway: HearthServer) -> None:
    assert admin(gateway, "POST", "/admin/reload").status_code == 200
    wait_for(
        lambda: any(
            e["action"] == "settings.reload" and e["actor"] == "admin-api"
            for e in admin(gateway, "GET", "/admin/audit").json()["data"]
        )
    )


def test_keys_in_x_api_key_and_through_every_api_family(gateway: HearthServer, db_url: str) -> None:
    _, key = create_key(db_url, "families")
    wait_for(lambda: chat(gateway, key).status_code == 200)
    assert chat(gateway, None, **{"x-api-key": key}).status_code == 200
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0)
    message = client.messages.create(
        model="free", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content
    client.close()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(
            base_url=gateway.base_url, api_key="bad", max_retries=0
        ).messages.create(model="free", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    ollama_answer = httpx.post(
        f"{gateway.base_url}/api/chat",
        json={"model": "free", "stream": False, **CHAT},
        headers={"authorization": f"Bearer {key}"},
    )
    assert ollama_answer.status_code == 200, ollama_answer.text
    refused = httpx.post(f"{gateway.base_url}/api/chat", json={"model": "free", **CHAT})
    assert refused.status_code == 401
    assert "error" in refused.json()  # in Ollama's error shape


def test_scope_denial_names_the_model(gateway: HearthServer, db_url: str) -> None:
    _, key = create_key(db_url, "scoped", models=["free*"])
    wait_for(lambda: chat(gateway, key).status_code == 200)
    assert chat(gateway, key, model="free-alias").status_code == 200
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="other", messages=CHAT["messages"])  # type: ignore[arg-type]
    assert denied.value.status_code == 403
    assert "'other'" in str(denied.value)
    # The key sees only the models it may use.
    listed = {model.id for model in client.models.list().data}
    assert listed and all(name.startswith("free") for name in listed), listed
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")
    client.close()


def test_rpm_is_enforced_with_openai_headers(gateway: HearthServer, db_url: str) -> None:
    _, key = create_key(db_url, "rpm", rpm=2)
    wait_for(lambda: chat(gateway, key).status_code in (200, 429))
    first = chat(gateway, key)  # the second request of the minute (wait_for sent one)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    refused = chat(gateway, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # Counted in the metrics, by reason.
    metrics = httpx.get(f"{gateway.base_url}/metrics").text
    assert re.search(r'^hearth_rejections_total\{reason="rate_limit"\} [1-9]', metrics, re.M)


def test_tpm_is_enforced(gateway: HearthServer, db_url: str) -> None:
    # Each answer of the scripted upstream uses 8 tokens.
    _, key = create_key(db_url, "tpm", tpm=10)
    wait_for(lambda: chat(gateway, key).status_code == 200)
    time.sleep(0.2)  # tokens are counted as the answer ends
    second = chat(gateway, key)
    assert second.status_code == 200
    assert second.headers["x-ratelimit-limit-tokens"] == "10"
    assert second.headers["x-ratelimit-remaining-tokens"] == "2"
    time.sleep(0.2)
    refused = chat(gateway, key)
    assert refused.status_code == 429
    assert "tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "retry-after" in refused.headers


def test_team_rpm_counts_every_key_of_the_team(gateway: HearthServer, db_url: str) -> None:
    _, one = create_key(db_url, "blue-1", team="blue")
    _, two = create_key(db_url, "blue-2", team="blue")
    # Wait on the later key: a refresh that knows it knows the earlier one too (waiting on the
    # earlier one could see a refresh that ran between the two creations).
    wait_for(lambda: chat(gateway, two).status_code == 200)  # team blue: 3 per minute
    assert chat(gateway, one).status_code == 200
    assert chat(gateway, two).status_code == 200
    refused = chat(gateway, one)
    assert refused.status_code == 429
    assert "team blue" in refused.json()["error"]["message"]


def test_token_budget_exhaustion_is_insufficient_quota(gateway: HearthServer, db_url: str) -> None:
    _, key = create_key(db_url, "budget", budget=Budget.parse("10tokens/day"))
    wait_for(lambda: chat(gateway, key).status_code == 200)
    assert chat(gateway, key).status_code == 200  # 8 of 10 spent before it
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="free", messages=CHAT["messages"])  # type: ignore[arg-type]
    client.close()
    assert refused.value.status_code == 429
    assert refused.value.code == "insufficient_quota"
    assert refused.value.type == "insufficient_quota"


def test_cost_budget_uses_the_deployments_price(gateway: HearthServer, db_url: str) -> None:
    # pricey: 5 prompt + 3 completion tokens at 5/15 per million = 0.00007 a request.
    _, key = create_key(db_url, "cost", budget=Budget.parse("$0.0001/day"))
    wait_for(lambda: chat(gateway, key, model="pricey").status_code == 200)
    assert chat(gateway, key, model="pricey").status_code == 200
    refused = chat(gateway, key, model="pricey")
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "insufficient_quota"


def test_expired_and_revoked_keys_get_401(gateway: HearthServer, db_url: str) -> None:
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=1)
    _, expired = create_key(db_url, "expired", expires_at=past)
    soon = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=3)
    _, expiring = create_key(db_url, "expiring", expires_at=soon)
    wait_for(lambda: chat(gateway, expiring).status_code == 200)
    answer = chat(gateway, expired)
    assert answer.status_code == 401
    assert "expired" in answer.json()["error"]["message"]
    wait_for(lambda: chat(gateway, expiring).status_code == 401, timeout=6)


def test_usage_rows_and_report(gateway: HearthServer, db_url: str) -> None:
    record, key = create_key(db_url, "usage-report")
    wait_for(lambda: chat(gateway, key).status_code == 200)
    for _ in range(3):
        assert chat(gateway, key, model="pricey").status_code == 200
    report = admin(gateway, "GET", "/admin/usage", params={"by": "key", "since": "1h"})
    assert report.status_code == 200
    mine = [r for r in report.json()["data"] if (r["key"] or "").startswith(record.prefix)]
    assert mine[0]["requests"] == 4
    assert mine[0]["prompt_tokens"] == 20 and mine[0]["completion_tokens"] == 12
    assert mine[0]["cost"] == pytest.approx(3 * 0.00007)
    rows = query(
        db_url,
        "SELECT request_id, model, deployment, status, latency_ms, cost FROM usage "
        f"WHERE key_id = '{record.id}'",
    )
    assert len(rows) == 4 and all(r.status == 200 and r.latency_ms > 0 for r in rows)
    assert {r.deployment for r in rows} == {"free", "pricey"}
