"""Parameters declared once, in a component's signature, and read from YAML.

A class says which of its parameters a configuration file may set, and
what each one takes, in its own signature, with `typing.Annotated`:

    class Greylist:
        def __init__(self, delay: Annotated[float, DURATION] = 300, ...,
                     clock: Callable[[], float] = time.time): ...

A parameter whose annotation carries a `Kind` is a YAML parameter (`clock`
is for Python callers only). From that one declaration come the factory
(the class itself), the YAML checker (`Declared.check`: every mistake with
its path, all at once) and the docs' tables (`markdown_table`, which a test
compares with docs/configuration.md). The annotation must be written
`Annotated[...]` at its top (`Annotated[str | None, FILE]`), with the kind
a name the module imports at run time.

A YAML section that makes a component is a `Section`: it checks its
value, builds the component, and describes it in one line without
building it (check-config). config.py keeps one registry of them for the
deliveries, policies/__init__.py one for the policies.
"""
from __future__ import annotations

import ast
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Protocol, TypeAlias

from .extras import MissingExtra
from .options import suggest

# What a section's check makes of its YAML: the keyword arguments of its component.
Spec: TypeAlias = dict[str, Any]


class Reader(Protocol):
    """What a section's check asks of the configuration being read."""

    def error(self, path: str, message: str) -> None: ...
    def file_path(self, name: str) -> str: ...
    def callable(self, spec: str) -> Callable[..., Any]: ...


class Section(Protocol):
    """One row of a registry of YAML sections."""

    live: bool      # False: a change of it needs a restart (its component listens)

    @property
    def form(self) -> str:
        """How the section is written, for messages: '{host, ...}'."""

    def check(self, value: object, where: str, reader: Reader) -> Spec | None:
        """The component's keyword arguments, or None after reporting
        every problem with `reader.error(path, message)`."""

    def build(self, spec: Spec) -> Any:
        """The component."""

    def describe(self, spec: Spec) -> str:
        """One line for people, without building the component."""


# -- kinds ------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """What a YAML value must be, and how it becomes the parameter's value.

    `convert(value, reader)` raises ValueError, whose text (or else "must be
    <words>") is the error. `key`: the YAML key when it is not the
    parameter's name. `default_too`: the parameter's default goes through
    `convert` as well when the key is absent (a file name taken from the
    configuration's directory). `show(default)`: the default as YAML
    writes it, for the docs."""
    words: str
    convert: Callable[[Any, Reader], Any]
    key: str | None = None
    default_too: bool = False
    show: Callable[[Any], str] | None = None

    def named(self, key: str) -> Kind:
        return replace(self, key=key)


def _typed(*kinds: type) -> Callable[[Any, Reader], Any]:
    def convert(value: Any, reader: Reader) -> Any:
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ValueError
        return value
    return convert


def _strings(value: Any, reader: Reader) -> list[str]:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ValueError
    return [str(v) for v in value]


_DURATION = re.compile(r'\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*\Z')
_UNITS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400}


def duration(value: object) -> float:
    """Seconds from 300, '300', '5m', '1h', '36d', '1.5s'; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError
    return float(match[1]) * _UNITS[match[2]]


def _file(value: Any, reader: Reader) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError
    return reader.file_path(value)


def _existing_file(value: Any, reader: Reader) -> str:
    if not isinstance(value, str):
        raise ValueError('must be a string')
    full = reader.file_path(value)
    if not os.path.isfile(full):
        raise ValueError(f'{full}: file not found')
    return full


def _callable(value: Any, reader: Reader) -> Callable[..., Any]:
    if not isinstance(value, str):
        raise ValueError
    return reader.callable(value)


def _port(value: Any, reader: Reader) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('must be an integer')
    if not 0 < value <= 65535:
        raise ValueError
    return value


def _seconds(value: Any, reader: Reader) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError('must be a number')
    if value <= 0:
        raise ValueError
    return value


def _count(value: Any, reader: Reader) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError
    return value


STRING = Kind('a string', _typed(str))
STRINGS = Kind('a list of strings', _strings)
INTEGER = Kind('an integer', _typed(int))
NUMBER = Kind('a number', _typed(int, float))
BOOL = Kind('true or false', _typed(bool))
def _show_duration(seconds: float) -> str:
    """3110400 -> '36d': the largest unit that writes it exactly."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if unit and seconds >= size and seconds % size == 0:
            return f'{int(seconds // size)}{unit}'
    return f'{seconds:g}'


DURATION = Kind("a duration (300, '5m', '1h', '36d')", lambda value, reader: duration(value),
                show=_show_duration)
FILE = Kind('a file name', _file)                    # taken from the configuration's directory
EXISTING_FILE = Kind('a file name', _existing_file)     # ... and there already
CALLABLE = Kind('"package.module:function"', _callable)
PORT = Kind('an integer from 1 to 65535', _port)
SECONDS = Kind('a positive number of seconds', _seconds)
COUNT = Kind('an integer, 1 or more', _count)


# -- what a signature declares ------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One YAML parameter of a component: its name in Python and in YAML."""
    name: str
    key: str
    kind: Kind
    default: Any        # inspect.Parameter.empty: required

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@cache
def parameters(factory: Callable[..., Any]) -> Mapping[str, Param]:
    """The YAML parameters of `factory` (a class: its `__init__`), by YAML
    key, in the signature's order."""
    function = factory
    if isinstance(factory, type):   # the __init__ the signature comes from
        function = next(vars(cls)['__init__'] for cls in factory.__mro__ if '__init__' in vars(cls))
    namespace = getattr(function, '__globals__', {})
    found = {}
    for param in inspect.signature(factory).parameters.values():
        kind = _kind_of(param.annotation, namespace)
        if kind is not None:
            key = kind.key or param.name
            found[key] = Param(param.name, key, kind, param.default)
    return found


def _kind_of(annotation: object, namespace: dict[str, Any]) -> Kind | None:
    """The Kind in an `Annotated[type, kind]` annotation, None for any other.

    Annotations are strings here (postponed evaluation): only the metadata
    of `Annotated[...]` is evaluated, in the module of the signature, so
    the type itself may name what is imported for type checkers only."""
    if not isinstance(annotation, str):
        metadata = getattr(annotation, '__metadata__', ())
    else:
        try:
            tree = ast.parse(annotation, mode='eval').body
        except SyntaxError:
            return None
        if not (isinstance(tree, ast.Subscript) and isinstance(tree.value, ast.Name)
                and tree.value.id == 'Annotated' and isinstance(tree.slice, ast.Tuple)):
            return None
        metadata = tuple(eval(compile(ast.Expression(meta), '<annotation>', 'eval'), namespace)
                         for meta in tree.slice.elts[1:])
    return next((meta for meta in metadata if isinstance(meta, Kind)), None)


def takes(factory: Callable[..., Any], name: str) -> bool:
    """Whether `factory` has a parameter `name` (YAML's or not)."""
    return name in inspect.signature(factory).parameters


# -- a section made of a component's declared parameters --------------------------

class Declared:
    """A `Section` whose keys are the declared parameters of a component.

    `load()` returns the component's class (imported when first needed: an
    optional extra). `scalar`: the section is that one parameter's value,
    not a mapping (`maildir: DIR`). `noun` names the keys in messages.
    `trial`: build the component once at check time, with these stand-ins
    for the parameters YAML does not give (its own checks run then; their
    message loses its '<name>: ' prefix); None: never built to check.
    `between`: the rules between keys, for a component too costly to build
    at check time (it opens files, listens): called with the read keys,
    its ValueError is the section's error.
    """

    def __init__(self, name: str, load: Callable[[], Callable[..., Any]], *,
                 describe: Callable[[Spec], str] | None = None, scalar: str | None = None,
                 noun: str = 'parameter', trial: Mapping[str, Callable[[], Any]] | None = None,
                 between: Callable[[Spec], None] | None = None, live: bool = True):
        self.name = name
        self.load = load
        self._describe = describe
        self.scalar = scalar
        self.noun = noun
        self.trial = trial
        self.between = between
        self.live = live

    @property
    def parameters(self) -> Mapping[str, Param]:
        return parameters(self.load())

    @property
    def form(self) -> str:
        """'a directory name' (scalar), '{host, ...}': the required keys."""
        if self.scalar is not None:
            return self.parameters[self.scalar].kind.words
        keys = [key for key, param in self.parameters.items() if param.required]
        if len(keys) < len(self.parameters):
            keys.append('...')
        return '{' + ', '.join(keys) + '}'

    def takes(self, name: str) -> bool:
        return takes(self.load(), name)

    def check(self, value: object, where: str, reader: Reader) -> Spec | None:
        try:
            params = self.parameters
        except MissingExtra as exc:     # one line naming the section that needs it
            raise MissingExtra(where, exc.extra, exc.name) from exc
        if self.scalar is not None:
            param = params[self.scalar]
            read = _read(param, value, where, reader)
            return None if read is None else {param.name: read[0]}
        if value is None:
            value = {}
        if not isinstance(value, dict):
            reader.error(where, 'must be a mapping {' + ', '.join(params) + '}')
            return None
        spec, ok = self._read_mapping(value, where, reader, params)
        if ok and self.trial is not None:
            ok = self._try(spec, where, reader)
        if ok and self.between is not None:
            try:
                self.between(spec)
            except ValueError as exc:
                reader.error(where, str(exc).removeprefix(f'{self.name}: '))
                ok = False
        return spec if ok else None

    def _read_mapping(self, value: dict[Any, Any], where: str, reader: Reader,
                      params: Mapping[str, Param]) -> tuple[Spec, bool]:
        spec: Spec = {}
        ok = True
        for key, item in value.items():
            here = f'{where}.{key}'
            param = params.get(key)
            if param is None:
                meant = suggest(str(key), params)
                hint = f" (did you mean '{meant}'?)" if meant else f' (one of {", ".join(params)})'
                reader.error(here, f'unknown {self.noun}{hint}')
                ok = False
                continue
            read = _read(param, item, here, reader)
            if read is None:
                ok = False
            else:
                spec[param.name] = read[0]
        for param in params.values():
            if param.key in value:
                continue
            if param.required:
                reader.error(f'{where}.{param.key}', 'is required')
                ok = False
            elif param.kind.default_too:
                read = _read(param, param.default, f'{where}.{param.key}', reader)
                ok = ok and read is not None
                if read is not None:
                    spec[param.name] = read[0]
        return spec, ok

    def _try(self, spec: Spec, where: str, reader: Reader) -> bool:
        """Build the component once, now rather than at start-up."""
        assert self.trial is not None
        stand_ins = {name: make() for name, make in self.trial.items() if self.takes(name)}
        try:
            self.build({**spec, **stand_ins})
        except (TypeError, ValueError, OSError) as exc:
            reader.error(where, str(exc).replace(f'{self.name}: ', ''))
            return False
        except MissingExtra as exc:
            raise MissingExtra(where, exc.extra, exc.name) from exc
        return True

    def build(self, spec: Spec) -> Any:
        return self.load()(**spec)

    def describe(self, spec: Spec) -> str:
        if self._describe is not None:
            return self._describe(spec)
        return f'{self.name} ' + ', '.join(f'{key}={value!r}' for key, value in spec.items())


def _read(param: Param, value: object, path: str, reader: Reader) -> tuple[Any] | None:
    """(the converted value,) or None after reporting why not."""
    try:
        return (param.kind.convert(value, reader),)
    except ValueError as exc:
        reader.error(path, str(exc) or f'must be {param.kind.words}')
    except MissingExtra as exc:         # e.g. a redis:// store without redis-py
        raise MissingExtra(path, exc.extra, exc.name) from exc
    return None


def markdown_table(section: Declared) -> str:
    """The docs' table of a section's keys: key, what it takes, default."""
    rows = ['| key | takes | default |', '|---|---|---|']
    for param in section.parameters.values():
        rows.append(f'| `{param.key}` | {param.kind.words} | {_default(param)} |')
    return '\n'.join(rows)


def _default(param: Param) -> str:
    """A default as YAML would write it."""
    value = param.default
    if param.required:
        return 'required'
    if value is None:
        return '(none)'
    if param.kind.show is not None:
        return f'`{param.kind.show(value)}`'
    if isinstance(value, bool):
        return f'`{str(value).lower()}`'
    if isinstance(value, (tuple, list)) and not value:
        return '`[]`'
    return f'`{value}`'
