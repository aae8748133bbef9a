"""The HTTP contract: request bodies, their validation, and how bad input is answered.

Bad JSON or a body nested too deep -> 400; a body over ``serve.max_body_bytes`` -> 413 (read in
chunks and cut at the limit, never read whole); invalid fields -> 422. Every message names the
field. IDs are int64 (what the feature store keys hold): anything outside [0, 2^63) is a 422.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Annotated, Optional

from fastapi import FastAPI, HTTPException, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

INT64_MAX = 2**63 - 1
#: an ID: a non-negative int64
Id = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]


def _finite(v: float | int | None) -> float | int | None:
    if v is not None and not math.isfinite(v):
        raise ValueError("must be a finite number of epoch seconds")
    return v


AsOf = Annotated[Optional[StrictFloat | StrictInt], AfterValidator(_finite)]


class RecommendBody(BaseModel):
    """``POST /recommend``: ``as_of`` (epoch seconds) optionally fixes the request time (replays)."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    k: StrictInt = Field(10, ge=1)
    exclude: Optional[list[Id]] = None
    as_of: AsOf = None


class RankBody(BaseModel):
    """``POST /rank``: rank the given (distinct) items for the user."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_ids: list[Id] = Field(min_length=1)
    as_of: AsOf = None


api = FastAPI(title="argusrank", description="ARGUS candidates + Feast features + XGBoost ranking")
logger = logging.getLogger("ray.serve")


@api.exception_handler(HTTPException)
async def _one_line_per_error(request: Request, exc: HTTPException):
    """A rejected request logs one line (method, path, status, what was wrong), never a traceback."""
    from fastapi.exception_handlers import http_exception_handler

    logger.info("argusrank: %s %s -> %d %s", request.method, request.url.path, exc.status_code, str(exc.detail)[:300])
    return await http_exception_handler(request, exc)


def _json_int(text: str) -> int | float:
    """JSON integers as Python ints, except those past any int64 (and Python's digit limit): infinity,
    which every ID / count / time field refuses with its name (a 422, not a parse error)."""
    return int(text) if len(text.lstrip("-")) <= 20 else math.inf


def field_errors(exc: ValidationError) -> list[str]:
    """``["field: problem", ...]`` of a pydantic error (the value itself is never echoed)."""
    return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read in chunks and refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_json(request: Request, limit: int):
    """Read and decode a JSON body (400 when it is not JSON or nested too deeply, 413 past ``limit`` bytes)."""
    body = await read_body(request, limit)
    try:
        return json.loads(body or b"null", parse_int=_json_int)
    except (ValueError, UnicodeDecodeError) as exc:  # incl. JSONDecodeError and ints past Python's digit limit
        raise HTTPException(400, f"request body is not valid JSON: {exc}")
    except RecursionError:
        raise HTTPException(400, "request body is nested too deeply")


def parse_events(obj, max_events: int) -> list:
    """``POST /events`` bodies: one event object, ``{"events": [...]}`` or a bare ``[...]`` (each event is
    validated later, with the importer's rules, so one bad event does not reject the others)."""
    events = (obj.get("events") if isinstance(obj, dict) and set(obj) == {"events"}
              else obj if isinstance(obj, list) else [obj])
    if not isinstance(events, list) or not events:
        raise HTTPException(422, ["events: must be a non-empty list of event objects"])
    if len(events) > max_events:
        raise HTTPException(422, [f"events: at most {max_events} per request, got {len(events)}"])
    return events


async def parse_body(request: Request, model: type[BaseModel], limit: int) -> BaseModel:
    """Read, decode and validate a JSON body into ``model`` (400 / 413 / 422 with the field named)."""
    obj = await parse_json(request, limit)
    if not isinstance(obj, dict):
        raise HTTPException(422, "request body must be a JSON object")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise HTTPException(422, field_errors(exc))
