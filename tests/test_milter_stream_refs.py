"""A MilterServer message's data_stream is freed when nothing uses it any
more, without waiting for the garbage collector: the stream and the
function it pulls the content with make no reference cycle (one kept
each message's reader, and through it the MTA connection, alive until a
collection)."""
import gc
import weakref

from postfix_private import MtaClient, milter_thread
from smtp_stack.milter import MilterServer
from smtp_stack.milter import protocol as P

PACKETS = (P.command(P.CONNECT, 'client.example', P.FAMILY_INET, 40000, '192.0.2.7'),
           P.command(P.HELO, 'client.example'), P.command(P.MAIL, ['<a@example.org>']),
           P.command(P.RCPT, ['<b@example.org>']), P.command(P.DATA),
           P.command(P.HEADER, 'Subject', 'refs'), P.command(P.EOH),
           P.command(P.BODY, b'body\r\n'), P.command(P.EOB, b''))


def test_a_messages_stream_needs_no_collection_to_go():
    streams = []
    server = MilterServer(name='milter.test')

    @server.use
    def read_it(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            stream = ctx.session.envelope.data_stream
            stream.read()
            streams.append(weakref.ref(stream))

    gc.collect()
    gc.disable()
    try:
        with milter_thread(server):
            client = MtaClient(server)
            client.negotiate(protocol=0x1FFFFF & ~P.SKIP_OK)
            client.send(*PACKETS)
            while True:
                packet = client.reply()
                assert packet is not None, 'the milter closed'
                if packet.command in (P.ACCEPT, P.CONTINUE) and streams:
                    break
            client.send(P.command(P.QUIT))
            client.close()
        assert streams and streams[0]() is None, gc.get_referrers(streams[0]())
    finally:
        gc.enable()
