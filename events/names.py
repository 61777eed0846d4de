"""Names the schema and the stores share, free of any database library so a store can import them."""

from __future__ import annotations

# Names of the constraints the store recognises in driver errors, so each one maps to the right
# StoreError whatever the backend says in its message.
UQ_STREAM_VERSION = "uq_events_stream_version"
CK_POSITION_POSITIVE = "ck_events_position_positive"
UQ_STREAM_IDEMPOTENCY_KEY = "uq_events_stream_idempotency_key"
UQ_LIVE_CONVERSATION = "uq_sandboxes_live_conversation"

EXPIRED_STATE = "expired"


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for error messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
