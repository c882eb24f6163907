"""The fence runner: carries the core's Fence orders out with the configured methods, off the tick.

The core decides whom to fence and when (diskhb.core.fencing); the operator decides how, in order
(`[node] fence = ["scsi-pr", "pill", "agent"]`); this file only runs that order and reports back.

Rules of this file:
- FR1 IN ORDER: the methods run in the configured order; the next one runs only when the previous
  failed or timed out. A verified fence (ok) or a pending one (the pill: done, the victim must
  show it) ends the chain; its result is the order's outcome (FenceDone). All failed: the
  order failed, each method's one line joined.
- FR2 PENDING GOES ON: when the core orders the same incarnation again after a pending outcome
  (fencing FD6: it never showed the effect in time), the chain starts at the method after the
  pending one, so a victim that cannot read its pill gets the next method (the last resort),
  and wraps around after the last.
- FR3 OFF THE TICK, BOUNDED: each order runs on a thread of its own, at most ORDERS_MAX at once
  (one more is failed at once, never queued); each method gets its own deadline (its
  timeout_ms from now), so a chain ends within the sum of its methods' timeouts (plus each
  method's small constant, diskhb.fencing.method M1).
- FR4 COUNTED HERE: every method's attempt, whatever the chain does next, is one increment of
  diskhb_fence_attempts_total{method, result} (result: fenced, pending, failed, timeout) and
  one log line; the reporter leaves the methods run here to us.
- FR5 AN OPERATOR'S METHOD: an order that names a method (`diskhb fence --method M`) runs that
  method alone; a method not configured fails at once, saying which are.
"""

from __future__ import annotations

import logging
import threading
import time

from diskhb import metrics as m
from diskhb.core.node import Fence, FenceDone
from diskhb.fencing.method import Method, MethodResult, Victim

log = logging.getLogger("diskhb.fence")

ORDERS_MAX = 8  # chains running at once (one per victim in practice: the core keeps one attempt in flight each)
METHOD_SLACK_MS = 2_500  # method M1's "small constant" past a deadline (an agent's SIGTERM grace and reap)
METHOD_TIMEOUT_MS_DEFAULT = 30_000
NEXT_AFTER_PENDING_MAX = 64  # FR2: incarnations remembered (bounded like everything else)


class FenceRunner:
    def __init__(self, methods: list[tuple[Method, int]], notify: threading.Event):
        """methods: (method, its timeout_ms) in the configured order."""
        if not methods:
            raise ValueError("fence runner: no method")
        self.methods = methods
        self.notify = notify
        self._lock = threading.Lock()
        self._done: list[FenceDone] = []
        self._running = 0
        self._resume: dict[tuple[int, int], int] = {}  # FR2: (node, generation) -> the next method's index

    @property
    def bound_ms(self) -> int:
        """FR3: the longest a chain can run; the core waits at least this long for an outcome
        (fencing FD6) before it counts an attempt failed and orders another."""
        return sum(ms + METHOD_SLACK_MS for _, ms in self.methods)

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(mt.name for mt, _ in self.methods)

    def fence(self, order: Fence, name: str) -> FenceDone | None:
        """Start carrying `order` out (name: the victim's node name, as its beats give it); None
        when started (done() reports), else its outcome now."""
        chain = self._chain(order)
        if isinstance(chain, FenceDone):
            return chain
        with self._lock:
            if self._running >= ORDERS_MAX:
                return FenceDone(order.node_id, order.generation, order.attempt, False, "none",
                                 f"{ORDERS_MAX} fences are running already")
            self._running += 1
        threading.Thread(target=self._run, args=(order, name, chain), name=f"fence:{order.node_id}", daemon=True).start()
        return None

    def _chain(self, order: Fence) -> list[tuple[int, Method, int]] | FenceDone:
        indexed = [(i, mt, ms) for i, (mt, ms) in enumerate(self.methods)]
        if order.method:  # FR5
            chosen = [c for c in indexed if c[1].name == order.method]
            if not chosen:
                return FenceDone(order.node_id, order.generation, order.attempt, False, order.method,
                                 f"method {order.method!r} is not configured here (fence = {list(self.order)})")
            return chosen
        with self._lock:
            start = self._resume.get((order.node_id, order.generation), 0)
        return indexed[start:] + indexed[:start]  # FR2

    def _run(self, order: Fence, name: str, chain: list[tuple[int, Method, int]]) -> None:
        victim = Victim(order.node_id, name, order.generation)
        failures: list[str] = []
        done = None
        try:
            for index, method, timeout_ms in chain:
                result = self._one(method, victim, timeout_ms, order.attempt)
                if result.ok or result.pending:
                    with self._lock:
                        key = (order.node_id, order.generation)
                        self._resume.pop(key, None)
                        if result.pending:  # FR2
                            if len(self._resume) >= NEXT_AFTER_PENDING_MAX:
                                self._resume.pop(next(iter(self._resume)))
                            self._resume[key] = (index + 1) % len(self.methods)
                    detail = result.detail if not failures else f"{result.detail} (after: {'; '.join(failures)})"
                    done = FenceDone(order.node_id, order.generation, order.attempt, result.ok, method.name, detail,
                                     pending=result.pending, evidence=result.receipt)
                    break
                failures.append(f"{method.name}: {result.detail}")
            if done is None:  # FR1: every method failed
                last = chain[-1][1].name if chain else "none"
                done = FenceDone(order.node_id, order.generation, order.attempt, False, last, "; ".join(failures))
        except Exception as e:  # noqa: BLE001 - a bug: reported as a failed attempt, never silent
            log.exception("fencing node %d: internal error", order.node_id)
            done = FenceDone(order.node_id, order.generation, order.attempt, False, "none", f"internal error: {e!r}")
        finally:
            with self._lock:
                self._running -= 1
                if done is not None:
                    self._done.append(done)
            self.notify.set()

    def _one(self, method: Method, victim: Victim, timeout_ms: int, attempt: int) -> MethodResult:
        """FR3, FR4: one method, its own deadline, counted and logged."""
        started = time.monotonic()
        deadline = started + timeout_ms / 1000
        try:
            result = method.fence(victim, deadline)
        except Exception as e:  # noqa: BLE001 - M3 says it does not raise; if it does, it failed
            result = MethodResult(False, False, f"internal error: {e!r}")
        took_ms = int((time.monotonic() - started) * 1000)
        timed_out = not (result.ok or result.pending) and time.monotonic() >= deadline
        label = "fenced" if result.ok else "pending" if result.pending else "timeout" if timed_out else "failed"
        m.FENCE_ATTEMPTS.labels(method.name, label).inc()
        log.log(logging.WARNING if result.ok or result.pending else logging.ERROR,
                "fencing node %d (generation %#x), attempt %d by %s: %s in %d ms: %s", victim.node_id,
                victim.generation, attempt, method.name, label, took_ms, result.detail)
        return result

    def done(self) -> list[FenceDone]:
        with self._lock:
            out, self._done = self._done, []
        return out

    def close(self) -> None:
        for method, _ in self.methods:
            try:
                method.close()
            except Exception:  # noqa: BLE001 - closing goes on
                log.exception("closing fencing method %s", method.name)
