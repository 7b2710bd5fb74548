"""The Redis store on the URLs other than redis://: `unix:///PATH` (a
redis-server on a socket file only) and `rediss://` (a redis-server on TLS
only, with a CA and certificates made at test time), against real
redis-servers (policy_services.RedisServer)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from smtp_stack.policies import StoreError, rate_limit, store
from smtp_stack.policies.stores import redacted

from clirunner import env_with_package
from policy_services import (RedisServer, RedisTls, rcpt, redis_tls,  # noqa: F401 (fixtures)
                             redis_tls_server, redis_unix_server, serve)


@pytest.fixture(params=['unix', 'tls'])
def any_url(request):
    return request.getfixturevalue(f'redis_{request.param}_server').url


@pytest.fixture(scope='module')
def redis_mtls_server(tmp_path_factory, redis_tls):
    """On TLS, and asking every client for a certificate (tls-auth-clients yes)."""
    server = RedisServer(str(tmp_path_factory.mktemp('redis-mtls')), tls=redis_tls,
                         client_certs=True)
    yield server
    server.stop()


def key() -> str:
    return f'k{time.time_ns()}'


def test_store_operations_on_a_socket_file_and_over_tls(any_url):
    s = store(any_url)
    k = key()
    try:
        assert s.add(k, 'one', 5) is True and s.add(k, 'two', 5) is False
        assert s.get(k) == 'one'
        assert s.incr(k + 'n', 2, 5) == 2
        now = time.time()
        assert [s.hit(k + 'w', 10, 2, now + i) for i in range(3)] == [1, 2, None]
        s.delete(k)
        assert s.get(k) is None
    finally:
        s.close()


def test_two_servers_share_a_rate_limit_on_a_socket_file_and_over_tls(serve, any_url):
    a = serve(rate_limit(recipients=2, per=60, key='sender', store=store(any_url)))
    b = serve(rate_limit(recipients=2, per=60, key='sender', store=store(any_url)))
    sender = f'{key()}@x.test'
    assert [rcpt(srv, '198.51.100.70', sender, 'r@example.test')[0]
            for srv in (a, b, a)] == [250, 250, 450]


def test_tls_verifies_the_server_certificate(redis_tls_server, tmp_path):
    """A certificate that no trusted CA signed, or for another name, is
    refused: the store fails (and the policies fail open) rather than talk
    to a server it cannot authenticate."""
    port = redis_tls_server.port
    other = RedisTls(str(tmp_path))
    untrusted = [f'rediss://localhost:{port}/0?ssl_ca_certs={other.ca}',   # another CA
                 f'rediss://localhost:{port}/0',                           # the system's CAs
                 f'rediss://127.0.0.1:{port}/0?ssl_ca_certs={redis_tls_server.tls.ca}']  # the name
    for url in untrusted:
        s = store(url)
        try:
            with pytest.raises(StoreError, match='certificate verify failed'):
                s.get('k')
        finally:
            s.close()
    unverified = store(f'rediss://localhost:{port}/0?ssl_cert_reqs=none')   # said in so many words
    try:
        unverified.set('k', 'v', 5)
        assert unverified.get('k') == 'v'
    finally:
        unverified.close()


def test_tls_with_a_client_certificate(redis_mtls_server, redis_tls):
    without = store(redis_mtls_server.url)
    mine = store(f'{redis_mtls_server.url}&ssl_certfile={redis_tls.client_cert}'
                 f'&ssl_keyfile={redis_tls.client_key}')
    try:
        with pytest.raises(StoreError):
            without.get('k')
        k = key()
        mine.set(k, 'v', 5)
        assert mine.get(k) == 'v'
    finally:
        without.close()
        mine.close()


@pytest.mark.parametrize('url, message', [
    ('unix://', 'needs the path of the socket file'),
    ('rediss://localhost:6379/0?ssl_ca_certs=/nonexistent/ca.pem', 'ssl_ca_certs: no such file'),
    ('redis://127.0.0.1:6379/0?ssl_ca_certs=/etc/hostname', 'ssl_ca_certs needs a rediss:// URL'),
    ('rediss://localhost:6379/0?ssl_ca_cert=/etc/hostname',
     "unexpected keyword argument 'ssl_ca_cert'"),
    ('rediss://localhost:6379/0?ssl_cert_reqs=sometimes', 'sometimes'),
])
def test_store_urls_are_checked_at_construction(url, message):
    with pytest.raises(ValueError, match=message):
        store(url)


def test_passwords_stay_out_of_the_url_that_is_logged():
    assert store('unix://:secret@/run/redis.sock?db=0').url == 'unix://:***@/run/redis.sock?db=0'
    assert 'secret' not in store('rediss://localhost:6379/0?password=secret').url
    assert redacted('sqlite:////var/lib/x/state.db') == 'sqlite:////var/lib/x/state.db'


PATCHED = r'''
from gevent import monkey; monkey.patch_all()
import sys, time
from smtp_stack.policies import store
s = store(sys.argv[1])
assert s.hit('patched-%d' % time.time_ns(), 60, 5) == 1
s.close()
print('ok')
'''


def test_socket_file_and_tls_in_a_monkey_patched_process(any_url):
    """Patched, redis-py runs in the greenlet on gevent's socket and ssl."""
    out = subprocess.run([sys.executable, '-c', PATCHED, any_url], capture_output=True,
                         text=True, timeout=30, env=env_with_package())
    assert out.returncode == 0 and out.stdout.split() == ['ok'], out.stderr
