"""The store of Responses API answers against a real, migrated SQLite file and PostgreSQL
database: saved and read back by their owner only, conversations followed back through
previous_response_id, input items paged, deletion, pruning after the retention, and ids of the
wrong form never looked up."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.config import Settings
from hearth.conversations.store import ResponseStore, StoredResponse, is_response_id
from hearth.db.engine import create_engine, migrate, utcnow
from support.access import pg_database, reachable


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hearth.db'}"
        return
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    with pg_database() as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=db_url))
    await migrate(engine)
    yield engine
    await engine.dispose()


def new_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def message(role: str, text: str) -> dict[str, Any]:
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": role, "content": text}


def stored(
    owner: str | None,
    said: str,
    answered: str,
    previous: str | None = None,
    created_at: dt.datetime | None = None,
) -> StoredResponse:
    response_id = new_id()
    return StoredResponse(
        id=response_id,
        owner=owner,
        model="m",
        status="completed",
        input_items=[message("user", said)],
        body={"id": response_id, "object": "response", "output": [message("assistant", answered)]},
        previous_response_id=previous,
        created_at=created_at or utcnow(),
    )


async def test_a_response_is_read_back_by_its_owner_only(engine: AsyncEngine) -> None:
    store = ResponseStore(engine, 30)
    mine, open_one = stored("key1", "hi", "hello"), stored(None, "hi", "hello")
    await store.save(mine)
    await store.save(open_one)
    assert (await store.get(mine.id, "key1")) == mine.body
    assert await store.get(mine.id, "key2") is None
    assert await store.get(mine.id, None) is None  # no key is not every key
    assert (await store.get(open_one.id, None)) == open_one.body
    assert await store.get(open_one.id, "key1") is None
    assert await store.delete(mine.id, "key2") is False
    assert await store.delete(mine.id, "key1") is True
    assert await store.get(mine.id, "key1") is None
    assert await store.delete(mine.id, "key1") is False


async def test_a_conversation_is_followed_back_oldest_first(engine: AsyncEngine) -> None:
    store = ResponseStore(engine, 30)
    first = stored("k", "one", "1")
    second = stored("k", "two", "2", previous=first.id)
    third = stored("k", "three", "3", previous=second.id)
    for response in (first, second, third):
        await store.save(response)
    items = await store.conversation(third.id, "k")
    assert items is not None
    assert [item["content"] for item in items] == ["one", "1", "two", "2", "three", "3"]
    assert await store.conversation(third.id, "other") is None
    await store.delete(first.id, "k")  # a deleted turn: the conversation starts after it
    items = await store.conversation(third.id, "k")
    assert items is not None and [item["content"] for item in items] == ["two", "2", "three", "3"]


async def test_input_items_are_paged(engine: AsyncEngine) -> None:
    store = ResponseStore(engine, 30)
    response = stored("k", "x", "y")
    response.input_items = [message("user", str(i)) for i in range(5)]
    await store.save(response)
    ids = [item["id"] for item in response.input_items]
    page = await store.input_items(response.id, "k", limit=2, order="asc")
    assert page is not None and [i["id"] for i in page.data] == ids[:2] and page.has_more
    page = await store.input_items(response.id, "k", limit=2, order="asc", after=ids[1])
    assert page is not None and [i["id"] for i in page.data] == ids[2:4] and page.has_more
    page = await store.input_items(response.id, "k", limit=10, order="asc", after=ids[3])
    assert page is not None and [i["id"] for i in page.data] == ids[4:] and not page.has_more
    page = await store.input_items(response.id, "k")  # newest first, as OpenAI
    assert page is not None and [i["id"] for i in page.data] == ids[::-1]
    assert await store.input_items(response.id, "other") is None


async def test_old_responses_are_pruned_after_the_retention(engine: AsyncEngine) -> None:
    now = utcnow()
    old = stored("k", "old", "o", created_at=now - dt.timedelta(days=8))
    recent = stored("k", "new", "n", created_at=now - dt.timedelta(days=6))
    forever = ResponseStore(engine, 0)
    await forever.save(old)
    await forever.save(recent)
    assert await forever.prune(now) == 0
    store = ResponseStore(engine, 7)
    assert await store.prune(now) == 1
    assert await store.get(old.id, "k") is None and await store.get(recent.id, "k") is not None


class Untouchable:
    """An engine that fails the test if the store asks it anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was asked ({name}) about an impossible id")


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "resp_../x", "resp_" + "g" * 32, "resp_" + "a" * 33, "", "x' OR 1"]
)
async def test_ids_of_the_wrong_form_are_never_looked_up(bad: str) -> None:
    store = ResponseStore(Untouchable(), 30)  # type: ignore[arg-type]
    assert not is_response_id(bad)
    assert await store.get(bad, None) is None
    assert await store.conversation(bad, None) is None
    assert await store.input_items(bad, None) is None
    assert await store.delete(bad, None) is False
