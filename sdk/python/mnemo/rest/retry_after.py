"""The `Retry-After` header (and OpenAI's `retry-after-ms`), read the same way wherever an answer carries it.

It lives with the REST contract because both sides of HTTP need it and the client cannot depend on the server:
the client reads it from the gateway's 429/503 answers, the llm-gateway from the model providers'.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a `Retry-After` (seconds or HTTP date) or `retry-after-ms` header asks for, if any."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())
