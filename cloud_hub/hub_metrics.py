"""Prometheus metrics of the hub's ingest, one registry per worker.

A registry per worker (not the global one) so two workers in one process (tests,
the benchmark) count separately and each can serve its own port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer


class IngestMetrics:
    def __init__(self, worker: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, w = self.registry, {"worker": worker}
        self.messages_in = Counter(
            "vigil_hub_messages_in", "Messages received from the broker", ["kind"], registry=r
        )
        self.stored = Counter(
            "vigil_hub_messages_stored", "Messages stored for the first time", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "vigil_hub_messages_duplicate",
            "Redelivered messages (already stored)",
            ["kind"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "vigil_hub_messages_dead_lettered",
            "Messages set aside with a reason",
            ["reason"],
            registry=r,
        )
        self.ingest_lag = Histogram(
            "vigil_hub_ingest_lag_seconds",
            "From the message's own timestamp to its commit in the store",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "vigil_hub_batch_commit_seconds", "Time to write and commit one batch", registry=r
        )
        self.batch_size = Histogram(
            "vigil_hub_batch_size",
            "Messages per committed batch",
            buckets=(1, 5, 10, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.queue_depth = Gauge(
            "vigil_hub_queue_depth", "Messages received but not yet committed", registry=r
        )
        self.store_errors = Counter(
            "vigil_hub_store_errors", "Batches that failed to commit (retried)", registry=r
        )
        # Health (issue 18): a hub that looks alive must be writing, or say why not.
        self.store_ok = Gauge(
            "vigil_hub_store_ok",
            "1 while the last commit worked; 0 while the store fails (nothing is acked)",
            registry=r,
        )
        self.store_retry_seconds = Gauge(
            "vigil_hub_store_retry_delay_seconds",
            "Backoff before the next retry of a batch the store refused (0: none)",
            registry=r,
        )
        self.store_lost = Counter(
            "vigil_hub_store_lost",
            "Times the SQLite store file vanished or was replaced under the hub (reopened)",
            registry=r,
        )
        self.writer_alive = Gauge(
            "vigil_hub_writer_alive", "1 while the writer thread runs", registry=r
        )
        self.writer_restarts = Counter(
            "vigil_hub_writer_restarts",
            "Times the supervisor restarted a writer thread that had died",
            registry=r,
        )
        self.internal_errors = Counter(
            "vigil_hub_internal_errors",
            "Batches whose processing raised outside the store (retried one by one)",
            registry=r,
        )
        self.connected = Gauge(
            "vigil_hub_connected", "1 while connected to the broker", list(w), registry=r
        ).labels(**w)
        self.gateway_last_seen = Gauge(
            "vigil_hub_gateway_last_seen_timestamp_seconds",
            "Unix time of the last message from each gateway",
            ["gw"],
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics on `port`; returns (server, thread) so it can be shut down."""
        return start_http_server(port, addr=addr, registry=self.registry)
