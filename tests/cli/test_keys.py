"""`hearth keys create | ls | revoke` and `hearth usage`, against a real SQLite file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner

from hearth.cli.main import cli
from hearth.db.engine import utcnow
from hearth.usage.writer import UsageWriter
from support.access import query, run_db


def invoke(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    code, out, err = invoke(
        tmp_path,
        "keys", "create", "--name", "ci", "--models", "gpt-*", "--models", "llama*",
        "--rpm", "60", "--tpm", "1000", "--budget", "$5/month", "--expires", "30d",
        "--team", "blue",
    )  # fmt: skip
    assert code == 0, err
    key = out.strip()
    assert key.startswith("hk_") and "shown only now" in err
    rows = query(f"sqlite:///{tmp_path / 'hearth.db'}", "SELECT * FROM api_keys")
    assert len(rows) == 1 and key not in [str(v) for v in rows[0]]
    code, listing, _ = invoke(tmp_path, "keys", "ls", "--json")
    [entry] = json.loads(listing)
    assert entry["prefix"] == key[:11]
    assert entry["models"] == ["gpt-*", "llama*"] and entry["team"] == "blue"
    assert entry["rpm"] == 60 and entry["tpm"] == 1000 and entry["budget"] == "$5/month"
    assert entry["state"] == "active" and entry["expires_at"] > utcnow().isoformat()
    assert key not in listing


def test_revoke_by_prefix_or_name(tmp_path: Path) -> None:
    invoke(tmp_path, "keys", "create", "--name", "one")
    invoke(tmp_path, "keys", "create", "--name", "two")
    code, out, _ = invoke(tmp_path, "keys", "revoke", "one")
    assert code == 0 and "revoked" in out
    code, out, err = invoke(tmp_path, "keys", "revoke", "one")
    assert code != 0 and "no active key" in err
    _, table, _ = invoke(tmp_path, "keys", "ls")
    assert "two" in table and "one" not in table
    _, table, _ = invoke(tmp_path, "keys", "ls", "--all")
    assert "revoked" in table
    actions = [
        r.action
        for r in query(f"sqlite:///{tmp_path / 'hearth.db'}", "SELECT action FROM audit_log")
    ]
    assert actions.count("key.create") == 2 and actions.count("key.revoke") == 1


def test_bad_options_are_named(tmp_path: Path) -> None:
    code, _, err = invoke(tmp_path, "keys", "create", "--name", "x", "--budget", "lots")
    assert code == 2 and "AMOUNT/PERIOD" in err
    code, _, err = invoke(tmp_path, "keys", "create", "--name", "x", "--expires", "soon")
    assert code == 2 and "not a date" in err
    code, out, _ = invoke(tmp_path, "keys", "ls")
    assert "no keys" in out


def test_usage_table_and_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hearth.db'}"

    async def fill(engine: object) -> None:
        writer = UsageWriter(engine)  # type: ignore[arg-type]
        for model, cost in (("a", 1.0), ("a", 1.0), ("b", 5.0)):
            writer.record(
                {
                    "time": utcnow() - dt.timedelta(minutes=5),
                    "request_id": "r", "key_id": None, "team": None, "model": model,
                    "deployment": f"{model}-dep", "prompt_tokens": 2, "completion_tokens": 1,
                    "cached": False, "status": 200, "latency_ms": 1.0, "ttft_ms": None,
                    "cost": cost,
                }
            )  # fmt: skip
        await writer.flush()

    run_db(url, fill)
    code, out, err = invoke(tmp_path, "usage", "--by", "deployment", "--since", "1h", "--json")
    assert code == 0, err
    assert json.loads(out) == [
        {"deployment": "b-dep", "requests": 1, "errors": 0, "prompt_tokens": 2,
         "completion_tokens": 1, "cost": 5.0},
        {"deployment": "a-dep", "requests": 2, "errors": 0, "prompt_tokens": 4,
         "completion_tokens": 2, "cost": 2.0},
    ]  # fmt: skip
    code, table, _ = invoke(tmp_path, "usage", "--by", "model")
    assert table.splitlines()[0].split() == [
        "MODEL", "REQUESTS", "ERRORS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "COST",
    ]  # fmt: skip
    code, _, err = invoke(tmp_path, "usage", "--since", "yesterday-ish")
    assert code == 2 and "--since" in err
