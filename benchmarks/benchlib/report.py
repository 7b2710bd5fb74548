"""The one table of a run (a Markdown pipe table, aligned for the terminal)
and the JSON file.

Each cell holds the server's figure and, for every row but the baseline
(smtp_stack), the ratio ``baseline figure / this server's figure``: the
form the targets of issue 8 are written in ("(a) >= 4.5x aiosmtpd" means the
aiosmtpd row's (a) ratio is at least 4.5). For lower-is-better columns (RSS,
KB per connection) a ratio below 1 means smtp_stack uses less.
"""

import json
import statistics
from dataclasses import dataclass


@dataclass
class Metric:
    scenario: str
    key: str
    header: str
    higher_is_better: bool = True
    # A rate the client may have capped (marked with a dagger); figures per
    # server CPU-second and memory are not capped by the client.
    client_limited: bool = False


METRICS = [
    Metric('a', 'a_rate', '(a) msg/s', client_limited=True),
    Metric('a', 'a_per_cpu', '(a) msg/CPU-s'),
    Metric('b', 'b_rate', '(b) msg/s', client_limited=True),
    Metric('b', 'b_per_cpu', '(b) msg/CPU-s'),
    Metric('c', 'c_mibps', '(c) MiB/s', client_limited=True),
    Metric('c', 'c_rss', '(c) peak RSS MiB', False),
    Metric('c50', 'c50_mibps', '(c50) MiB/s', client_limited=True),
    Metric('c50', 'c50_rss', '(c50) peak RSS MiB', False),
    Metric('d', 'd_kb_per_conn', '(d) KB/conn', False),
    Metric('e', 'e_rate', '(e) sessions/s', client_limited=True),
    Metric('e', 'e_per_cpu', '(e) sess/CPU-s'),
] + [metric for key in ('durable', 'durable-conn') for metric in (
    Metric(key, f'{key}_rate', f'({key}) msg/s', client_limited=True),
    Metric(key, f'{key}_per_cpu', f'({key}) msg/CPU-s'),
    Metric(key, f'{key}_sys_us', f'({key}) sys µs/msg', False),
    Metric(key, f'{key}_rss', f'({key}) peak RSS MiB', False),
)] + [metric for key in ('mx', 'mx-conn') for metric in (
    Metric(key, f'{key}_rate', f'({key}) msg/s', client_limited=True),
    Metric(key, f'{key}_per_cpu', f'({key}) msg/CPU-s'),
    Metric(key, f'{key}_cpu_ms', f'({key}) CPU-ms/msg', False),
    Metric(key, f'{key}_sys_us', f'({key}) sys µs/msg', False),
    Metric(key, f'{key}_rss', f'({key}) peak RSS MiB', False),
    Metric(key, f'{key}_helpers_ms', f'({key}) Redis+DNS CPU-ms/msg', False),
)]


class Results:
    """Every measurement of a run: per server and scenario, the figures of
    each repeat, a client-bound flag per repeat, or the error."""

    def __init__(self):
        self.runs = {}      # (server, scenario) -> list of figure dicts
        self.bound = {}     # (server, scenario) -> list of bools
        self.errors = {}    # (server, scenario) -> list of messages

    def add(self, server, scenario, figures, client_bound):
        self.runs.setdefault((server, scenario), []).append(figures)
        self.bound.setdefault((server, scenario), []).append(client_bound)

    def fail(self, server, scenario, message):
        self.errors.setdefault((server, scenario), []).append(message)

    def median(self, server, scenario, key):
        values = [r[key] for r in self.runs.get((server, scenario), []) if key in r]
        return statistics.median(values) if values else None

    def client_bound(self, server, scenario):
        return any(self.bound.get((server, scenario), []))

    def as_json(self):
        out = {}
        for (server, scenario), runs in self.runs.items():
            keys = sorted({k for r in runs for k in r
                           if isinstance(r[k], (int, float))})
            out.setdefault(server, {})[scenario] = {
                'runs': runs,
                'median': {k: self.median(server, scenario, k) for k in keys},
                'client_bound': self.client_bound(server, scenario),
            }
        for (server, scenario), messages in self.errors.items():
            out.setdefault(server, {}).setdefault(scenario, {})['errors'] = messages
        return out


def fmt_number(value):
    if value >= 100:
        return f'{value:,.0f}'
    if value >= 10:
        return f'{value:.1f}'
    return f'{value:.2f}'


def render_table(results, servers, scenarios, baseline):
    """servers: list of ServerSpec (rows, in order); scenarios: keys run."""
    metrics = [m for m in METRICS if m.scenario in scenarios]
    header = ['server', 'version'] + [m.header for m in metrics]
    rows = []
    for spec in servers:
        row = [spec.label, spec.version() or '?']
        for m in metrics:
            if m.scenario not in spec.scenarios:
                row.append('—')
                continue
            value = results.median(spec.name, m.scenario, m.key)
            if value is None:
                row.append('ERR' if (spec.name, m.scenario) in results.errors else '—')
                continue
            cell = fmt_number(value)
            if m.client_limited and results.client_bound(spec.name, m.scenario):
                cell += '†'
            base = results.median(baseline, m.scenario, m.key) if baseline else None
            if base is not None and spec.name != baseline and value > 0:
                cell += f' ({base / value:.2f}×)'
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return '| ' + ' | '.join(c.ljust(w) if i < 2 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + ' |'
    rule = '|' + '|'.join('-' * (w + 2) if i < 2 else '-' * (w + 1) + ':'
                          for i, w in enumerate(widths)) + '|'
    return '\n'.join([line(header), rule] + [line(r) for r in rows])


def render_policy_costs(results, servers, scenarios):
    """What each policy set costs over the same server with none (the MX
    scenarios): CPU-ms per message of the row minus its `mx_base` row's,
    medians of each. '' when no such pair was measured."""
    keys = [k for k in ('mx', 'mx-conn') if k in scenarios]
    rows = []
    for spec in servers:
        if not spec.mx_base:
            continue
        cells, any_value = [spec.label], False
        for key in keys:
            for metric in ('cpu_ms', 'helpers_ms'):
                value = results.median(spec.name, key, f'{key}_{metric}')
                base = results.median(spec.mx_base, key, f'{key}_{metric}')
                if value is None or base is None:
                    cells.append('—')
                else:
                    cells.append(f'{value - base:+.2f}')
                    any_value = True
        if any_value:
            rows.append(cells)
    if not rows:
        return ''
    header = ['over the same server with no policy'] + [
        f'({key}) {what}' for key in keys for what in ('+CPU-ms/msg', '+Redis+DNS CPU-ms')]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return '| ' + ' | '.join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + ' |'
    rule = '|' + '|'.join('-' * (w + 2) if i == 0 else '-' * (w + 1) + ':'
                          for i, w in enumerate(widths)) + '|'
    return '\n'.join([line(header), rule] + [line(r) for r in rows])


def write_json(path, meta, results):
    with open(path, 'w') as f:
        json.dump({'meta': meta, 'results': results.as_json()}, f, indent=2,
                  sort_keys=True)
        f.write('\n')
