"""Warm pools: created, unassigned idle sandboxes per kind, claimed by the first turn of a conversation.

A pooled sandbox is an ordinary sandbox with two more facts on its stream: ``Pooled`` (it joined the
pool, after its create) and ``Claimed`` (a conversation's turn took it). The claim is appended at the
version the claimer loaded, so of two racers one wins and the other moves on to the next pooled
sandbox; the read model's one-live-sandbox-per-conversation index settles a conversation claiming twice.

``maintain`` (run by every scheduler sweep, and in the background after a claim) creates what the
pool lacks while the fleet has room (it never evicts nor waits for a slot: a pool is worth less than
a turn) and destroys what it has beyond its size (reason ``pool_drained``), so lowering the size drains
it. Pooled sandboxes count against capacity, are reconciled like any other and carry no idle timer.

Fresh pools: ``Pooled`` records the version of the kind's image (Docker: the image ID its tag names) or
template (E2B: the template name) read from the provider (``image_version(kind)``, optional) before the
create. A claim compares it with the kind's version now and never takes a sandbox made from another
one; ``maintain`` destroys those (reason ``stale_image``) and creates fresh ones in their place.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple, Protocol

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import ConcurrencyError, SandboxError, SandboxNotFound, StoreError
from sandbox_lifecycle.core.kernel import Kernel
from sandbox_lifecycle.core.usage import image_version
from sandbox_lifecycle.events import types as ev
from sandbox_lifecycle.events.codec import decode
from sandbox_lifecycle.events.records import CapacityRefused, SandboxLeased, SandboxRow

log = logging.getLogger("sandbox_lifecycle")

POOL_ACTOR = "warm_pool"
POOL_REASON = "warm_pool"
DRAIN_REASON = "pool_drained"
RECYCLE_REASON = "pool_recycled"
# Made from an image (Docker) or template (E2B) the kind no longer uses.
STALE_IMAGE_REASON = "stale_image"
# A claim that keeps losing races tries at most this many pooled sandboxes before creating one.
_MAX_CLAIMS = 5
# The refill after a claim starts this much later: creating a sandbox is heavy (a container start, an
# E2B create), and the claiming turn's first commands, the point of the pool, should not compete with it.
REFILL_DELAY_S = 1.0


class Lifecycle(Protocol):
    """The service's create and destroy (``SandboxService`` is one): a pool adds and retires sandboxes
    as any caller does, with their admission and side effects."""

    def create(
        self,
        kind: str,
        conversation_id: str | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str | None = None,
        reason: str = "user",
        admit: bool = True,
    ) -> SandboxRow: ...

    def destroy(
        self, sandbox_id: str, *, reason: str = "user", actor: str | None = None, version: int | None = None
    ) -> SandboxRow: ...


class WarmPool:
    def __init__(self, kernel: Kernel, lifecycle: Lifecycle) -> None:
        self.k = kernel
        self.lifecycle = lifecycle
        self._refilling = threading.Lock()
        self._refill: threading.Thread | None = None

    def _candidates(self, kind: str) -> list[SandboxRow]:
        """Idle sandboxes of ``kind`` with no conversation, oldest first (pooled or not: the stream says)."""
        rows = self.k.store.list_sandboxes(lc.IDLE)
        return [r for r in rows if r.kind == kind and r.conversation_id is None]

    def _pooled(self, kind: str) -> list[Member]:
        out = []
        for row in self._candidates(kind):
            try:
                member = self._member(row.id)
            except (SandboxError, StoreError):
                continue
            if member.state.pooled and member.state.status == lc.IDLE:
                out.append(member)
        return out

    def _member(self, sandbox_id: str) -> Member:
        """The sandbox as its stream says, with the image version its ``Pooled`` event recorded."""
        records = self.k.store.read_stream(sandbox_id)
        if not records:
            raise SandboxNotFound(sandbox_id)
        events = [decode(r) for r in records]
        image = next((e.image for e in reversed(events) if isinstance(e, ev.Pooled)), None)
        return Member(sb.replay(sandbox_id, events), image)

    def claim(self, kind: str, conversation_id: str, *, actor: str, correlation_id: str) -> str | None:
        """The id of a pooled ``kind`` sandbox now claimed for ``conversation_id``, or None (pool empty,
        or every pooled sandbox is made from an image the kind no longer uses)."""
        if not self.k.capacity.warm_pool.get(kind):
            return None
        current = image_version(self.k.provider, kind)
        members = self._pooled(kind)
        fresh = [m.state for m in members if not m.stale(current)]
        if len(fresh) < len(members):
            self.refill_in_background()  # the stale ones are replaced by maintain
        for state in fresh[:_MAX_CLAIMS]:
            try:
                self.k.apply(
                    state,
                    sb.Claim(conversation_id=conversation_id, actor=actor),
                    correlation_id=correlation_id,
                )
            except (ConcurrencyError, SandboxError):
                continue  # another turn claimed it first (or it left the pool): the next one
            log.info("warm pool: conversation %s claimed %s sandbox %s", conversation_id, kind, state.id)
            self.refill_in_background()
            return state.id
        return None

    def refill_in_background(self) -> None:
        """Top the pools up in a daemon thread; a refill already running in this process is enough."""
        if not self._refilling.acquire(blocking=False):
            return

        def run() -> None:
            try:
                time.sleep(REFILL_DELAY_S)
                self.maintain()
            except Exception:
                log.exception("warm pool refill failed; the next sweep retries")
            finally:
                self._refilling.release()

        self._refill = threading.Thread(target=run, name="warm-pool-refill", daemon=True)
        self._refill.start()

    def settle(self, timeout: float = 60.0) -> None:
        """Wait (at most ``timeout`` s) for this process's background refill, e.g. before a clean exit."""
        if self._refill is not None:
            self._refill.join(timeout)

    def maintain(self) -> list[str]:
        """Create what each kind's pool lacks (while there is room), drain what exceeds its size."""
        done: list[str] = []
        sizes = dict(self.k.capacity.warm_pool)
        kinds = set(sizes) | {
            r.kind for r in self.k.store.list_sandboxes(lc.IDLE) if r.conversation_id is None
        }
        for kind in sorted(kinds):
            want = sizes.get(kind, 0)
            members = self._pooled(kind)
            # Made from an image or template the kind no longer uses: replaced first, whatever its age.
            current = image_version(self.k.provider, kind) if members else None
            for member in [m for m in members if m.stale(current)]:
                members.remove(member)
                what = f"replaced in the {kind} pool (stale image)"
                done.append(self._retire(member.state, STALE_IMAGE_REASON, what))
            pooled = [m.state for m in members]
            # A pooled sandbox carries no idle timer, but the provider may have its own (E2B pauses a
            # sandbox past its timeout, which outlasts the idle timeout): recycled once it has waited
            # an idle timeout, it is always fresh when claimed.
            stale_before = self.k.clock() - self.k.policy.idle_timeout
            stale = [p for p in pooled if p.state_since is not None and p.state_since < stale_before]
            for state in stale:
                pooled.remove(state)
                done.append(self._retire(state, RECYCLE_REASON, f"recycled from the {kind} pool"))
            for state in pooled[want:] if len(pooled) > want else ():
                done.append(self._retire(state, DRAIN_REASON, f"drained from the {kind} pool"))
            for _ in range(want - len(pooled)):
                try:
                    sid = self._add(kind)
                except CapacityRefused:
                    break  # no room: the pool waits for the next sweep, turns come first
                except SandboxError as exc:
                    done.append(f"{kind} pool: adding a sandbox failed: {exc}")
                    break
                done.append(f"{sid}: joined the {kind} pool")
        return done

    def _retire(self, state: sb.Sandbox, reason: str, what: str) -> str:
        """Destroy a pooled sandbox as ``_pooled`` loaded it: at that version (a claim since then wins, and
        the turn that claimed it keeps it) and with no call in flight on it (a lease). A sweep's pass
        destroys its stale sandboxes one after the other, about a second each on Docker: a turn claims
        the oldest pooled sandbox, the very one recycling takes, in that gap."""
        try:
            self.lifecycle.destroy(state.id, reason=reason, actor=POOL_ACTOR, version=state.version)
        except (ConcurrencyError, SandboxLeased):
            return f"{state.id}: left alone, claimed or in use since the pool looked at it"
        except SandboxError as exc:
            return f"{state.id}: {reason} failed: {exc}"
        return f"{state.id}: {what}"

    def _add(self, kind: str) -> str:
        # Read before the create: if the image changes meanwhile, the sandbox is at worst recorded older
        # than it is, and replaced for nothing; never recorded newer than it is, and handed out stale.
        image = image_version(self.k.provider, kind)
        row = self.lifecycle.create(kind, None, actor=POOL_ACTOR, reason=POOL_REASON, admit=False)
        state = self.k.load(row.id)
        if state.status != lc.IDLE:
            raise SandboxError(f"sandbox {row.id} for the {kind} pool is {state.status}, not idle")
        self.k.apply(state, sb.Pool(actor=POOL_ACTOR, image=image), correlation_id=f"pool-{row.id}")
        return row.id


class Member(NamedTuple):
    """A sandbox of a pool and the image version it was made from (None: not recorded)."""

    state: sb.Sandbox
    image: str | None

    def stale(self, current: str | None) -> bool:
        """Made from another image than the kind's ``current`` one; a sandbox whose version was never
        recorded (pooled before versions were) counts as stale once the provider can name one. Nothing
        is stale when the provider cannot say (``current`` None)."""
        return current is not None and self.image != current
