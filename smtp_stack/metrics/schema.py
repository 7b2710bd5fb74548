"""Every metric, declared once: name, type, labels and help. The observer
(counting.py) writes series of these names, the exposition (http.py) reads
them back by this table, and docs/operating.md lists the same rows
(tests/test_metrics.py compares them).

Names and labels follow Prometheus' conventions: `smtp_stack_` first,
counters end in `_total`, base units (bytes, seconds), and only labels of
few values (a verb, a reply class, a component's name, a dependency): never
an address, a user or a host name a client chose.
"""
from __future__ import annotations

from dataclasses import dataclass

COUNTER, GAUGE, HISTOGRAM = 'counter', 'gauge', 'histogram'

# Upper bounds of the histograms' buckets (+Inf is added).
SIZE_BUCKETS = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
                16777216.0, 67108864.0)
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()     # a histogram's, without +Inf
    # Not counted: made from another metric's series when read.
    derived_from: str | None = None

    @property
    def width(self) -> int:
        """The cells of one series: a histogram's buckets (+Inf too) and its sum."""
        return len(self.buckets) + 2 if self.kind == HISTOGRAM else 1


def _m(name: str, kind: str, help: str, *labels: str, buckets: tuple[float, ...] = (),
       derived_from: str | None = None) -> Metric:
    return Metric(name, kind, help, labels, buckets, derived_from)


CONNECTIONS = 'smtp_stack_connections_total'
CONNECTIONS_REFUSED = 'smtp_stack_connections_refused_total'
SESSIONS_OPEN = 'smtp_stack_sessions_open'
COMMANDS = 'smtp_stack_commands_total'
REFUSALS = 'smtp_stack_refusals_total'
MESSAGES_ACCEPTED = 'smtp_stack_messages_accepted_total'
MESSAGES_REFUSED = 'smtp_stack_messages_refused_total'
RECEIVED_BYTES = 'smtp_stack_received_bytes_total'
MESSAGE_SIZE = 'smtp_stack_message_size_bytes'
TRANSACTION_TIME = 'smtp_stack_transaction_seconds'
DELIVERIES = 'smtp_stack_deliveries_total'
POLICY_DECISIONS = 'smtp_stack_policy_decisions_total'
TLS_HANDSHAKES = 'smtp_stack_tls_handshakes_total'
AUTH = 'smtp_stack_auth_total'
WORKERS = 'smtp_stack_workers'
BREAKER_OPEN = 'smtp_stack_breaker_open'
BREAKER_OPENED = 'smtp_stack_breaker_opened_total'
BREAKER_FAILED_FAST = 'smtp_stack_breaker_failed_fast_total'
BUILD_INFO = 'smtp_stack_build_info'

METRICS: tuple[Metric, ...] = (
    _m(CONNECTIONS, COUNTER, 'Connections served (a connect line each).'),
    _m(CONNECTIONS_REFUSED, COUNTER, 'Connections refused before or at the greeting, '
       'by who refused them (limit: max_connections or max_connections_per_ip).', 'by'),
    _m(SESSIONS_OPEN, GAUGE, 'Sessions open now, in every worker.'),
    _m(COMMANDS, COUNTER, 'Commands by verb and class of their final reply: 2xx counted '
       "when their session ends (the disconnect line's summary), 4xx and 5xx when refused "
       '(one per recipient for an LMTP DATA).', 'command', 'class'),
    _m(REFUSALS, COUNTER, 'Refused commands (a reject line each), by verb, reply class '
       'and who refused them.', 'command', 'class', 'by'),
    _m(MESSAGES_ACCEPTED, COUNTER, 'Messages accepted (an accepted line each).',
       derived_from=MESSAGE_SIZE),
    _m(MESSAGES_REFUSED, COUNTER, 'Messages refused at DATA or BDAT (in LMTP one per '
       'recipient), by who refused them and reply class.', 'by', 'class'),
    _m(RECEIVED_BYTES, COUNTER, 'Bytes received in accepted messages (their size=).',
       derived_from=MESSAGE_SIZE),
    _m(MESSAGE_SIZE, HISTOGRAM, 'Size of the accepted messages, as received.',
       buckets=SIZE_BUCKETS),
    _m(TRANSACTION_TIME, HISTOGRAM, 'Time from MAIL to the reply that accepted the '
       'message (the deliveries that run before that reply included).',
       buckets=TIME_BUCKETS),
    _m(DELIVERIES, COUNTER, 'Deliveries per recipient (a delivery line each), by kind '
       '(maildir, relay, callable) and status (sent, deferred, bounced, discarded, '
       'quarantined).', 'kind', 'status'),
    _m(POLICY_DECISIONS, COUNTER, 'Refusals decided by a policy or another named '
       'middleware, by its name and result (reject: 5xx, tempfail: 4xx).', 'policy', 'result'),
    _m(TLS_HANDSHAKES, COUNTER, 'TLS handshakes (STARTTLS or implicit), by result '
       '(success, failure).', 'result'),
    _m(AUTH, COUNTER, 'AUTH attempts that ended in 235 or 535, by mechanism and result '
       '(success, failure).', 'mechanism', 'result'),
    _m(WORKERS, GAUGE, 'Processes serving sessions (the workers; 1 without workers).'),
    _m(BREAKER_OPEN, GAUGE, "Processes whose circuit breaker of a dependency is open "
       "(0: the dependency answers, as far as they know).", 'dependency'),
    _m(BREAKER_OPENED, COUNTER, 'Times a circuit breaker opened (a call took its timeout).',
       'dependency'),
    _m(BREAKER_FAILED_FAST, COUNTER, 'Calls failed at once by an open circuit breaker.',
       'dependency'),
    _m(BUILD_INFO, GAUGE, 'Always 1: the version serving.', 'version'),
)

BY_NAME = {metric.name: metric for metric in METRICS}
GAUGES = frozenset(metric.name for metric in METRICS if metric.kind == GAUGE)


def is_gauge(name: str) -> bool:
    return name in GAUGES
