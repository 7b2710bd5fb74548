"""`${VAR}` and `${VAR:-default}` in the YAML's string values: secrets from the environment.

    deliver:
      relay:
        host: ${RELAY_HOST:-smtp.example.com}
        password: ${RELAY_PASSWORD}
    store: redis://:${REDIS_PASSWORD}@redis.internal:6379/0

The rules, checked on the loaded document (so YAML quoting is done first):
- only string values: keys, numbers, booleans and null stay as written, and
  what a reference gives is always a string (`port: ${PORT}` is the string
  '2525', which a port refuses: write numbers in the file);
- a reference is `${NAME}` (NAME: letters, digits, `_`, not starting with a
  digit) or `${NAME:-default}`, whose default (any text without `}`) stands
  when NAME is unset or empty, as in the shell; the whole value or inside it;
- `$${` is a literal `${`; any other `$` is itself;
- what a variable holds is not read again: a `${` inside a password stays;
- a variable that is not set, with no default, is an error naming the key's
  path and the variable, as is a `${` that is not a reference: every error
  of the document at once, like the checker's.

What came from the environment (not the defaults, which the file shows
anyway) must never be printed: `Substitutions.redact` turns each such
value, wherever it appears in a message, back into the text written in
the file (`${RELAY_PASSWORD}`), so an error about a substituted value, or
`check-config`'s summary, shows the reference and not the secret.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

Error = tuple[str, str]         # (path in the document, message), as config.ConfigError takes

# `$${` (a literal), or `${` up to the next `}` (a reference, or a mistake when
# the body is not NAME or NAME:-default, or when no `}` closes it).
_TOKEN = re.compile(r'\$\$\{|\$\{(?P<body>[^}]*)(?P<close>\}?)')
_BODY = re.compile(r'(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?', re.DOTALL)
_FORMS = 'write ${NAME} or ${NAME:-default} ($${ for a literal ${)'
_WORD = re.compile(r'[A-Za-z0-9]')


class SubstitutionError(ValueError):
    """Unset variables and malformed references: every one, as (path, message)."""

    def __init__(self, errors: Iterable[Error]):
        self.errors = list(errors)
        super().__init__('\n'.join(f'{path}: {message}' if path else message
                                   for path, message in self.errors))


class Substitutions:
    """What `expand` took from the environment: the paths of the values
    it changed, and `redact`, which keeps those values out of any text."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}         # path -> the value as written in the file
        self._written: dict[str, str] = {}      # a value from the environment -> as written
        self._pattern: re.Pattern[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.paths)

    def __repr__(self) -> str:       # the paths only: a repr in a traceback shows no secret
        return f'<Substitutions {sorted(self.paths)}>'

    def _add(self, path: str, written: str, value: str, taken: dict[str, str]) -> None:
        """`written` at `path` became `value`; `taken`: reference text -> what
        the environment gave for it (defaults excluded)."""
        self.paths[path] = written
        for text, secret in [(value, written)] + [(v, ref) for ref, v in taken.items()]:
            for form in (text, repr(text)[1:-1]):     # as is, and as `{value!r}` escapes it
                if form and form not in self._written:
                    self._written[form] = secret
        self._pattern = None

    def redact(self, text: str) -> str:
        """`text` with every value from the environment replaced by what the
        file says there ('${RELAY_PASSWORD}'). A value is replaced where it
        stands as itself, not inside a longer word: a variable holding '5'
        leaves 'port 65535' alone."""
        if not self._written:
            return text
        if self._pattern is None:
            self._pattern = re.compile('|'.join(
                _bounded(value) for value in sorted(self._written, key=len, reverse=True)))
        return self._pattern.sub(lambda match: self._written[match[0]], text)

    def redact_errors(self, errors: Iterable[Error]) -> list[Error]:
        """The (path, message) pairs with each message redacted (a path is
        made of keys, which are never substituted)."""
        return [(path, self.redact(message)) for path, message in errors]


def _bounded(value: str) -> str:
    """A pattern for `value` that does not match inside a longer word."""
    before = r'(?<![A-Za-z0-9])' if _WORD.match(value[0]) else ''
    after = r'(?![A-Za-z0-9])' if _WORD.match(value[-1]) else ''
    return before + re.escape(value) + after


class Expanded(NamedTuple):
    data: object                    # the document with every reference replaced
    substitutions: Substitutions    # what came from the environment, to redact


def expand(data: object, environ: Mapping[str, str] | None = None) -> Expanded:
    """Replace the references in every string value of `data` (a loaded
    YAML document) by `environ`'s values (os.environ by default). Returns a
    new document (`data` is not changed; YAML aliases stay shared) and what
    was substituted; raises SubstitutionError listing every problem."""
    expander = _Expander(os.environ if environ is None else environ)
    result = expander.value(data, '')
    if expander.errors:
        raise SubstitutionError(expander.errors)
    return Expanded(result, expander.substitutions)


def _join(path: str, key: object) -> str:
    """'deliver.relay.password', 'listen[0].host': the paths config.py reports."""
    if isinstance(key, int):
        return f'{path}[{key}]'
    return f'{path}.{key}' if path else str(key)


class _Expander:

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.errors: list[Error] = []
        self.substitutions = Substitutions()
        self.done: dict[int, object] = {}   # id of a mapping or list -> its copy (aliases, cycles)

    def value(self, value: object, path: str) -> object:
        if isinstance(value, str):
            return self.string(value, path) if '${' in value else value
        if not isinstance(value, (dict, list)):
            return value
        if id(value) in self.done:
            return self.done[id(value)]
        if isinstance(value, dict):
            mapping: dict[object, object] = {}
            self.done[id(value)] = mapping
            for key, item in value.items():
                mapping[key] = self.value(item, _join(path, key))
            return mapping
        items: list[object] = []
        self.done[id(value)] = items
        items.extend(self.value(item, _join(path, i)) for i, item in enumerate(value))
        return items

    def string(self, text: str, path: str) -> str:
        taken: dict[str, str] = {}      # reference as written -> the environment's value
        out, end = [], 0
        for match in _TOKEN.finditer(text):
            out.append(text[end:match.start()])
            end = match.end()
            if match[0] == '$${':
                out.append('${')
                continue
            body = _BODY.fullmatch(match['body'])
            if body is None or not match['close']:
                self.errors.append((path, f'{match[0]!r} is not a reference: {_FORMS}'))
                continue
            name, default = body['name'], body['default']
            found = self.environ.get(name)
            if found is None or (found == '' and default is not None):
                if default is None:
                    self.errors.append((path, f'${{{name}}} is not set'))
                    continue
                out.append(default)
            else:
                out.append(found)
                taken[match[0]] = found
        out.append(text[end:])
        result = ''.join(out)
        if taken:
            self.substitutions._add(path, text, result, taken)
        return result
