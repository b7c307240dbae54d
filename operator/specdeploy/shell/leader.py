"""One active operator among replicas: a coordination.k8s.io Lease in the operator's namespace, as client-go's
leader election keeps one (and kube-controller-manager, kube-scheduler and controller-runtime operators use it).

Why a Lease and not kopf's peering: kopf's peering pauses an operator when one of higher priority appears, which
needs distinct priorities and a peering CRD, and two replicas of one Deployment have the same priority. A Lease is
an exclusive, expiring hold that any number of identical replicas can contend for.

A replica runs kopf only while it holds the Lease. A standby checks it every :data:`RETRY_SECONDS` and takes it
once its holder has not renewed it for :data:`LEASE_SECONDS` of the standby's own clock (never the holder's
timestamps: clocks differ between nodes). A holder that cannot renew within the lease stops at once (the
kubelet restarts it as a standby), so two replicas never act together unless the API server's write of a Lease is
lost. Every write carries the resourceVersion read, so two standbys taking an expired Lease cannot both win.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import kubernetes
import urllib3
from kubernetes.client.rest import ApiException

LEASE_NAME = "specdeploy-operator"
LEASE_SECONDS = 15  # how long a dead leader holds up its standby: failover time against Lease writes per second
RENEW_SECONDS = 5  # a leader renews this often: three tries per lease before it must stop
RETRY_SECONDS = 2  # a standby looks this often
# What a Lease call raises when the API server refuses or cannot be reached: the client's connection errors are
# urllib3's (MaxRetryError is no OSError), and an uncaught one would end the renewal thread while kopf acts on.
UNREACHABLE = (ApiException, OSError, urllib3.exceptions.HTTPError)


def _brief(exc: Exception) -> str:
    """One line for the log; a missing namespace says what to do."""
    if isinstance(exc, ApiException):
        if exc.status == 404 and "namespaces" in str(exc.body):
            return "its namespace does not exist: create it, or run with --no-leader-election"
        return f"{exc.status} {exc.reason}"
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return "the API server is unreachable"
    return str(exc)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Elector:
    """Contends for the Lease ``name`` in ``namespace`` as ``identity`` (the pod's name)."""

    api: kubernetes.client.CoordinationV1Api
    namespace: str
    identity: str
    name: str = LEASE_NAME
    lease_seconds: int = LEASE_SECONDS
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("specdeploy.leader"))
    _seen: tuple[Any, ...] | None = field(default=None, init=False)  # (holder, renewTime) last read
    _seen_at: float = field(default=0.0, init=False)  # when it last changed, on this replica's monotonic clock

    def try_lead(self) -> bool:
        """One attempt: renew the Lease if held, take it if free or expired, else observe. True: we lead."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create()
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time)
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        mine = spec.holder_identity == self.identity
        expired = time.monotonic() - self._seen_at > (spec.lease_duration_seconds or self.lease_seconds)
        if not (mine or expired or not spec.holder_identity):
            return False
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                     "renewTime": _now_iso()},
        }  # fmt: skip
        if not mine:
            body["spec"] |= {"acquireTime": _now_iso(), "leaseTransitions": (spec.lease_transitions or 0) + 1}
        try:
            self.api.patch_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote first
                return False
            raise
        if not mine:
            self.logger.info("took the lease %s/%s from %s", self.namespace, self.name, spec.holder_identity)
        return True

    def _create(self) -> bool:
        body = {
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                     "acquireTime": _now_iso(), "renewTime": _now_iso(), "leaseTransitions": 0},
        }  # fmt: skip
        try:
            self.api.create_namespaced_lease(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # created by another replica just now
                return False
            raise
        self.logger.info("created the lease %s/%s", self.namespace, self.name)
        return True

    def release(self) -> None:
        """Give the Lease up (a clean stop): a standby takes it at its next look instead of after a lease."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                body = {"metadata": {"resourceVersion": lease.metadata.resource_version},
                        "spec": {"holderIdentity": None, "leaseDurationSeconds": 1}}  # fmt: skip
                self.api.patch_namespaced_lease(self.name, self.namespace, body)
        except UNREACHABLE as exc:
            self.logger.warning("lease %s/%s not released: %s", self.namespace, self.name, _brief(exc))

    def wait_to_lead(self) -> None:
        """Block until this replica leads."""
        while True:
            try:
                if self.try_lead():
                    return
                holder = self._seen[0] if self._seen else None
                self.logger.info("standby: the lease %s/%s is held by %s", self.namespace, self.name, holder)
            except UNREACHABLE as exc:
                self.logger.warning("lease %s/%s: %s", self.namespace, self.name, _brief(exc))
            time.sleep(RETRY_SECONDS)

    def keep_leading(self, stopping: threading.Event) -> None:
        """Renew until told to stop, another replica holds the Lease, or renewals have failed for longer than a
        lease less one renewal (before any standby may take it over); then return: the caller must stop acting."""
        last = time.monotonic()
        while not stopping.wait(RENEW_SECONDS):
            try:
                if not self.try_lead():
                    self.logger.error("the lease %s/%s is held by %s: stopping", self.namespace, self.name,
                                      self._seen[0] if self._seen else None)  # fmt: skip
                    return
                last = time.monotonic()
            except UNREACHABLE as exc:
                self.logger.warning("lease %s/%s not renewed: %s", self.namespace, self.name, _brief(exc))
                if time.monotonic() - last >= self.lease_seconds - RENEW_SECONDS:
                    self.logger.error("lease %s/%s not renewed for a lease: stopping", self.namespace, self.name)
                    return


class StandbyHealth:
    """``/healthz`` for a standby, on the address the operator's liveness endpoint will take once it leads (the
    kubelet must not restart a replica for waiting)."""

    def __init__(self, url: str):
        parsed = urlparse(url)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == parsed.path else 404)
                self.end_headers()
                self.wfile.write(b"standby\n")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((parsed.hostname or "0.0.0.0", parsed.port or 80), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def lead(elector: Elector, liveness: str, run: Callable[[threading.Event], None]) -> bool:
    """Wait to lead (answering liveness meanwhile), then ``run(lost)`` while leading; ``lost`` is set when the
    lease is lost. Returns whether it was lost (the process should then exit non-zero)."""
    health = StandbyHealth(liveness)
    try:
        elector.wait_to_lead()
    finally:
        health.close()
    lost, stopping = threading.Event(), threading.Event()

    def renew() -> None:
        elector.keep_leading(stopping)
        if not stopping.is_set():
            lost.set()

    renewer = threading.Thread(target=renew, name="lease", daemon=True)
    renewer.start()
    try:
        run(lost)
    finally:
        stopping.set()
        renewer.join(timeout=RENEW_SECONDS + 1)
        if not lost.is_set():
            elector.release()
    return lost.is_set()
