"""Bounded, attributable load through the chain's entry (the gateway), for the rotation rehearsal.

    target = LoadTarget("127.0.0.1", 8443, server_name="api.contoso.example", trust=bundle)
    with LoadGenerator(target, LoadBounds(workers=4, duration=20, max_requests=5000, rate=150)) as load:
        ...                                  # change the chain while requests flow
    load.summary().failures                  # every failed request: when, which hop, why

Half the workers (``new_connection_share``) open a new connection, and so make a new TLS handshake, for every
request; the others keep one connection alive. New handshakes are what a certificate rotation breaks; keep-alive
connections show whether a reload drops requests already in flight.

Every request is recorded. A failed one is attributed to the hop that refused it, from what came back: the
``x-harness-detail`` header of a stand-in's own answer (``hop=apim; flags=UF; details=…TLS_error…``), the ingress's
own page (:func:`ingress_page`: nginx's error-page tail, or the controller's match-cn refusal — NOT the ``Server``
header, which ingress-nginx removes), App Gateway's ``Server`` line, APIM's JSON error shape, the echo pod's JSON,
and for a failure before any HTTP answer (handshake refused, connection reset) the entry hop itself. The reason
is the page's key sentence (:func:`harness.probe.handshake.page_reason`), e.g. ``ingress 400 "The SSL certificate
error"``.

Bounds are hard: at most :data:`MAX_WORKERS` threads, :data:`MAX_DURATION` seconds and :data:`MAX_REQUESTS` requests,
a total request rate, and only loopback addresses (the chain's own endpoints). The generator stops by itself at the
first bound it reaches; :meth:`LoadGenerator.stop` (and leaving the ``with`` block, also on Ctrl-C) stops it sooner.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import httpx

from harness.errors import UsageError
from harness.model.wire import APPGW_SERVER, DETAIL_HEADER
from harness.probe.handshake import classify_response, page_reason

__all__ = [
    "MAX_DURATION",
    "MAX_REQUESTS",
    "MAX_WORKERS",
    "LoadBounds",
    "LoadGenerator",
    "LoadSummary",
    "LoadTarget",
    "Mode",
    "RequestRecord",
    "attribute_exception",
    "attribute_response",
    "ingress_page",
]

#: the tail of every page nginx makes itself with ``server_tokens off`` (ngx_http_special_response.c 35-36, the same at
#: release-1.22.1 and release-1.27.1): ingress-nginx renders ``server_tokens off`` (nginx.tmpl 338) and keeps nginx's
#: own error pages (custom-http-errors is empty by default), so its 400/403/404/502 pages end with it
NGINX_PAGE_TAIL: Final = b"<hr><center>nginx</center>"
#: the body of ingress-nginx's auth-tls-match-cn refusal (nginx.tmpl 918 ``return 403 "client certificate
#: unauthorized"``): a text answer without nginx's page around it
MATCH_CN_BODY: Final = b"client certificate unauthorized"

#: hard ceilings, whatever the caller asks for: the load generator shares a small host with the chain it measures
MAX_WORKERS: Final = 16
MAX_DURATION: Final = 3600.0
MAX_REQUESTS: Final = 1_000_000

Mode = Literal["keep-alive", "new-connection"]
StopReason = Literal["duration", "max_requests", "stopped", "running"]


@dataclass(frozen=True)
class LoadTarget:
    """Where the load goes (a loopback endpoint of the chain) and how a client talks to it."""

    host: str
    port: int
    server_name: str  # SNI, Host header and the name the server cert is checked against
    trust: Path  # PEM trust anchors for the entry hop's server cert
    client_cert: Path | None = None
    client_key: Path | None = None
    path: str = "/"

    def __post_init__(self) -> None:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise UsageError(f"load: host {self.host!r} is not a loopback address — the load generator only drives "
                             "the chain's own endpoints (127.0.0.1 or ::1)")
        if not 0 < self.port < 65536:
            raise UsageError(f"load: port {self.port} is out of range — use 1..65535")
        if not self.path.startswith("/"):
            raise UsageError(f"load: path {self.path!r} must start with '/'")
        if not Path(self.trust).is_file():
            raise UsageError(f"load: trust bundle {self.trust} does not exist — pass the CA bundle of the entry hop")


@dataclass(frozen=True)
class LoadBounds:
    """How much load: threads, seconds, requests, requests per second (all of them hard limits)."""

    workers: int = 4
    duration: float = 10.0  # seconds; the generator stops by itself after this
    max_requests: int = 20_000  # the generator stops by itself after this many requests
    rate: float | None = 200.0  # total requests per second across workers; None: as fast as the chain answers
    new_connection_share: float = 0.5  # share of workers that open a new connection per request
    timeout: float = 5.0  # per request: connect, handshake, answer

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise UsageError(f"load: workers={self.workers} — use 1..{MAX_WORKERS}")
        if not 0 < self.duration <= MAX_DURATION:
            raise UsageError(f"load: duration={self.duration:g}s — use a positive number up to {MAX_DURATION:g}")
        if not 1 <= self.max_requests <= MAX_REQUESTS:
            raise UsageError(f"load: max_requests={self.max_requests} — use 1..{MAX_REQUESTS}")
        if self.rate is not None and not 0 < self.rate <= 10_000:
            raise UsageError(f"load: rate={self.rate:g} requests/s — use a positive number up to 10000, or None")
        if not 0.0 <= self.new_connection_share <= 1.0:
            raise UsageError(f"load: new_connection_share={self.new_connection_share:g} — use 0..1")
        if not 0 < self.timeout <= 60:
            raise UsageError(f"load: timeout={self.timeout:g}s — use 0..60 seconds")

    def mode_of(self, worker: int) -> Mode:
        """Workers 0..k-1 open a new connection per request, the rest keep theirs (k from the share, at least one
        of each kind when there are two or more workers and the share is strictly between 0 and 1)."""
        k = round(self.workers * self.new_connection_share)
        if 0 < self.new_connection_share < 1 and self.workers >= 2:
            k = min(max(k, 1), self.workers - 1)
        return "new-connection" if worker < k else "keep-alive"


@dataclass(frozen=True)
class RequestRecord:
    """One request: times in seconds since the load started; ``hop``/``reason`` only when it failed."""

    start: float
    end: float
    worker: int
    mode: Mode
    status: int | None
    outcome: str  # harness.probe.outcomes vocabulary, e.g. "ok(200)", "http_reject(400, 'The SSL certificate error')"
    hop: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.hop is None

    def describe(self) -> str:
        """``ingress 400 "The SSL certificate error"`` — the hop, the status (if any) and the reason."""
        if self.ok:
            return f"ok {self.status}"
        status = f" {self.status}" if self.status is not None else ""
        return f'{self.hop}{status} "{self.reason}"'

    def as_dict(self) -> dict[str, object]:
        return {"start": round(self.start, 4), "end": round(self.end, 4), "worker": self.worker, "mode": self.mode,
                "status": self.status, "outcome": self.outcome, "hop": self.hop, "reason": self.reason}


@dataclass(frozen=True)
class LoadSummary:
    requests: int
    failures: tuple[RequestRecord, ...]
    duration: float  # seconds from start to the last answer
    stopped_by: StopReason
    workers: int
    by_mode: Mapping[str, int]

    @property
    def rate(self) -> float:
        """Requests answered per second (failed ones included)."""
        return self.requests / self.duration if self.duration > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"requests": self.requests, "failed": len(self.failures), "duration_s": round(self.duration, 3),
                "rate_per_s": round(self.rate, 1), "stopped_by": self.stopped_by, "workers": self.workers,
                "by_mode": dict(self.by_mode)}


# ---------------------------------------------------------------------------------------------------------------
# attribution
# ---------------------------------------------------------------------------------------------------------------
def _detail_fields(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if sep:
            out[key.strip()] = val.strip()
    return out


def attribute_response(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str, str]:
    """(hop that answered with a failure or None for success, reason, outcome) for a complete HTTP answer.

    ``headers`` with lower-case names. The hop: a stand-in's :data:`DETAIL_HEADER` names itself; otherwise the
    ingress's own page (:func:`ingress_page`), App Gateway's ``Server`` line, APIM's JSON error (``statusCode``), the
    echo pod's JSON (``"hop": "pod"``); anything else is called ``unknown``. The ingress is NOT found by a
    ``Server: nginx`` header: ingress-nginx sends none (``more_clear_headers Server``, nginx.tmpl 338-341), and App
    Gateway adds its own Server line to an answer that has none.
    """
    outcome = classify_response(status, headers, body)
    if outcome.kind == "ok":
        return None, "", str(outcome)
    reason = page_reason(status, headers, body) or f"HTTP {status}"
    detail = headers.get(DETAIL_HEADER, "")
    if detail:
        fields = _detail_fields(detail)
        hop = fields.get("hop", "unknown")
        if fields.get("details") and fields.get("details") != "-":
            reason = f"{reason}: {fields['details']}"
        return hop, reason, str(outcome)
    server = headers.get("server", "").lower()
    doc: object = None
    with contextlib.suppress(ValueError):
        doc = json.loads(body[:65536]) if body[:1] == b"{" else None
    if ingress_page(status, body):
        hop = "ingress"
    elif APPGW_SERVER.lower() in server:
        hop = "gateway"
    elif isinstance(doc, dict) and "statusCode" in doc:
        hop = "apim"
    elif isinstance(doc, dict) and doc.get("hop") == "pod":
        hop = "pod"
    else:
        hop = "unknown"
    return hop, reason, str(outcome)


def ingress_page(status: int, body: bytes) -> bool:
    """True when ``body`` is a page the ingress (nginx, as ingress-nginx renders it) made itself: nginx's error-page
    tail (:data:`NGINX_PAGE_TAIL`) or the match-cn 403 text (:data:`MATCH_CN_BODY`)."""
    head = body[:65536]
    return NGINX_PAGE_TAIL in head or (status == 403 and head.strip() == MATCH_CN_BODY)


def attribute_exception(exc: BaseException, entry_hop: str = "gateway") -> tuple[str, str, str]:
    """(hop, reason, outcome) for a request that got no HTTP answer: that is the entry hop's doing (it refused the
    handshake, reset the connection, or did not answer in time)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError | OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or str(cause)
        return entry_hop, f"server certificate refused: {reason}", f"server_untrusted({reason!r})"
    if isinstance(cause, ssl.SSLError) and cause.reason and "ALERT" in cause.reason:
        name = cause.reason.split("ALERT_", 1)[-1].lower()
        return entry_hop, f"TLS alert {name}", f"tls_alert({name})"
    if isinstance(exc, httpx.TimeoutException):
        return entry_hop, f"timed out ({type(exc).__name__})", "protocol_error('timed out')"
    if isinstance(exc, httpx.ConnectError) and isinstance(cause, ConnectionRefusedError):
        return entry_hop, "connection refused", "unreachable('connection refused')"
    text = str(exc) or type(exc).__name__
    return entry_hop, text, f"protocol_error({text!r})"


# ---------------------------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------------------------
def _ssl_context(target: LoadTarget) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(target.trust))
    if target.client_cert is not None:
        ctx.load_cert_chain(str(target.client_cert), str(target.client_key) if target.client_key else None)
    return ctx


class LoadGenerator:
    """``with LoadGenerator(target, bounds) as load:`` — worker threads sending requests until a bound is reached."""

    def __init__(self, target: LoadTarget, bounds: LoadBounds | None = None, *,
                 on_record: Callable[[RequestRecord], None] | None = None) -> None:
        self.target = target
        self.bounds = bounds or LoadBounds()
        self._on_record = on_record
        self._ctx = _ssl_context(target)
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._failed = 0
        self._issued = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0
        self._stopped_by: StopReason = "running"
        self._errors: list[BaseException] = []

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self._threads:
            raise UsageError("load: this generator was started already — make a new LoadGenerator")
        self._t0 = time.monotonic()
        for i in range(self.bounds.workers):
            t = threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        timer = threading.Thread(target=self._deadline, name="load-deadline", daemon=True)
        self._threads.append(timer)
        timer.start()

    def _deadline(self) -> None:
        if not self._stop.wait(self.bounds.duration):
            self._finish("duration")

    def _finish(self, why: StopReason) -> None:
        with self._lock:
            if self._stopped_by == "running":
                self._stopped_by = why
        self._stop.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop sending and wait for the in-flight requests (at most ``timeout``, default the request timeout + 1 s)."""
        self._finish("stopped")
        limit = time.monotonic() + (timeout if timeout is not None else self.bounds.timeout + 1.0)
        for t in self._threads:
            t.join(max(0.0, limit - time.monotonic()))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the generator stopped by itself (or was stopped); True when every worker has finished."""
        limit = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if limit is None else max(0.0, limit - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def stopped_by(self) -> StopReason:
        return self._stopped_by

    def now(self) -> float:
        """Seconds since the load started (the time base of every record)."""
        return time.monotonic() - self._t0

    # -- results -------------------------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(requests answered so far, of which failed)."""
        with self._lock:
            return len(self._records), self._failed

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def worker_errors(self) -> list[BaseException]:
        """Errors that ended a worker thread early (a bug, not a failed request)."""
        with self._lock:
            return list(self._errors)

    def summary(self) -> LoadSummary:
        records = self.records()
        end = max((r.end for r in records), default=0.0)
        by_mode: dict[str, int] = {}
        for r in records:
            by_mode[r.mode] = by_mode.get(r.mode, 0) + 1
        return LoadSummary(requests=len(records), failures=tuple(r for r in records if not r.ok), duration=end,
                           stopped_by=self._stopped_by, workers=self.bounds.workers, by_mode=by_mode)

    # -- workers -------------------------------------------------------------------------------------------------
    def _reserve(self) -> bool:
        with self._lock:
            if self._issued >= self.bounds.max_requests:
                done = True
            else:
                self._issued += 1
                done = False
        if done:
            self._finish("max_requests")
        return not done

    def _client(self, mode: Mode) -> httpx.Client:
        keep = 0 if mode == "new-connection" else 1
        return httpx.Client(verify=self._ctx, timeout=self.bounds.timeout, trust_env=False, follow_redirects=False,
                            limits=httpx.Limits(max_connections=1, max_keepalive_connections=keep))

    def _run(self, worker: int) -> None:
        mode = self.bounds.mode_of(worker)
        rate = self.bounds.rate
        interval = self.bounds.workers / rate if rate else 0.0
        # workers start spread over one interval, so a paced load is steady, not bursty
        next_at = interval * worker / self.bounds.workers
        url = f"https://{self._url_host()}:{self.target.port}{self.target.path}"
        headers = {"host": self.target.server_name}
        if mode == "new-connection":
            headers["connection"] = "close"
        try:
            with self._client(mode) as client:
                while not self._stop.is_set():
                    if interval:
                        delay = next_at - self.now()
                        if delay > 0 and self._stop.wait(delay):
                            break
                        next_at = max(next_at + interval, self.now() - interval)  # no catch-up burst after a stall
                    if not self._reserve():
                        break
                    self._one(client, worker, mode, url, headers)
        except Exception as exc:  # a bug in the generator: keep it for the caller, do not hide it in a thread
            with self._lock:
                self._errors.append(exc)

    def _url_host(self) -> str:
        return f"[{self.target.host}]" if ":" in self.target.host else self.target.host

    def _one(self, client: httpx.Client, worker: int, mode: Mode, url: str, headers: dict[str, str]) -> None:
        start = self.now()
        status: int | None = None
        try:
            resp = client.get(url, headers=headers, extensions={"sni_hostname": self.target.server_name})
            status = resp.status_code
            hop, reason, outcome = attribute_response(status, {k.lower(): v for k, v in resp.headers.items()},
                                                      resp.content)
        except httpx.HTTPError as exc:
            hop, reason, outcome = attribute_exception(exc)
        record = RequestRecord(start=start, end=self.now(), worker=worker, mode=mode, status=status,
                               outcome=outcome, hop=hop, reason=reason if hop else None)
        with self._lock:
            self._records.append(record)
            if not record.ok:
                self._failed += 1
        if self._on_record is not None:
            self._on_record(record)
