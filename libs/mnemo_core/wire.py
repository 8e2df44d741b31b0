"""Conversions between domain values and protobuf wire types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp for an aware (or UTC-naive) datetime."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def field_time(message: Message, name: str) -> datetime | None:
    """The aware UTC datetime of a Timestamp field of `message`, or None when the field is unset."""
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    """A protobuf Struct for a JSON-like dict."""
    if not value:
        return None
    st = struct_pb2.Struct()
    st.update(value)
    return st


def from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    """A JSON-like dict for a protobuf Struct."""
    result: dict[str, Any] = json_format.MessageToDict(value)
    return result


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
