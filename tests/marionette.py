"""A small client of Mozilla's Marionette protocol, enough to drive Thunderbird.

The wire format (firefox-source-docs, remote/marionette/Protocol): every
packet is `LENGTH:JSON`, LENGTH the decimal count of the JSON's UTF-8 bytes.
On connect the server sends one packet, `{"applicationType": "gecko",
"marionetteProtocol": 3}`. A command is `[0, id, name, parameters]`, its
response `[1, id, error, result]`, error null on success or an object with
`error`, `message` and `stacktrace`. The server may answer out of order, so
a response is matched to its command by id.
"""
from __future__ import annotations

import json
import socket
from typing import Any

COMMAND, RESPONSE = 0, 1


class MarionetteError(Exception):
    """The server answered a command with an error (`kind` is WebDriver's name)."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.kind = str(error.get('error', 'unknown error'))
        self.stacktrace = str(error.get('stacktrace') or '')
        super().__init__(f"{command}: {self.kind}: {error.get('message', '')}")


class Marionette:
    """One connection to a Marionette server; every read bounded by `timeout`.

    `timeout` must exceed the longest script a test runs: the server answers
    an ExecuteAsyncScript only when the script calls back (or its own script
    timeout, set with `set_timeouts`, ends it).
    """

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b''
        self.last_id = 0
        hello = self._read_packet()
        if hello.get('marionetteProtocol') != 3:
            raise ConnectionError(f'not a Marionette protocol 3 server: {hello!r}')
        self.application = hello.get('applicationType')

    # -- framing ----------------------------------------------------------------

    def _read_packet(self) -> Any:
        while b':' not in self.buffer:
            self._receive()
        length, _, self.buffer = self.buffer.partition(b':')
        if not length.isdigit():
            raise ConnectionError(f'bad Marionette packet length {length[:20]!r}')
        size = int(length)
        while len(self.buffer) < size:
            self._receive()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return json.loads(data.decode('utf-8'))

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError('the Marionette server closed the connection')
        self.buffer += data

    def _write_packet(self, value: Any) -> None:
        data = json.dumps(value).encode('utf-8')
        self.sock.sendall(str(len(data)).encode('ascii') + b':' + data)

    # -- commands ---------------------------------------------------------------

    def command(self, name: str, parameters: dict[str, Any] | None = None) -> Any:
        """Send one command and return its result (MarionetteError on an error)."""
        self.last_id += 1
        sent = self.last_id
        self._write_packet([COMMAND, sent, name, parameters or {}])
        while True:
            packet = self._read_packet()
            if packet[0] == RESPONSE and packet[1] == sent:
                break
        _, _, error, result = packet
        if error:
            raise MarionetteError(name, error)
        return result

    def new_session(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start the session; `capabilities` are required ones (WebDriver's alwaysMatch)."""
        result = self.command('WebDriver:NewSession',
                              {'capabilities': {'alwaysMatch': capabilities or {}}})
        return dict(result)

    def set_context(self, context: str) -> None:
        """'chrome' (the application's own windows and XPCOM) or 'content'."""
        self.command('Marionette:SetContext', {'value': context})

    def set_timeouts(self, script_ms: int) -> None:
        self.command('WebDriver:SetTimeouts', {'script': script_ms})

    def execute_script(self, script: str, args: list[Any] | None = None) -> Any:
        """Run `script` as a function body with `arguments`; its return value."""
        result = self.command('WebDriver:ExecuteScript',
                              {'script': script, 'args': args or [], 'newSandbox': True})
        return result.get('value') if isinstance(result, dict) else result

    def execute_async_script(self, script: str, args: list[Any] | None = None) -> Any:
        """Run `script` with a callback as its last argument; what it passes back."""
        result = self.command('WebDriver:ExecuteAsyncScript',
                              {'script': script, 'args': args or [], 'newSandbox': True})
        return result.get('value') if isinstance(result, dict) else result

    def alert_text(self) -> str:
        """The text of the open user prompt (MarionetteError 'no such alert' if none)."""
        return str(self.command('WebDriver:GetAlertText')['value'])

    def accept_alert(self) -> None:
        self.command('WebDriver:AcceptAlert')

    def dismiss_alert(self) -> None:
        """Press the prompt's second button (Cancel), or its only one."""
        self.command('WebDriver:DismissAlert')

    def quit(self) -> None:
        """Ask the application to quit (it may close the socket before answering)."""
        try:
            self.command('Marionette:Quit', {'flags': ['eForceQuit']})
        except (ConnectionError, OSError):
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
