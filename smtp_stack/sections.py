"""The registry of delivery sections: one row per kind of delivery.

    deliver: {maildir: DIR} | {relay: {...}} | {callable: "package.module:function"}
    inbox:   {db, http, ...}           the development inbox, at the top of the file

Each row (a params.Section) checks its section of the YAML, builds the
delivery and describes it in one line without building it (check-config);
the keys of relay: and inbox: are the parameters RelayDelivery and
InboxDelivery declare in their signatures. config.py checks a file with
these rows, receiver.py builds from them, and nothing switches on a
kind's name: a new kind of delivery is one more row.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from .delivery import CallableDelivery, MaildirDelivery, RelayDelivery
from .delivery.maildir import describe_maildir
from .delivery.upstream import describe_upstream
from .params import CALLABLE, Declared, Reader, Section, Spec

if TYPE_CHECKING:
    from .delivery.base import Delivery

DEFAULT_MAILDIR = 'maildir'


class CallableSection:
    """`deliver: {callable: "package.module:function"}`: CallableDelivery of
    that function (the spec is kept, to describe and to compare on reload)."""

    form = CALLABLE.words
    live = True

    def check(self, value: object, where: str, reader: Reader) -> Spec | None:
        try:
            return {'fn': CALLABLE.convert(value, reader), 'spec': value}
        except ValueError as exc:
            reader.error(where, str(exc) or f'must be {CALLABLE.words}')
            return None

    def build(self, spec: Spec) -> CallableDelivery:
        return CallableDelivery(spec['fn'])

    def describe(self, spec: Spec) -> str:
        return f'callable {spec["spec"]}'


def _inbox() -> type:
    from .inbox.section import InboxDelivery       # the inbox extra: checked before
    return InboxDelivery


def _describe_inbox(spec: Spec) -> str:
    from .inbox.section import describe
    return describe(spec)


def _inbox_between_keys(spec: Spec) -> None:
    from .inbox.section import check_between_keys
    check_between_keys(spec)


DELIVERIES: dict[str, Section] = {
    'maildir': Declared('maildir', lambda: MaildirDelivery, scalar='path',
                        describe=lambda spec: describe_maildir(spec['path'])),
    'relay': Declared('relay', lambda: RelayDelivery, noun='option', trial={},
                      describe=lambda spec: describe_upstream(
                          spec['host'], spec.get('port'), spec.get('lmtp', False))),
    'callable': CallableSection(),
    # its web side listens: a change needs a restart
    'inbox': Declared('inbox', _inbox, noun='key', live=False, describe=_describe_inbox,
                      between=_inbox_between_keys),
}
# The rows written at the top of the file rather than under `deliver:`,
# with the extra each needs and the module that needs it.
TOP_LEVEL = {'inbox': ('inbox', 'smtp_stack.inbox.section')}
# Server options whose default a delivery changes (the file's own keys
# still win): the inbox limits no SMTP session to a number of messages,
# as `smtp-stack inbox` and Mailpit do (a test suite sends its mail over
# one connection).
SERVER_DEFAULTS = {'inbox': {'max_messages': 0}}


class DeliverySpec(NamedTuple):
    """The checked delivery: its kind, a row of DELIVERIES, and the keyword
    arguments that row made of its section."""
    kind: str
    spec: Spec

    @property
    def section(self) -> Section:
        return DELIVERIES[self.kind]

    def build(self) -> Delivery:
        built: Delivery = self.section.build(self.spec)
        return built

    def describe(self) -> str:
        """Where mail goes, in one line: 'maildir /srv/mail'."""
        return self.section.describe(self.spec)


def default_delivery() -> DeliverySpec:
    """./maildir of the working directory (when nothing else is asked, or
    in place of a section with errors: the configuration is refused then)."""
    return DeliverySpec('maildir', {'path': os.path.abspath(DEFAULT_MAILDIR)})
