"""A real Prometheus server of the test's own: on a free loopback port, its
configuration and storage in a directory of the test, scraping the given
targets every SCRAPE seconds, stopped by its pid. Queries go to its HTTP
API (/api/v1/query), polled with a deadline.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import urllib.error
import urllib.parse
import urllib.request

import peers
from conftest import WAIT, wait_until
from policy_services import free_port, stop_pid

SCRAPE = 0.5        # seconds between scrapes (and the scrape's timeout below it)


class Prometheus:

    def __init__(self, workdir: str, targets: list[str], job: str = 'smtp-stack') -> None:
        binary = peers.program('prometheus', 'prometheus')
        self.job = job
        config = os.path.join(workdir, 'prometheus.yml')
        with open(config, 'w', encoding='utf-8') as f:
            f.write(textwrap.dedent(f'''\
                global:
                  scrape_interval: {int(SCRAPE * 1000)}ms
                  scrape_timeout: {int(SCRAPE * 800)}ms
                scrape_configs:
                  - job_name: {job}
                    static_configs:
                      - targets: {json.dumps(targets)}
            '''))
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.log = open(os.path.join(workdir, 'prometheus.log'), 'w+', encoding='utf-8')
        self.proc = subprocess.Popen(
            [binary, f'--config.file={config}',
             f'--storage.tsdb.path={os.path.join(workdir, "data")}',
             f'--web.listen-address=127.0.0.1:{self.port}', '--log.level=warn'],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        if not wait_until(self._ready, WAIT):
            self.stop()
            raise AssertionError(f'prometheus did not become ready: {self.output()}')

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f'prometheus exited: {self.output()}')
        try:
            with urllib.request.urlopen(self.url + '/-/ready', timeout=1) as answer:
                return answer.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def query(self, expr: str) -> list[dict]:
        """The result vector of an instant query (now)."""
        url = f'{self.url}/api/v1/query?' + urllib.parse.urlencode({'query': expr})
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            body = json.load(answer)
        assert body['status'] == 'success', body
        return body['data']['result']

    def value(self, expr: str) -> float | None:
        """The one value of `expr` (an aggregation), or None without data."""
        result = self.query(expr)
        return float(result[0]['value'][1]) if result else None

    def values(self, exprs: dict[str, str]) -> dict[str, float | None]:
        return {name: self.value(expr) for name, expr in exprs.items()}

    def wait_for_values(self, exprs: dict[str, str], expected: dict[str, float],
                        timeout: float = WAIT) -> dict[str, float | None]:
        """Poll until the queries give `expected` (returned); otherwise an
        AssertionError showing what they gave last."""
        last: dict[str, float | None] = {}

        def matches() -> bool:
            last.update(self.values(exprs))
            return last == expected

        if not wait_until(matches, timeout, step=SCRAPE / 5):
            raise AssertionError(f'prometheus gave {last}, not {expected}; '
                                 f'its log: {self.output()}')
        return last

    def stop(self) -> None:
        stop_pid(self.proc)
        self.log.close()
