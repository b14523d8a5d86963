"""POST /v1/responses, answered by routing the equivalent chat request down the one pipeline;
GET /v1/responses/{id}, GET /v1/responses/{id}/input_items and DELETE /v1/responses/{id} over
the stored answers, each visible to the key that created it only."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from hearth.api.gateway import gateway_headers, run_pipeline
from hearth.api.relay import SSE_HEADERS, RelayResponse
from hearth.api.responses.protocol import ResponsesRequest
from hearth.api.responses.stream import ResponseEvents
from hearth.api.responses.translate import (
    Item,
    chat_body,
    input_items,
    new_id,
    output_items,
    response_object,
    status_of,
)
from hearth.api.scope import caller, resolve_visible
from hearth.api.services import services_of
from hearth.conversations.store import ResponseStore, StoredResponse
from hearth.errors import APIError, ResponseNotFound
from hearth.wire.base import parse_request
from hearth.wire.chat import ChatCompletionRequest
from hearth.wire.outcome import Completion

log = logging.getLogger(__name__)

router = APIRouter(tags=["responses"])


def _owner(request: Request) -> str | None:
    key = caller(request)
    return None if key is None else key.id


def _store(request: Request) -> ResponseStore:
    return services_of(request).responses


def _not_found(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"No response found with id '{response_id[:64]}'.")


@router.post("/v1/responses", summary="Responses API: create a response")
async def create_response(request: Request) -> Response:
    given = parse_request(ResponsesRequest, await request.body())
    resolve_visible(request, services_of(request).catalogue, given.model)  # 404 first
    owner = _owner(request)
    items = input_items(given)
    earlier: list[Item] = []
    if given.previous_response_id is not None:
        found = await _store(request).conversation(given.previous_response_id, owner)
        if found is None:
            raise ResponseNotFound(
                f"Previous response with id '{given.previous_response_id[:64]}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        earlier = found
    payload = parse_request(
        ChatCompletionRequest, json.dumps(chat_body(given, [*earlier, *items])).encode()
    )
    outcome = await run_pipeline(request, payload, "/v1/chat/completions", capability="chat")
    headers = gateway_headers(request, outcome)
    response_id, created_at = new_id("resp"), int(time.time())

    async def finish(body: dict[str, Any]) -> None:
        if given.store:
            await _save(request, given, owner, items, body)

    if isinstance(outcome, Completion):
        output, finish_reason = output_items(outcome.body)
        body = response_object(
            given,
            response_id,
            created_at,
            status=status_of(finish_reason),
            output=output,
            usage=outcome.body.get("usage") or {},
            finish_reason=finish_reason,
        )
        await finish(body)
        return JSONResponse(body, headers=headers)
    events = ResponseEvents(given, response_id, created_at, finish)
    return RelayResponse(
        events.events(outcome),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
        background=BackgroundTask(outcome.aclose),
        trace=request.state.trace,
        cut_event=events.cut_event,
    )


async def _save(
    request: Request,
    given: ResponsesRequest,
    owner: str | None,
    items: list[Item],
    body: dict[str, Any],
) -> None:
    """Store the answer; if the database is down the client still gets it (the model's work is
    done), and the failure is logged."""
    stored = StoredResponse(
        id=body["id"],
        owner=owner,
        model=given.model,
        status=body["status"],
        input_items=items,
        body=body,
        previous_response_id=given.previous_response_id,
    )
    try:
        await _store(request).save(stored)
    except APIError as exc:
        log.warning("response %s not stored: %s", stored.id, exc.message)


@router.get("/v1/responses/{response_id}", summary="Responses API: retrieve a response")
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    body = await _store(request).get(response_id, _owner(request))
    if body is None:
        raise _not_found(response_id)
    return body


@router.get(
    "/v1/responses/{response_id}/input_items", summary="Responses API: list a response's input"
)
async def list_input_items(
    request: Request,
    response_id: str,
    after: str | None = Query(None, max_length=128),
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = Query("desc"),
) -> dict[str, Any]:
    page = await _store(request).input_items(
        response_id, _owner(request), after=after, limit=limit, order=order
    )
    if page is None:
        raise _not_found(response_id)
    return {
        "object": "list",
        "data": page.data,
        "first_id": page.data[0]["id"] if page.data else None,
        "last_id": page.data[-1]["id"] if page.data else None,
        "has_more": page.has_more,
    }


@router.delete("/v1/responses/{response_id}", summary="Responses API: delete a response")
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    if not await _store(request).delete(response_id, _owner(request)):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
