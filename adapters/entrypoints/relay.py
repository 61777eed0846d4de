"""`sandboxctl relay`: posts every event of the log to a webhook, at least once, in commit order, signed.

Each event is one POST of its JSON (core/feed.py ``event_json``) with:

* ``X-Sandbox-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256, keyed with ``SANDBOX_WEBHOOK_SECRET``,
  of ``<t>.<event id>.<position>.`` followed by the exact body bytes (Stripe's scheme, with the id and
  position signed too: a captured delivery cannot be replayed later, nor under another id or position).
  ``t`` is taken afresh for every attempt; ``verify_delivery`` is the receiver's check;
* ``X-Sandbox-Event-Id``: ``<stream id>:<version>``, the same on every delivery of the event, so a
  receiver drops the redeliveries at-least-once allows;
* ``X-Sandbox-Position``: its place in the feed.

An event is delivered when the receiver answers 2xx. Until then it is retried, with a pause doubling
from ``first_retry`` up to ``max_retry``, at most ``attempts`` times; then the relay stops with an error
and no later event is sent (order is kept over progress). After each delivered event its position is
saved as the relay's checkpoint in the database, where a restarted relay resumes: an event delivered
but not yet checkpointed when the process died is delivered again, none is skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from sandbox_lifecycle.core import feed
from sandbox_lifecycle.core.errors import SandboxError
from sandbox_lifecycle.core.ports import EventStore
from sandbox_lifecycle.events.checkpoints import Checkpoints
from sandbox_lifecycle.events.records import RecordedEvent

log = logging.getLogger("sandbox_lifecycle.relay")

SIGNATURE_HEADER = "X-Sandbox-Signature"
EVENT_ID_HEADER = "X-Sandbox-Event-Id"
POSITION_HEADER = "X-Sandbox-Position"


class DeliveryFailed(SandboxError):
    """The webhook did not take an event within the allowed attempts."""


# How far a delivery's timestamp may be from the receiver's clock (either way) for it to be taken.
TOLERANCE_S = 300


class InvalidDelivery(ValueError):
    """A delivery whose signature does not verify, or whose timestamp is outside the tolerance."""


def signed_bytes(timestamp: int, event_id: str, position: int, body: bytes) -> bytes:
    """What the signature covers: ``<t>.<event id>.<position>.`` and the body."""
    return f"{timestamp}.{event_id}.{position}.".encode() + body


def signature(secret: bytes, body: bytes, *, event_id: str, position: int, timestamp: int) -> str:
    """The value of the signature header: ``t=<timestamp>,v1=<hex>``."""
    digest = hmac.new(secret, signed_bytes(timestamp, event_id, position, body), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_delivery(
    secret: bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = TOLERANCE_S,
    now: float | None = None,
) -> tuple[str, int]:
    """The receiver's check: raise InvalidDelivery unless the signature header signs this body, the
    event id and position headers, and a timestamp within ``tolerance`` seconds of ``now``; returns
    (event id, position). Pass the raw body, before any JSON parsing, and drop the ids already seen."""
    lower = {k.lower(): v for k, v in headers.items()}
    event_id = lower.get(EVENT_ID_HEADER.lower(), "")
    raw_position = lower.get(POSITION_HEADER.lower(), "")
    fields: dict[str, list[str]] = {}
    for part in lower.get(SIGNATURE_HEADER.lower(), "").split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    timestamps = fields.get("t", [])
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not raw_position.isdigit() or not event_id:
        raise InvalidDelivery("the signature, event id or position header is missing or malformed")
    timestamp, position = int(timestamps[0]), int(raw_position)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidDelivery(f"the delivery's timestamp is more than {tolerance:g}s from now: a replay?")
    expected = signature(secret, body, event_id=event_id, position=position, timestamp=timestamp)
    expected_v1 = expected.partition(",v1=")[2]
    if not any(hmac.compare_digest(v1, expected_v1) for v1 in fields.get("v1", [])):
        raise InvalidDelivery("the signature does not match the body, event id and position")
    return event_id, position


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    first_retry: float = 0.5
    max_retry: float = 30.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        # A policy that can never deliver (no attempt) or never wait (a negative pause) is a mistake
        # best refused where it is made, not found when the first receiver is down.
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least one attempt, not {self.attempts}")
        if self.first_retry < 0 or self.max_retry <= 0 or self.timeout <= 0:
            raise ValueError("retry pauses must be >= 0, and the cap and timeout > 0")


class WebhookRelay:
    def __init__(
        self,
        store: EventStore,
        checkpoints: Checkpoints,
        url: str,
        secret: bytes,
        *,
        name: str = "webhook",
        retry: RetryPolicy | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the webhook must be an http:// or https:// URL, not {url!r}")
        if not secret:
            raise ValueError("the webhook secret is empty")
        self._store = store
        self._checkpoints = checkpoints
        self._url = url
        self._secret = secret
        self.name = name
        self._retry = retry or RetryPolicy()
        self._stop = stop or threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, follow: bool = True) -> int:
        """Deliver from the checkpoint on (until stopped, with ``follow``); the number delivered."""
        position = self._checkpoints.load(self.name)
        log.info("relay %s resuming after position %d", self.name, position)
        delivered = 0
        for event in feed.tail(self._store, position, follow, stop=self._stop):
            if not self._deliver(event):
                break  # stopped while retrying: the event stays undelivered, and so checkpointed before it
            self._checkpoints.save(self.name, event.position)
            delivered += 1
        return delivered

    def _deliver(self, event: RecordedEvent) -> bool:
        body = orjson.dumps(feed.event_json(event))
        event_id = feed.event_id(event)
        pause = self._retry.first_retry
        problem = ""
        for attempt in range(1, self._retry.attempts + 1):
            # Signed afresh each attempt: a retry after a long pause still lands within the tolerance.
            sig = signature(
                self._secret, body, event_id=event_id, position=event.position, timestamp=int(time.time())
            )
            request = urllib.request.Request(
                self._url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "sandbox-lifecycle-relay",
                    SIGNATURE_HEADER: sig,
                    EVENT_ID_HEADER: event_id,
                    POSITION_HEADER: str(event.position),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self._retry.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                problem = str(getattr(exc, "reason", exc))
            if attempt == self._retry.attempts:
                break
            log.warning(
                "relay %s: event %s not delivered (%s), attempt %d of %d; retrying in %.1fs",
                self.name,
                feed.event_id(event),
                problem,
                attempt,
                self._retry.attempts,
                pause,
            )
            if self._stop.wait(pause):
                return False
            pause = min(pause * 2, self._retry.max_retry)
        raise DeliveryFailed(
            f"the webhook did not take event {feed.event_id(event)} (position {event.position}) after "
            f"{self._retry.attempts} attempts: {problem}; the relay resumes from it when restarted"
        )
