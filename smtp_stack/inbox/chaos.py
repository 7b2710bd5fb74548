"""Chaos: SMTP errors injected on purpose, with a probability, as Mailpit's.

A test of an application's retry and error handling asks the inbox to
fail some commands: `PUT /api/v1/chaos` with
`{"Sender": {"ErrorCode": 451, "Probability": 50}}` makes half of the MAIL
commands fail with `451 Chaos sender error`. The three triggers and their
defaults are Mailpit's (internal/smtpd/chaos): Sender (MAIL, 451),
Recipient (RCPT, 451) and Authentication (AUTH, 535), each at 0 % until
set. A trigger left out of a PUT goes back to its default, so `{}` turns
everything off. Codes are 400 to 599, probabilities 0 to 100; a bad value
changes nothing (Mailpit applies the triggers before it up to the bad one).

`ChaosMiddleware` is the SMTP side: a middleware that answers a command
with the trigger's code before the server acts on it, so the failure is
what a client of a real server that said no would see.

Unlike Mailpit, chaos needs no `--enable-chaos` to be set over the API:
all triggers are at 0 % until someone sets them, and whoever can reach the
API can already delete every message (docs/decisions.md).
"""
from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SmtpError

if TYPE_CHECKING:
    from ..middleware import Context, Next


@dataclass(frozen=True)
class Stage:
    name: str           # the trigger's name in the JSON
    command: str        # the SMTP command it fails
    default_code: int
    text: str           # the reply's text, as Mailpit words it


STAGES = (
    Stage('Sender', 'MAIL', 451, 'Chaos sender error'),
    Stage('Recipient', 'RCPT', 451, 'Chaos recipient error'),
    Stage('Authentication', 'AUTH', 535, 'Chaos authentication error'),
)
_BY_COMMAND = {stage.command: stage for stage in STAGES}


class ChaosError(ValueError):
    """A trigger the API refuses (the reason is the 400's text)."""


class Chaos:
    """The current triggers: {stage name: (error code, probability in %)}."""

    def __init__(self, roll: Callable[[int], int] = secrets.randbelow):
        self._roll = roll           # roll(100) -> 0..99
        self._lock = threading.Lock()
        self._triggers = {stage.name: (stage.default_code, 0) for stage in STAGES}

    def triggers(self) -> dict[str, dict[str, int]]:
        """Mailpit's ChaosTriggers JSON."""
        with self._lock:
            current = dict(self._triggers)
        return {name: {'ErrorCode': code, 'Probability': chance}
                for name, (code, chance) in current.items()}

    def set(self, body: dict[str, Any]) -> None:
        """Replace every trigger from a ChaosTriggers body (all checked first)."""
        new = {stage.name: _trigger(stage, body.get(stage.name)) for stage in STAGES}
        with self._lock:
            self._triggers = new

    @property
    def active(self) -> bool:
        with self._lock:
            return any(chance for _code, chance in self._triggers.values())

    def fires(self, command: str) -> tuple[int, str] | None:
        """(code, text) when this command is to fail now, else None."""
        stage = _BY_COMMAND.get(command)
        if stage is None:
            return None
        with self._lock:
            code, chance = self._triggers[stage.name]
        if chance and self._roll(100) < chance:
            return code, stage.text
        return None


# Mailpit's --chaos-triggers names for its triggers (any case)
_TRIGGER_NAMES = {'sender': 'Sender', 'recipient': 'Recipient', 'recipients': 'Recipient',
                  'auth': 'Authentication', 'authentication': 'Authentication'}
_TRIGGER_TEXT = re.compile(r'([a-zA-Z]+):(\d{3}):(\d+)')


def parse_triggers(text: str) -> dict[str, Any]:
    """Mailpit's `--chaos-triggers "Sender:451:50,Recipient:550:10"` (name,
    error code, probability in %) as the ChaosTriggers body `Chaos.set`
    takes; a ChaosError (a ValueError) saying which item is wrong."""
    body: dict[str, Any] = {}
    for item in text.split(','):
        match = _TRIGGER_TEXT.fullmatch(item.strip())
        name = _TRIGGER_NAMES.get(match[1].lower()) if match else None
        if match is None or name is None:
            raise ChaosError(f'{item.strip()!r}: expected Sender, Recipient or '
                             'Authentication:CODE:PROBABILITY')
        body[name] = {'ErrorCode': int(match[2]), 'Probability': int(match[3])}
    Chaos().set(body)       # the codes and probabilities checked as the API checks them
    return body


def _trigger(stage: Stage, value: object) -> tuple[int, int]:
    if value is None:
        return stage.default_code, 0
    if not isinstance(value, dict):
        raise ChaosError(f'{stage.name} must be an object with ErrorCode and Probability')
    code = _whole(value.get('ErrorCode', 0), f'{stage.name}.ErrorCode') or stage.default_code
    chance = _whole(value.get('Probability', 0), f'{stage.name}.Probability')
    if not 400 <= code <= 599:
        raise ChaosError('error code must be between 400 and 599')
    if not 0 <= chance <= 100:
        raise ChaosError('probability must be between 0 and 100')
    return code, chance


def _whole(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChaosError(f'{name} must be a whole number')
    return value


class ChaosMiddleware:
    """Fails MAIL, RCPT and AUTH as the triggers say, before the server acts."""

    def __init__(self, chaos: Chaos):
        self.chaos = chaos

    def __call__(self, ctx: Context, next: Next) -> None:
        failure = self.chaos.fires(ctx.command_name)
        if failure is not None:
            code, text = failure
            raise SmtpError(code, text)
        next()

    def describe(self) -> str:
        return 'inbox chaos (SMTP errors on demand: /api/v1/chaos)'
