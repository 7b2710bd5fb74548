"""The import graph of the package keeps the layers of docs/architecture.md.

- Every import that runs (at the top of a module or inside a function)
  points to its own layer or further in, and no modules import each other
  in a circle.
- Imports for type checkers only (under `if TYPE_CHECKING:`) may name a
  module further out inside the core (a Context names the SmtpServer it
  belongs to), but the core never names a component (delivery/, policies/,
  inbox/ ...) or the application, not even for a type.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'smtp_stack'

# Innermost first. A module's layer is that of the longest prefix listed here;
# docs/architecture.md ("Arrows point inward") says the same in words.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ('pure protocol', ('replies', 'errors', 'xtext', 'framing', 'addresses', 'sasl', 'proxy',
                       'forwarding', 'headers', 'extras', 'envsubst')),
    ('state and values', ('session', 'spool', 'stream', 'options', 'limits', 'middleware',
                          'offload', 'state', 'params', 'logs', 'events', 'proctitle')),
    ('sockets, TLS and the engine', ('sockets', 'tls', 'engine', 'runners', 'workers',
                                     'systemd')),
    ('the server', ('server',)),
    ('the package', ('',)),       # smtp_stack/__init__.py: the public names, __version__
    ('components', ('delivery', 'policies', 'users', 'testing', 'testing_tls', 'pytest_plugin',
                    'inbox', 'metrics', 'milter', 'rspamd_client')),
    ('the application', ('config', 'receiver', 'runtime', 'cli', '__main__', 'sections',
                         'inbox.command', 'inbox.section', 'milter.command', 'milter.config')),
]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix('').parts
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob('*.py'))}


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest listed prefix of `module`."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            within = module == prefix or (prefix and module.startswith(prefix + '.'))
            if within and len(prefix) > length:
                best, length = index, len(prefix)
    if best is None:
        raise AssertionError(f'smtp_stack.{module} is in no layer of tests/test_layers.py: '
                             'add it, and say where it lives in docs/architecture.md')
    return best


CORE = 4        # layers up to the package's; further out are components and the application


def _import_statements(body: list[ast.stmt], for_types: bool = False):
    """Each import statement under `body`, and whether it sits in an `if
    TYPE_CHECKING:` block. Imports are statements, so only statement lists
    are walked, never expressions (a full ast.walk of every module made
    this file a third of the suite's collection time)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, for_types
            continue
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            yield from _import_statements(node.body, True)
            yield from _import_statements(node.orelse, for_types)
            continue
        for field in ('body', 'orelse', 'finalbody', 'handlers', 'cases'):
            for child in getattr(node, field, ()):
                if isinstance(child, ast.stmt):
                    yield from _import_statements([child], for_types)
                else:                          # an except handler or a match case
                    yield from _import_statements(child.body, for_types)


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """The package's modules that `module` imports: those whose imports run,
    and those imported for type checkers only."""
    path = MODULES[module]
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    tree = ast.parse(path.read_text(encoding='utf-8'))
    found: tuple[set[str], set[str]] = (set(), set())
    for node, for_types in _import_statements(tree.body):
        into = found[for_types]
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.') if package else []
                base = base[:len(base) - (node.level - 1)]
                target = '.'.join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split('.')[0] == 'smtp_stack':
                target = node.module.partition('.')[2]
            else:
                continue
            for alias in node.names:       # `from . import replies` names a module
                child = f'{target}.{alias.name}' if target else alias.name
                into.add(child if child in MODULES else target)
        else:
            for alias in node.names:
                if alias.name.split('.')[0] == 'smtp_stack':
                    into.add(alias.name.partition('.')[2])
    return tuple({name for name in each if name in MODULES and name != module}
                 for each in found)


_BOTH = {module: imports_of(module) for module in MODULES}
GRAPH = {module: runs for module, (runs, _) in _BOTH.items()}
TYPE_GRAPH = {module: for_types for module, (_, for_types) in _BOTH.items()}


def test_every_module_is_in_a_layer():
    for module in GRAPH:
        layer_of(module)


@pytest.mark.parametrize('module', sorted(GRAPH))
def test_imports_point_inward(module):
    own = layer_of(module)
    upward = sorted(f'{target} ({LAYERS[layer_of(target)][0]})'
                    for target in GRAPH[module] if layer_of(target) > own)
    assert not upward, f'{module} ({LAYERS[own][0]}) imports outward: {", ".join(upward)}'


@pytest.mark.parametrize('module', sorted(m for m in GRAPH if layer_of(m) <= CORE))
def test_the_core_names_no_component_even_for_types(module):
    outer = sorted(target for target in TYPE_GRAPH[module] if layer_of(target) > CORE)
    assert not outer, f'{module} names {", ".join(outer)} for type checkers'


def test_no_import_circles():
    circles, state, stack = [], dict.fromkeys(GRAPH, 0), []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif state.get(target) == 0:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if state[module] == 0:
            visit(module)
    assert not circles, 'import circles: ' + '; '.join(' -> '.join(c) for c in circles)
