"""Entry payloads: one kind byte, then the data (None, bytes, JSON, or an HTTP body).

An HTTP body is stored with its content ETag, computed once at store time, so a hit serves the
body as stored without hashing it again.
"""

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import BaseModel

_KIND_NONE: Final = b"n"
_KIND_JSON: Final = b"j"
_KIND_BYTES: Final = b"b"
_KIND_HTTP: Final = b"h"


def content_etag(body: bytes) -> str:
    """A strong ETag from the body's hash: the same in every process and after restarts."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot cache a value of type {type(value).__name__}")


def encode_value(value: Any) -> bytes:
    """Entry payload for a value: None, bytes, or anything orjson serialises (pydantic too)."""
    if value is None:
        return _KIND_NONE
    if isinstance(value, bytes):
        return _KIND_BYTES + value
    return _KIND_JSON + orjson.dumps(value, default=_json_default)


def decode_value(payload: bytes) -> Any:
    """The value an `encode_value` payload holds (JSON comes back as plain data)."""
    kind = payload[:1]
    if kind == _KIND_NONE:
        return None
    if kind == _KIND_BYTES:
        return payload[1:]
    if kind == _KIND_JSON:
        return orjson.loads(payload[1:])
    raise ValueError("not a value payload")


@dataclass(frozen=True, slots=True)
class CachedBody:
    """A stored response body and its strong content ETag."""

    etag: str
    body: bytes


def encode_http_body(body: bytes) -> bytes:
    """Entry payload for a response body: its content ETag, a newline, then the body."""
    return _KIND_HTTP + content_etag(body).encode() + b"\n" + body


def decode_http_body(payload: bytes) -> CachedBody:
    """The body and ETag an `encode_http_body` payload holds."""
    newline = payload.index(b"\n")
    return CachedBody(payload[1:newline].decode(), payload[newline + 1 :])
