"""`sandboxctl relay` against a webhook receiver this test runs on loopback: every event arrives, in order,
signed; a relay killed mid-stream (SIGKILL) and restarted resumes from its checkpoint in the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandbox_lifecycle import verify_webhook
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.entrypoints.relay import (
    EVENT_ID_HEADER,
    POSITION_HEADER,
    SIGNATURE_HEADER,
    DeliveryFailed,
    InvalidDelivery,
    RetryPolicy,
    WebhookRelay,
    verify_delivery,
)
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.checkpoints import Checkpoints
from tests.support.fakes import FakeProvider

SECRET = "whsec-test-0123456789"
WAIT_S = 60.0
SANDBOXCTL = str(Path(sys.executable).parent / "sandboxctl")


@dataclass
class Receiver:
    """What the webhook got: each delivery's event id, position and whether its signature held."""

    url: str = ""
    deliveries: list[tuple[str, int, bool]] = field(default_factory=list)
    delay: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)  # event id -> 500s still to answer
    leaks: int = 0
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> list[str]:
        with self.lock:
            return [d[0] for d in self.deliveries]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if SECRET.encode() in body or SECRET in str(self.headers):
                got.leaks += 1  # the key signs a delivery, it is never in one
            try:
                verify_webhook(SECRET.encode(), body, dict(self.headers.items()))
                signed = True
            except ValueError:
                signed = False
            with got.lock:
                got.raw.append((body, dict(self.headers.items())))
            payload = json.loads(body)
            event_id = self.headers[EVENT_ID_HEADER]
            assert event_id == payload["event_id"]
            with got.lock:
                failing = got.failures.get(event_id, 0)
                if failing:
                    got.failures[event_id] = failing - 1
                else:
                    got.deliveries.append((event_id, payload["position"], signed))
            time.sleep(got.delay)
            self.send_response(500 if failing else 204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield got
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "SANDBOX_DATA_DIR": str(tmp_path),
        "SANDBOX_PROVIDER": "e2b",
        "SANDBOX_WEBHOOK_SECRET": SECRET,
    }
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return {**{k: v for k, v in os.environ.items() if k != "SANDBOX_DATABASE_URL"}, **values}


@pytest.fixture
def service(env: dict[str, str]) -> SandboxService:
    return build_service(provider=FakeProvider())


def _history(service: SandboxService, sandboxes: int, prefix: str = "conv") -> None:
    for i in range(sandboxes):
        sid = service.create("data-app", f"{prefix}-{i}").id
        service.touch(sid)
        service.touch(sid)


def _all_ids(service: SandboxService) -> list[str]:
    return [f"{e.stream_id}:{e.version}" for e in service.store.read_all(limit=100_000)]


def _wait(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _relay(env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SANDBOXCTL, "relay", "--webhook", url, "--name", "test"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_relay_killed_mid_stream_resumes_from_its_checkpoint(
    service: SandboxService, env: dict[str, str], receiver: Receiver
) -> None:
    _history(service, 12)  # 12 x (requested, created, 2 touches) = 48 events
    receiver.delay = 0.02  # slow enough to kill the relay with most of the log still to send

    relay = _relay(env, receiver.url)
    try:
        _wait(lambda: len(receiver.ids()) >= 10, "the first deliveries")
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=WAIT_S)
    finally:
        if relay.poll() is None:
            relay.kill()
    delivered_before = len(receiver.ids())
    assert delivered_before < len(_all_ids(service)), "the relay finished before it could be killed"

    _history(service, 2, "later")  # written while no relay runs
    receiver.delay = 0.0
    relay = _relay(env, receiver.url)
    try:
        everything = _all_ids(service)
        _wait(lambda: set(receiver.ids()) >= set(everything), "every event")
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=WAIT_S) == 0, relay.stderr.read() if relay.stderr else ""
    finally:
        if relay.poll() is None:
            relay.kill()
        if relay.stderr:
            relay.stderr.close()

    got = receiver.ids()
    unique = list(dict.fromkeys(got))
    assert unique == everything, "every event, in commit order"
    positions = [d[1] for d in receiver.deliveries]
    assert positions == sorted(positions), "never an event before one already delivered"
    # At least once: only the event in flight when the relay died may come twice, and with the same id.
    assert len(got) - len(unique) <= 1
    assert all(signed for _, _, signed in receiver.deliveries)
    assert receiver.leaks == 0
    checkpoint = Checkpoints(service.store.engine).load("test")  # type: ignore[attr-defined]
    assert checkpoint == service.store.read_all(limit=100_000)[-1].position


def test_a_refused_delivery_is_retried_in_order_then_the_relay_stops_without_skipping(
    service: SandboxService, receiver: Receiver
) -> None:
    _history(service, 2)
    everything = _all_ids(service)
    receiver.failures[everything[1]] = 2  # two 500s, then taken
    checkpoints = Checkpoints(service.store.engine)  # type: ignore[attr-defined]
    retry = RetryPolicy(attempts=3, first_retry=0.01, max_retry=0.02, timeout=5)

    relay = WebhookRelay(service.store, checkpoints, receiver.url, SECRET.encode(), name="r", retry=retry)
    assert relay.run(follow=False) == len(everything)
    assert receiver.ids() == everything

    # A receiver that keeps refusing: the relay gives up on that event and sends none after it.
    sid = service.create("data-app", "conv-late").id
    late = _all_ids(service)[len(everything) :]
    receiver.failures[late[0]] = 99
    with pytest.raises(DeliveryFailed, match=f"{sid}:1"):
        relay.run(follow=False)
    assert receiver.ids() == everything
    assert checkpoints.load("r") == service.store.read_all(limit=1000)[len(everything) - 1].position

    receiver.failures.clear()  # the receiver is back: a restart delivers from the refused event on
    assert relay.run(follow=False) == len(late)
    assert receiver.ids() == everything + late


def test_the_relay_refuses_to_run_unsigned(
    service: SandboxService, env: dict[str, str], receiver: Receiver
) -> None:
    done = subprocess.run(
        [SANDBOXCTL, "relay", "--webhook", receiver.url, "--once"],
        env={**env, "SANDBOX_WEBHOOK_SECRET": ""},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode != 0 and "SANDBOX_WEBHOOK_SECRET" in done.stderr
    assert receiver.ids() == []
    done = subprocess.run(
        [SANDBOXCTL, "relay", "--webhook", receiver.url, "--once", "--attempts", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == 2 and "from 1 to 100" in done.stderr


class _RecordingStop(threading.Event):
    """A stop flag that records every pause the relay waits for, and can be set from the n-th pause."""

    def __init__(self, set_at: int | None = None) -> None:
        super().__init__()
        self.pauses: list[float] = []
        self.set_at = set_at

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.pauses.append(timeout)
            if self.set_at is not None and len(self.pauses) >= self.set_at:
                self.set()
        return self.is_set()


def test_a_relay_stopped_during_a_retry_sends_nothing_after_it_and_keeps_its_checkpoint_before_it(
    service: SandboxService, receiver: Receiver
) -> None:
    _history(service, 2)
    everything = _all_ids(service)
    positions = [e.position for e in service.store.read_all(limit=1000)]
    receiver.failures[everything[2]] = 99
    checkpoints = Checkpoints(service.store.engine)  # type: ignore[attr-defined]
    retry = RetryPolicy(attempts=10, first_retry=0.01, max_retry=0.02, timeout=5)
    stop = _RecordingStop(set_at=2)  # stopped while waiting to retry event 3 the second time
    relay = WebhookRelay(
        service.store, checkpoints, receiver.url, SECRET.encode(), name="s", retry=retry, stop=stop
    )
    assert relay.run(follow=False) == 2
    assert receiver.ids() == everything[:2]
    assert checkpoints.load("s") == positions[1]

    receiver.failures.clear()  # a new run starts from the event it was retrying, not after it
    again = WebhookRelay(service.store, checkpoints, receiver.url, SECRET.encode(), name="s", retry=retry)
    assert again.run(follow=False) == len(everything) - 2
    assert receiver.ids() == everything
    assert checkpoints.load("s") == positions[-1]


def test_the_pause_between_retries_doubles_up_to_its_cap_and_never_past_it(
    service: SandboxService, receiver: Receiver
) -> None:
    _history(service, 1)
    receiver.failures[_all_ids(service)[0]] = 99
    stop = _RecordingStop()
    retry = RetryPolicy(attempts=7, first_retry=0.001, max_retry=0.005, timeout=5)
    relay = WebhookRelay(
        service.store,
        Checkpoints(service.store.engine),  # type: ignore[attr-defined]
        receiver.url,
        SECRET.encode(),
        retry=retry,
        stop=stop,
    )
    with pytest.raises(DeliveryFailed, match="after 7 attempts"):
        relay.run(follow=False)
    assert stop.pauses == [0.001, 0.002, 0.004, 0.005, 0.005, 0.005]


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"attempts": -1}, {"first_retry": -1}, {"max_retry": 0}])
def test_a_retry_policy_that_cannot_deliver_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_a_captured_delivery_does_not_verify_replayed_late_or_under_another_id(
    service: SandboxService, receiver: Receiver
) -> None:
    _history(service, 1)
    checkpoints = Checkpoints(service.store.engine)  # type: ignore[attr-defined]
    WebhookRelay(service.store, checkpoints, receiver.url, SECRET.encode()).run(follow=False)
    body, headers = receiver.raw[1]
    assert all(signed for _, _, signed in receiver.deliveries)
    sig = headers[SIGNATURE_HEADER]
    assert sig.startswith("t=") and ",v1=" in sig
    t = int(sig[2:].partition(",")[0])
    assert abs(t - time.time()) < 60
    event_id, position = verify_delivery(SECRET.encode(), body, headers, now=t + 300)
    assert (event_id, position) == (headers[EVENT_ID_HEADER], int(headers[POSITION_HEADER]))

    with pytest.raises(InvalidDelivery, match="timestamp"):
        verify_delivery(SECRET.encode(), body, headers, now=t + 301)  # replayed after the window
    with pytest.raises(InvalidDelivery, match="timestamp"):
        verify_delivery(SECRET.encode(), body, headers, now=t - 301)
    forged = {**headers, EVENT_ID_HEADER: "other:1"}
    with pytest.raises(InvalidDelivery, match="does not match"):
        verify_delivery(SECRET.encode(), body, forged, now=t)
    with pytest.raises(InvalidDelivery, match="does not match"):
        verify_delivery(SECRET.encode(), body, {**headers, POSITION_HEADER: "999"}, now=t)
    # A fresh timestamp on a captured signature does not verify either: t is signed.
    with pytest.raises(InvalidDelivery, match="does not match"):
        restamped = {**headers, SIGNATURE_HEADER: sig.replace(f"t={t}", f"t={t + 100}")}
        verify_delivery(SECRET.encode(), body, restamped, now=t + 100)
    with pytest.raises(InvalidDelivery, match="does not match"):
        verify_delivery(SECRET.encode(), body + b" ", headers, now=t)
    with pytest.raises(InvalidDelivery, match="does not match"):
        verify_delivery(b"another secret", body, headers, now=t)
    for broken in ("", "v1=00", "t=x,v1=00", "t=1,t=2,v1=00"):
        with pytest.raises(InvalidDelivery, match="malformed"):
            verify_delivery(SECRET.encode(), body, {**headers, SIGNATURE_HEADER: broken}, now=t)
