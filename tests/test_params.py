"""Parameters declared once (smtp_stack/params.py): a class's signature is
what YAML may set, the checker reads it, the docs' tables are made from it,
and a new kind of delivery is one row of the registry."""
from __future__ import annotations

import pathlib
import re
import textwrap
from typing import TYPE_CHECKING, Annotated

import pytest

from smtp_stack.config import ConfigError, load
from smtp_stack.extras import MissingExtra
from smtp_stack.params import (BOOL, DURATION, EXISTING_FILE, FILE, STRINGS, Declared, Kind,
                               markdown_table, parameters)
from smtp_stack.policies import POLICIES, authenticate, greylist
from smtp_stack.policies.greylist import Greylist
from smtp_stack.sections import DELIVERIES, DeliverySpec

if TYPE_CHECKING:
    from smtp_stack.session import Session      # known to type checkers only

DOCS = pathlib.Path(__file__).resolve().parent.parent / 'docs'


class Reader:
    """What a section's check asks of the configuration, for tests."""

    def __init__(self, base: str = '/etc/smtp'):
        self.base = base
        self.errors: list[tuple[str, str]] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def file_path(self, name: str) -> str:
        return f'{self.base}/{name}'

    def callable(self, spec: str):
        raise ValueError(f'{spec!r}: no callables here')


class Example:
    """A component with parameters for YAML and one for Python only."""

    def __init__(self, name: Annotated[str, Kind('a name', lambda v, r: str(v))],
                 delay: Annotated[float, DURATION] = 300,
                 files: Annotated[list[str], STRINGS] = (),
                 key_file: Annotated[str | None, FILE.named('key')] = None,
                 session: Session | None = None,     # no kind: not in YAML
                 loud: Annotated[bool, BOOL] = False):
        if loud and delay > 60:
            raise ValueError('example: loud needs a delay of a minute at most')
        self.name, self.delay, self.files, self.key_file = name, delay, files, key_file


EXAMPLE = Declared('example', lambda: Example, trial={})


def test_the_signature_is_the_declaration():
    assert {key: (p.name, p.kind.words, p.required) for key, p in parameters(Example).items()} \
        == {'name': ('name', 'a name', True),
            'delay': ('delay', "a duration (300, '5m', '1h', '36d')", False),
            'files': ('files', 'a list of strings', False),
            'key': ('key_file', 'a file name', False),
            'loud': ('loud', 'true or false', False)}


def test_a_section_is_read_with_every_mistake_at_its_path():
    reader = Reader()
    assert EXAMPLE.check({'name': 'x', 'delay': '5m', 'files': 'one', 'key': 'k.pem'},
                         'section', reader) == {'name': 'x', 'delay': 300.0, 'files': ['one'],
                                                'key_file': '/etc/smtp/k.pem'}
    assert reader.errors == []
    assert EXAMPLE.check({'delai': 5, 'files': [{}], 'x': 1}, 'section', reader) is None
    assert reader.errors == [
        ('section.delai', "unknown parameter (did you mean 'delay'?)"),
        ('section.files', 'must be a list of strings'),
        ('section.x', 'unknown parameter (one of name, delay, files, key, loud)'),
        ('section.name', 'is required')]


def test_the_class_s_own_checks_run_at_check_time_without_its_prefix():
    reader = Reader()
    assert EXAMPLE.check({'name': 'x', 'loud': True}, 'here', reader) is None
    assert reader.errors == [('here', 'loud needs a delay of a minute at most')]


def test_a_missing_extra_names_the_section_that_needs_it():
    def needs_it():
        raise MissingExtra('policies.thing', 'policies', 'dkim')
    with pytest.raises(MissingExtra) as raised:
        Declared('thing', needs_it).check({}, 'policies[3].thing', Reader())
    assert str(raised.value).startswith("policies[3].thing needs the 'policies' extra")


def test_a_scalar_section_is_its_one_parameter():
    section = Declared('just', lambda: Example, scalar='name')
    assert section.check('value', 'deliver.just', Reader()) == {'name': 'value'}
    assert section.form == 'a name'
    assert EXAMPLE.form == '{name, ...}'


def test_a_file_that_must_exist_names_it(tmp_path):
    reader = Reader(str(tmp_path))
    with pytest.raises(ValueError, match=f'^{tmp_path}/none.pem: file not found$'):
        EXISTING_FILE.convert('none.pem', reader)


def test_a_policy_s_factory_is_its_class():
    assert greylist is Greylist
    assert type(authenticate(resolver=None, spf=False, dmarc=False)).__name__ == 'Authenticate'
    assert set(POLICIES) == {'recipients', 'dnsbl', 'greylist', 'rate_limit', 'authenticate',
                             'rspamd', 'milter'}


def tables_in(text: str) -> dict[str, str]:
    """The tables that follow each `<!-- params: NAME -->` line."""
    found = {}
    for match in re.finditer(r'<!-- params: (\S+) -->\n((?:\|.*\n)+)', text):
        found[match[1]] = match[2].rstrip('\n')
    return found


def test_the_docs_tables_are_made_from_the_signatures():
    """docs/configuration.md holds each YAML section's table as
    params.markdown_table prints it; regenerate a table that differs."""
    tables = tables_in((DOCS / 'configuration.md').read_text(encoding='utf-8'))
    expected = {'deliver.relay': markdown_table(DELIVERIES['relay']),
                'inbox': markdown_table(DELIVERIES['inbox'])}
    expected.update({f'policies.{name}': markdown_table(row) for name, row in POLICIES.items()})
    for name, table in expected.items():
        assert tables.get(name) == table, f'docs/configuration.md, {name}, should be:\n{table}'
    assert set(tables) == set(expected)


@pytest.mark.parametrize('policy', ['recipients', 'dnsbl', 'greylist', 'rate_limit', 'rspamd',
                                    'milter'])
def test_policies_md_describes_exactly_the_declared_parameters(policy):
    text = (DOCS / 'policies.md').read_text(encoding='utf-8')
    section = text[text.index(f'\n## `{policy}('):]
    table = section[section.index('| parameter | meaning |'):]
    table = table[:table.index('\n\n')]
    described = re.findall(r'^\| `(\w+)` \|', table, re.MULTILINE)
    assert set(described) == set(POLICIES[policy].parameters)


class Tee:
    """A delivery of a test's own: it keeps the subjects."""

    def __init__(self, label: Annotated[str, Kind('a label', lambda v, r: str(v))]):
        self.label = label

    def __call__(self, ctx, next):
        next()

    def describe(self) -> str:
        return f'tee {self.label}'


def test_a_new_kind_of_delivery_is_one_row(tmp_path, monkeypatch):
    monkeypatch.setitem(DELIVERIES, 'tee', Declared(
        'tee', lambda: Tee, describe=lambda spec: f'tee {spec["label"]}'))
    path = tmp_path / 'smtp.yaml'
    path.write_text(textwrap.dedent('''\
        deliver:
          tee: {label: audit}
        '''))
    loaded = load(str(path))
    assert loaded.deliver == ('tee', {'label': 'audit'})
    assert loaded.deliver.describe() == 'tee audit'
    assert loaded.deliver.build().describe() == 'tee audit'
    path.write_text('deliver: {tee: {lable: x}}\n')
    with pytest.raises(ConfigError) as err:
        load(str(path))
    assert err.value.lines() == ["deliver.tee.lable: unknown parameter (did you mean 'label'?)",
                                 'deliver.tee.label: is required']
    assert DeliverySpec('tee', {}).section is DELIVERIES['tee']
