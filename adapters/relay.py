"""`sandboxctl relay`: posts every event of the log to a webhook, at least once, in commit order, signed.

Each event is one POST of its JSON (core/feed.py ``event_json``) with:

* ``X-Sandbox-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes, keyed with
  ``SANDBOX_WEBHOOK_SECRET``;
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
import urllib.error
import urllib.request
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


def signature(secret: bytes, body: bytes) -> str:
    """The value of the signature header for ``body``: what a receiver recomputes and compares."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


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
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "sandbox-lifecycle-relay",
                SIGNATURE_HEADER: signature(self._secret, body),
                EVENT_ID_HEADER: feed.event_id(event),
                POSITION_HEADER: str(event.position),
            },
        )
        pause = self._retry.first_retry
        problem = ""
        for attempt in range(1, self._retry.attempts + 1):
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
