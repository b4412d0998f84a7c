"""The admin API, mounted at ``/api`` behind :class:`~.middleware.BearerAuth`.

Read-only views of what the store keeps, as JSON, in the shapes of the store's typed views
(store/reads.py) and of the OpenAPI document (openapi.py). A bad ``limit`` or ``cursor`` raises
:class:`BadQuery`, answered 400 with the parameter's name, by one handler for every route.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..store import Store, StoreUnavailable
from ..store.base import decode_cursor
from ..store.reads import DELIVERY_STATES
from .asgi import ASGIApp, json_response, now
from .middleware import BearerAuth, SecurityHeaders

__all__ = [
    "BadQuery",
    "PageQuery",
    "api_app",
    "message_json",
    "page_query",
    "params_object",
    "status_json",
]

MAX_LIMIT = 500


class BadQuery(ValueError):
    """A query parameter the API cannot use; the message names it."""


class PageQuery:
    __slots__ = ("cursor", "limit")

    def __init__(self, limit: int, cursor: str | None) -> None:
        self.limit = limit
        self.cursor = cursor


def page_query(request: Request, default_limit: int = 50) -> PageQuery:
    """``limit`` (1 to 500) and ``cursor`` (one this API gave), or BadQuery."""
    raw = request.query_params.get("limit")
    limit = default_limit
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise BadQuery(f"limit must be an integer from 1 to {MAX_LIMIT}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be an integer from 1 to {MAX_LIMIT}")
    cursor = request.query_params.get("cursor") or None
    if cursor:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise BadQuery("cursor is not one this API gave") from None
    return PageQuery(limit, cursor)


MAX_NUMBER = 64  # longer than any phone number or sender id


def phone_number(value: str | None, name: str) -> str:
    """A number as plivohook stores it (Plivo writes them without "+"), or BadQuery naming
    ``name``: not empty, at most 64 characters, no control characters or spaces."""
    text = (value or "").strip().removeprefix("+")
    if not text:
        raise BadQuery(f"{name} must not be empty")
    if len(text) > MAX_NUMBER or not text.isprintable() or " " in text:
        raise BadQuery(
            f"{name} must be a phone number or sender id (at most {MAX_NUMBER} characters)"
        )
    return text


def params_object(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Parameters as an object; a repeated one becomes the list of its values, in order."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            previous = result[key]
            result[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            result[key] = value
    return result


def message_json(message: Any) -> dict[str, Any]:
    """A MessageView as the API shows it (``params`` as an object)."""
    shown = dict(message)
    shown["params"] = params_object(message["params"])
    return shown


status_json = message_json  # the same shape change: a StatusView's params as an object


def _problem(status: int, reason: str) -> Response:
    return json_response({"error": reason}, status)


class AdminAPI:
    def __init__(self, store_ref: Callable[[], Store]) -> None:
        self._store = store_ref

    async def messages(self, request: Request) -> Response:
        page = page_query(request)
        params = request.query_params
        found = await self._store().list_messages(
            limit=page.limit,
            cursor=page.cursor,
            from_number=params.get("from") or None,
            to_number=params.get("to") or None,
            q=params.get("q") or None,
        )
        return json_response(
            {
                "messages": [message_json(m) for m in found.items],
                "next_cursor": found.next_cursor,
            }
        )

    async def message(self, request: Request) -> Response:
        found = await self._store().get_message(request.path_params["message_uuid"])
        if found is None:
            return _problem(404, "no message with that MessageUUID")
        return json_response(message_json(found))

    async def statuses(self, request: Request) -> Response:
        uuid = request.path_params["message_uuid"]
        history = await self._store().get_statuses(uuid)
        latest = history[-1]["status"] if history else None
        return json_response(
            {"message_uuid": uuid, "status": latest, "statuses": [status_json(s) for s in history]}
        )

    async def optouts(self, request: Request) -> Response:
        page = page_query(request)
        params = request.query_params
        found = await self._store().list_optouts(
            limit=page.limit,
            cursor=page.cursor,
            from_number=phone_number(params["from"], "from") if params.get("from") else None,
            to_number=phone_number(params["to"], "to") if params.get("to") else None,
        )
        return json_response({"optouts": found.items, "next_cursor": found.next_cursor})

    def _pair(self, request: Request) -> tuple[str, str]:
        return (
            phone_number(request.path_params["to"], "to"),
            phone_number(request.path_params["from"], "from"),
        )

    async def optout(self, request: Request) -> Response:
        if request.method == "PUT":
            return await self.add_optout(request)
        return await self.remove_optout(request)

    async def add_optout(self, request: Request) -> Response:
        to, from_ = self._pair(request)
        created = await self._store().add_optout(to, from_, now())
        return json_response({"to": to, "from": from_, "opted_out": True}, 201 if created else 200)

    async def remove_optout(self, request: Request) -> Response:
        to, from_ = self._pair(request)
        if not await self._store().remove_optout(to, from_):
            return _problem(404, "no opt-out for that pair")
        return json_response({"to": to, "from": from_, "opted_out": False})

    async def rejections(self, request: Request) -> Response:
        page = page_query(request)
        found = await self._store().list_rejections(limit=page.limit, cursor=page.cursor)
        return json_response({"rejections": found.items, "next_cursor": found.next_cursor})

    async def deliveries(self, request: Request) -> Response:
        page = page_query(request)
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in DELIVERY_STATES:
            raise BadQuery(f"state must be one of {', '.join(DELIVERY_STATES)}")
        found = await self._store().list_deliveries(  # type: ignore[attr-defined]
            limit=page.limit,
            cursor=page.cursor,
            state=state,
            message_uuid=params.get("message_uuid") or None,
            destination=params.get("destination") or None,
        )
        return json_response({"deliveries": found.items, "next_cursor": found.next_cursor})

    async def retry_delivery(self, request: Request) -> Response:
        raw = request.path_params["delivery_id"]
        # ASCII digits only (int() takes other scripts' digits and underscores too).
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            return _problem(404, "no delivery with that id")
        store: Any = self._store()
        delivery_id = int(raw)
        if not await store.retry_delivery(delivery_id, now()):
            found = await store.get_delivery(delivery_id)
            if found is None:
                return _problem(404, "no delivery with that id")
            return _problem(409, "already delivered: nothing to retry")
        return json_response(await store.get_delivery(delivery_id))


async def _bad_query(_request: Request, exc: Exception) -> Response:
    return _problem(400, str(exc))


async def _unavailable(_request: Request, _exc: Exception) -> Response:
    return _problem(503, "database unavailable, retry later")


async def _not_found(_request: Request, _exc: Exception) -> Response:
    return _problem(404, "no such API route")


async def _http_error(_request: Request, exc: Exception) -> Response:
    # A method the route does not take (405, with its Allow header), JSON like the rest.
    assert isinstance(exc, HTTPException)
    return json_response({"error": exc.detail}, exc.status_code, exc.headers)


def api_app(store_ref: Callable[[], Store], admin_token: str | None) -> ASGIApp:
    """The API's own Starlette app, behind the bearer check and the strict security headers."""
    api = AdminAPI(store_ref)
    app = Starlette(
        routes=[
            Route("/messages", api.messages, methods=["GET"]),
            Route("/messages/{message_uuid}", api.message, methods=["GET"]),
            Route("/statuses/{message_uuid}", api.statuses, methods=["GET"]),
            Route("/rejections", api.rejections, methods=["GET"]),
            Route("/deliveries", api.deliveries, methods=["GET"]),
            Route("/deliveries/{delivery_id}/retry", api.retry_delivery, methods=["POST"]),
            Route("/optouts", api.optouts, methods=["GET"]),
            Route("/optouts/{to}/{from}", api.optout, methods=["PUT", "DELETE"]),
        ],
        exception_handlers={
            BadQuery: _bad_query,
            StoreUnavailable: _unavailable,
            404: _not_found,
            HTTPException: _http_error,
        },
    )
    return SecurityHeaders(BearerAuth(app, token=admin_token))
