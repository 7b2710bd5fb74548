"""Mailpit's Prometheus metrics (`--enable-prometheus`), by its names.

The names, help texts and types are Mailpit's (internal/prometheus), so a
dashboard or alert written for Mailpit reads the inbox unchanged; the
values are what `/api/v1/info` says of the default mailbox, read at each
scrape (Mailpit reads them every 15 s). `true` serves `/metrics` on the
web side, behind `--ui-auth-file` as the API is; `HOST:PORT` serves it on
a listener of its own, as Mailpit's separate metrics server does. The
text format is prometheus_client's (the `metrics` extra).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .api import runtime_info
from .http import Response
from .mailboxes import DEFAULT

log = logging.getLogger('smtp_stack.inbox')

if TYPE_CHECKING:
    from .app import InboxApp

Read = Callable[[dict[str, Any]], float]

GAUGES: tuple[tuple[str, str, Read], ...] = (
    ('mailpit_database_size_bytes', 'Size of the database in bytes',
     lambda info: info['DatabaseSize']),
    ('mailpit_memory_usage_bytes', 'Memory usage in bytes',
     lambda info: info['RuntimeStats']['Memory']),
    ('mailpit_messages', 'Total number of messages in the database',
     lambda info: info['Messages']),
    ('mailpit_messages_unread', 'Number of unread messages in the database',
     lambda info: info['Unread']),
    ('mailpit_uptime_seconds', 'Uptime of Mailpit in seconds',
     lambda info: info['RuntimeStats']['Uptime']),
)
# (name without `_total`, which the text format adds to a counter)
COUNTERS: tuple[tuple[str, str, Read], ...] = (
    ('mailpit_messages_deleted', 'Total number of messages deleted',
     lambda info: info['RuntimeStats']['MessagesDeleted']),
    ('mailpit_smtp_accepted_size_bytes', 'Total size of accepted SMTP messages in bytes',
     lambda info: info['RuntimeStats']['SMTPAcceptedSize']),
    ('mailpit_smtp_accepted', 'Total number of SMTP messages accepted',
     lambda info: info['RuntimeStats']['SMTPAccepted']),
    ('mailpit_smtp_ignored', 'Total number of SMTP messages ignored (duplicates)',
     lambda info: info['RuntimeStats']['SMTPIgnored']),
    ('mailpit_smtp_rejected', 'Total number of SMTP messages rejected',
     lambda info: info['RuntimeStats']['SMTPRejected']),
)


class InboxCollector:
    """prometheus_client's collector of the inbox's metrics (store reads off the hub)."""

    def __init__(self, app: InboxApp):
        self.app = app

    def collect(self) -> Iterator[Metric]:
        info = runtime_info(self.app, DEFAULT)
        for name, text, read in GAUGES:
            yield GaugeMetricFamily(name, text, value=read(info))
        for name, text, read in COUNTERS:
            yield CounterMetricFamily(name, text, value=read(info))
        tags = GaugeMetricFamily('mailpit_tag_messages', 'Number of messages per tag',
                                 labels=['tag'])
        for tag, count in sorted(info['Tags'].items()):
            tags.add_metric([tag], count)
        yield tags


def exposition(app: InboxApp) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InboxCollector(app))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def metrics_app(app: InboxApp) -> Callable[..., Any]:
    """The WSGI application of a metrics listener of its own: /metrics alone."""
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get('PATH_INFO') != '/metrics' or environ.get('REQUEST_METHOD') not in (
                'GET', 'HEAD'):
            return Response('not found\n', 404)(start_response)
        try:
            return exposition(app)(start_response)
        except Exception:       # noqa: BLE001 - logged; the scraper sees a 500
            log.exception('inbox: the metrics could not be read')
            return Response('internal error\n', 500)(start_response)
    return serve
