"""The milter's sockets (smtp_stack/milter/transport.py) and the greenlets
that serve MTA connections (server.Connections), over loopback with the
packet-level MTA of postfix_private."""
import logging
import socket

import gevent
import pytest

from conftest import wait_until
from postfix_private import MtaClient, milter_thread
from log_lines import kept_lines
from smtp_stack import LogLevels
from smtp_stack.middleware import stages
from smtp_stack.milter import MilterServer
from smtp_stack.milter import protocol as P
from smtp_stack.milter.server import Connections

CONNECT = P.command(P.CONNECT, 'client.example', P.FAMILY_INET, 40000, '192.0.2.7')
QUIT = P.command(P.QUIT)


@pytest.fixture
def log():
    with kept_lines('smtp_stack.test_milter_transport') as lines:
        yield lines


def milter(log=None, **options):
    if log is not None:
        options.setdefault('log_backend', logging.getLogger('smtp_stack.test_milter_transport'))
        options.setdefault('log_level', LogLevels.DEBUG)
    return MilterServer(name='milter.test', **options)


def session(server):
    """One MTA connection: the negotiation, CONNECT (answered: on_connect
    is set), QUIT; returns once the milter has closed it."""
    client = MtaClient(server)
    client.negotiate()
    client.send(CONNECT)
    assert client.reply().command == P.CONTINUE
    client.send(QUIT)
    assert client.closed()
    client.close()


# -- the greenlets serving connections ----------------------------------------------

def test_one_greenlet_serves_connection_after_connection():
    """A greenlet whose connection ended takes the next one: Postfix opens
    a connection per SMTP session, and a new greenlet costs its stack."""
    serving = []
    server = milter(on_connect=lambda s: serving.append(gevent.getcurrent()))
    with milter_thread(server):
        for _ in range(3):
            session(server)
            assert wait_until(lambda: len(server.connections) == 0)
    assert len(serving) == 3
    assert serving[0] is serving[1] is serving[2]


def test_a_connection_takes_the_watchers_of_one_that_ended():
    """The read watcher and timer of an ended connection serve the next one
    on its own socket (Postfix: a connection per SMTP session); stop()
    closes those kept and keeps none."""
    server = milter(on_connect=lambda s: None, socket_timeout=30)
    with milter_thread(server):
        kept = []
        for _ in range(3):
            session(server)
            assert wait_until(lambda: len(server.connections) == 0)
            assert len(server.spare_watchers) == 1
            kept.append(server.spare_watchers[0])
        readable, timer = kept[0]
        assert kept[1] == kept[2] == (readable, timer) and not readable.active
    assert server.spare_watchers == []


def test_close_ends_the_greenlets_waiting_for_a_connection():
    """stop() closes Connections: a greenlet kept for the next connection
    ends then, in its own hub, not whenever its thread goes."""
    served = []

    def serve(sock, peer):
        served.append(gevent.getcurrent())
        sock.close()

    connections = Connections(serve)
    ours, theirs = socket.socketpair()
    gevent.get_hub().loop.run_callback(connections.start, ours, 'peer')  # as Listener does
    gevent.sleep(0)
    theirs.close()
    assert len(served) == 1 and not served[0].dead and len(connections) == 0
    connections.close()
    assert served[0].dead


def test_connections_over_max_connections_are_closed_at_once(log):
    with milter_thread(milter(log, max_connections=1, on_connect=lambda s: None)) as server:
        first = MtaClient(server)
        first.negotiate()
        second = MtaClient(server)
        assert second.closed()
        second.close()
        first.send(CONNECT)
        assert first.reply().command == P.CONTINUE      # the first is served on
        first.close()
    assert any('refused: max_connections' in line for line in log.lines), log.lines


# -- reading and writing -------------------------------------------------------------

def test_an_mta_silent_past_socket_timeout_is_disconnected(log):
    with milter_thread(milter(log, socket_timeout=0.2, on_connect=lambda s: None)) as server:
        client = MtaClient(server)
        client.negotiate()
        assert client.closed()      # the milter closes the connection: within MtaClient's 10 s
        client.close()
    assert any('the MTA sent nothing for 0.2 s' in line for line in log.lines), log.lines


def test_packets_come_out_whole_however_the_bytes_arrive():
    """Several packets in one write, and one packet a byte per write."""
    server = milter(on_connect=lambda s: None)
    with milter_thread(server):
        client = MtaClient(server)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = P.command(P.OPTNEG, 6, 0x1FF, 0x1FFFFF)
        for byte in range(len(wire)):
            client.sock.sendall(wire[byte:byte + 1])
        assert client.reply().command == P.OPTNEG
        client.send(P.macro_packet(P.CONNECT, [('j', 'mx.example')]), CONNECT,
                    P.command(P.HELO, 'client.example'))
        assert [client.reply().command for _ in range(2)] == [P.CONTINUE, P.CONTINUE]
        client.send(QUIT)
        assert client.closed()
        client.close()


def test_a_reply_larger_than_the_socket_buffers_arrives_whole():
    """A 16 MiB body replacement is one reply: the milter sends what the
    socket takes and waits for room for the rest, without blocking the hub."""
    body = bytes(range(256)) * (16 * 4096)
    server = milter()

    @server.use
    @stages()       # the end of the message alone
    def replace(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.session.envelope.replace_body(body)

    with milter_thread(server):
        client = MtaClient(server, timeout=30)
        client.negotiate()
        client.send(P.macro_packet(P.CONNECT, [('{client_addr}', '192.0.2.7')]),
                    P.command(P.EOB, b''))
        other = MtaClient(server)       # the hub serves others meanwhile
        other.negotiate()
        other.close()
        got = []
        while (packet := client.reply()).command == P.REPLBODY:
            got.append(packet.data)
        assert packet.command == P.CONTINUE
        client.close()
    assert b''.join(got) == body


def test_a_middleware_may_read_the_message_in_a_greenlet_of_its_own():
    """The wait for the MTA's next packet wakes the greenlet that waits,
    whichever reads data_stream, not the connection's."""
    server = milter()

    @server.use
    @stages('DATA')
    def reads_aside(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            body = gevent.spawn(ctx.data_stream.read).get(timeout=10)
            ctx.session.envelope.add_header('X-Read', str(len(body)))

    with milter_thread(server):
        client = MtaClient(server)
        client.negotiate()
        client.send(P.macro_packet(P.CONNECT, [('{client_addr}', '192.0.2.7')]),
                    P.command(P.DATA))
        assert client.reply().command == P.CONTINUE     # the reader began: it waits now
        client.send(P.command(P.HEADER, 'Subject', ' aside'), P.command(P.EOH),
                    P.command(P.BODY, b'x' * 1000))
        assert client.reply().command == P.CONTINUE     # the body chunk
        client.send(P.command(P.EOB, b''))
        inserted, verdict = client.reply(), client.reply()
        assert P.read_reply(inserted) == [0, 'X-Read', ' 1018']     # 'Subject: aside', CRLF, CRLF, the body
        assert verdict.command == P.CONTINUE
        client.close()
