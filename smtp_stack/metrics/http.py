"""The HTTP side: /metrics in Prometheus' text format (or OpenMetrics when
the scraper asks for it), /livez and /readyz, served by gevent's WSGI
server in the hub that started it (the master, with workers).

The text is made by prometheus_client (the `metrics` extra) from a
collector of our own, which reads the shared cells of every process at
each scrape (cells.Cells.snapshot): nothing of prometheus_client runs on
a session's path. Every metric of the schema is described, with its
series so far (a counter without labels from 0).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from gevent.pywsgi import WSGIHandler, WSGIServer
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__
from ..server import hostport
from . import schema as S
from .cells import SEPARATOR

if TYPE_CHECKING:
    from . import Metrics

log = logging.getLogger('smtp_stack.metrics')

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
TEXT = 'text/plain; charset=utf-8'


class Exposition(Collector):
    """The metrics of the schema, from the cells of every process."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        series: dict[str, list[tuple[list[str], list[float]]]] = {}
        for name, values in self.metrics.cells.snapshot().items():
            metric_name, *labels = name.split(SEPARATOR)
            series.setdefault(metric_name, []).append((labels, values))
        series[S.WORKERS] = [([], [float(self.metrics.health.serving())])]
        series[S.BUILD_INFO] = [([__version__], [1.0])]
        for metric in S.METRICS:
            source = metric.derived_from or metric.name
            yield family(metric, sorted(series.get(source, ())))


def family(metric: S.Metric, series: Iterable[tuple[list[str], list[float]]]) -> Metric:
    """The metric family of `metric` with these series (label values, cells)."""
    labels = list(metric.labels)
    if metric.kind == S.HISTOGRAM:
        histogram = HistogramMetricFamily(metric.name, metric.help, labels=labels)
        bounds = [*metric.buckets, float('inf')]
        for values, cells in series:
            running, buckets = 0.0, []
            for bound, count in zip(bounds, cells, strict=False):
                running += count
                buckets.append(('+Inf' if bound == float('inf') else repr(bound), running))
            histogram.add_metric(values, buckets, cells[-1])
        return histogram
    made: CounterMetricFamily | GaugeMetricFamily
    if metric.kind == S.GAUGE:
        made = GaugeMetricFamily(metric.name, metric.help, labels=labels)
    else:
        made = CounterMetricFamily(metric.name, metric.help, labels=labels)
    found = False
    for values, cells in series:
        found = True
        if metric.derived_from is None:
            value = cells[0]
        elif metric.name == S.RECEIVED_BYTES:
            value = cells[-1]                   # the size histogram's sum
        else:
            value = sum(cells[:-1])             # its count
        made.add_metric(values, value)
    if not found and not labels:
        made.add_metric([], 0.0)
    return made


class MetricsApp:
    """The WSGI application: GET /metrics, /livez, /readyz."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Exposition(metrics))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        try:
            status, headers, body = self.answer(environ)
        except Exception:       # nothing a request does may reach the hub
            log.exception('the metrics endpoint failed on %s', environ.get('PATH_INFO'))
            status, headers, body = '500 Internal Server Error', [], b'internal error\n'
        headers = headers or [('Content-Type', TEXT)]
        headers.append(('Content-Length', str(len(body))))
        headers.append(('Cache-Control', 'no-store'))
        start_response(status, headers)
        return [b''] if environ.get('REQUEST_METHOD') == 'HEAD' else [body]

    def answer(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        path = environ.get('PATH_INFO') or '/'
        if environ.get('REQUEST_METHOD', 'GET') not in ('GET', 'HEAD'):
            return '405 Method Not Allowed', [('Content-Type', TEXT), ('Allow', 'GET, HEAD')], \
                b'GET or HEAD only\n'
        if path == '/metrics':
            encoder, content_type = choose_encoder(environ.get('HTTP_ACCEPT', ''))
            return '200 OK', [('Content-Type', content_type)], encoder(self.registry)
        if path == '/livez':
            return '200 OK', [], b'ok\n'
        if path == '/readyz':
            problems = self.metrics.health.problems()
            if problems:
                return '503 Service Unavailable', [], ''.join(
                    f'{line}\n' for line in problems).encode('utf-8', 'replace')
            return '200 OK', [], b'ready\n'
        return '404 Not Found', [], b'not found: /metrics, /livez or /readyz\n'


#: The connections being served, each from its first byte to its close:
#: a worker forked meanwhile lets go of them (workers.master_only_groups).
SERVING: set[Any] = set()


class _Handler(WSGIHandler):  # type: ignore[misc, unused-ignore]  # gevent: untyped
    """gevent's handler, with the access log at DEBUG through `logging`."""

    def handle(self) -> None:
        connection = self.socket        # gevent's handler drops it as it ends
        SERVING.add(connection)
        try:
            super().handle()
        finally:
            SERVING.discard(connection)

    def log_request(self) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug('%s', self.format_request())


def start_http(host: str, port: int, app: MetricsApp) -> WSGIServer:
    """gevent's WSGI server for `app`, listening. An address that cannot be
    bound is an OSError naming it in `filename` ('127.0.0.1:9125'), as
    SmtpServer's is."""
    # SERVER_NAME given: gevent would look the address up (getfqdn) while
    # starting, a DNS wait and a hub switch in which workers could fork.
    http = WSGIServer((host, port), app, handler_class=_Handler, log=None, error_log=None,
                      environ={'SERVER_NAME': host})
    try:
        http.start()
    except OSError as exc:
        raise OSError(exc.errno, os.strerror(exc.errno) if exc.errno else str(exc),
                      hostport(host, port)) from None
    return http
