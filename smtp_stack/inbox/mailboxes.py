"""Mailboxes (`--mailboxes by-user | by-recipient | off`): which mailbox a message goes to.

Past Mailpit, which keeps one mailbox for everyone. Pure: a user name and
envelope recipients in, mailbox names out.

- `off` (the default): every message goes to the default mailbox, whose
  name is '' -- the inbox as it was before mailboxes.
- `by-user`: a message sent with SMTP AUTH goes to the mailbox named by
  the user (`POST /api/v1/send`: the HTTP basic-auth user); one sent
  without AUTH to the default mailbox.
- `by-recipient`: each envelope recipient's copy goes to the mailbox named
  by its address; with a pattern such as `test+*@example.com`, by what the
  `*` stands for (`test+ann@example.com` -> `ann`), and a recipient the
  pattern does not match puts its copy in the default mailbox. Recipients
  of one mailbox share one copy.

A message for several mailboxes is stored once in each (store.py), as an
MTA delivers one copy per mailbox: each has its own ID, read flag and
tags, and a delete in one mailbox leaves the others alone.

A name is case-insensitive (kept in lower case, as addresses are compared
in practice) and is one segment of a URL path (`/mailbox/NAME/api/v1/...`,
app.py): 1 to 254 characters, none of them '/', whitespace or a control
character, and not '.' or '..', which browsers take out of a path. A user
or an address that makes no such name gets the default mailbox.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

DEFAULT = ''                # the default mailbox's name
OFF, BY_USER, BY_RECIPIENT = 'off', 'by-user', 'by-recipient'
MODES = (OFF, BY_USER, BY_RECIPIENT)
MAX_NAME = 254              # the longest address RFC 5321 4.5.3.1.3 lets through a path
_NOT_IN_A_NAME = re.compile(r'[/\s\x00-\x1f\x7f]')
PATH_SAFE = "!$&'()*+,;=:@"    # what a name keeps unquoted in a path (RFC 3986 3.3 pchar)


def mailbox_name(text: str | None) -> str | None:
    """The mailbox `text` names (lower case), or None when it can name none."""
    if not text:
        return None
    name = text.strip().lower()
    if not name or len(name) > MAX_NAME or name in ('.', '..') or _NOT_IN_A_NAME.search(name):
        return None
    return name


def mailbox_path(root: str, mailbox: str) -> str:
    """The path of a mailbox's page under the app's `root`: '/' for the
    default one, '/mailbox/ann%25b/' for `ann%b`."""
    if mailbox == DEFAULT:
        return root.rstrip('/') + '/'
    return f'{root.rstrip("/")}/mailbox/{quote(mailbox, safe=PATH_SAFE)}/'


@dataclass(frozen=True)
class Routing:
    """The mailboxes of a new message, by `mode` (and a recipient `pattern`)."""
    mode: str = OFF
    pattern: str | None = None
    _match: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, mode: str = OFF, pattern: str | None = None) -> Routing:
        """ValueError, saying why, for an unknown mode or a pattern that is
        not one address with one `*`, or that is given without by-recipient."""
        if mode not in MODES:
            raise ValueError(f'mailboxes must be one of {", ".join(MODES)}, not {mode!r}')
        if not pattern:
            return cls(mode)
        if mode != BY_RECIPIENT:
            raise ValueError('a mailbox pattern needs mailboxes by-recipient')
        if pattern.count('*') != 1 or '@' not in pattern or _NOT_IN_A_NAME.search(pattern):
            raise ValueError(f'mailbox pattern {pattern!r}: an address with one * standing '
                             "for the mailbox's name, such as 'test+*@example.com'")
        before, after = pattern.split('*')
        regex = re.compile(re.escape(before) + '(.+)' + re.escape(after), re.IGNORECASE)
        return cls(mode, pattern, regex)

    @property
    def on(self) -> bool:
        """Whether there is more than the default mailbox."""
        return self.mode != OFF

    def mailboxes(self, username: str | None, recipients: Iterable[str]) -> list[str]:
        """The mailboxes a message goes to, each once, in the recipients' order."""
        if self.mode == BY_USER:
            return [mailbox_name(username) or DEFAULT]
        if self.mode != BY_RECIPIENT:
            return [DEFAULT]
        found = dict.fromkeys(self.recipient_mailbox(address) for address in recipients)
        return list(found) or [DEFAULT]

    def recipient_mailbox(self, address: str) -> str:
        """The mailbox of one recipient (by-recipient)."""
        if self._match is None:
            return mailbox_name(address) or DEFAULT
        matched = self._match.fullmatch(address.strip())
        return (mailbox_name(matched.group(1)) or DEFAULT) if matched else DEFAULT
