"""smtp_stack.envsubst: ${VAR} and ${VAR:-default} in the YAML's string
values, the errors with their paths, and the redaction that keeps what came
from the environment out of every message."""
from __future__ import annotations

import copy

import pytest
import yaml

from smtp_stack.envsubst import Substitutions, SubstitutionError, expand

ENV = {'RELAY_PASSWORD': 's3cret-Pa55', 'HOST': 'mail.example.com', 'EMPTY': '',
       'QUOTED': "it's \"quoted\"", 'DOLLAR': '${HOST}', 'PORT': '5'}


@pytest.mark.parametrize('written, expected', [
    ('${RELAY_PASSWORD}', 's3cret-Pa55'),                       # the whole value
    ('smtp://${HOST}:587', 'smtp://mail.example.com:587'),      # inside a string
    ('${HOST}/${RELAY_PASSWORD}', 'mail.example.com/s3cret-Pa55'),
    ('${UNSET:-fallback}', 'fallback'),                         # default: unset ...
    ('${EMPTY:-fallback}', 'fallback'),                         # ... or empty, as in the shell
    ('${EMPTY}', ''),                                           # set and empty, no default
    ('${UNSET:-}', ''),
    ('${HOST:-fallback}', 'mail.example.com'),
    ('${UNSET:-a:b c-d $x}', 'a:b c-d $x'),                     # a default is any text but }
    ('$${HOST}', '${HOST}'),                                    # $${ is a literal ${
    ('a$${b}c$${', 'a${b}c${'),
    ('pa$$word $HOST $ {HOST} $', 'pa$$word $HOST $ {HOST} $'),   # other $ are themselves
    ('${DOLLAR}', '${HOST}'),                                   # a value is not read again
    ('${QUOTED}', "it's \"quoted\""),
    ('no reference', 'no reference'),
])
def test_references_in_a_string_value(written, expected):
    assert expand({'key': written}, ENV).data == {'key': expected}


def test_only_string_values_change_keys_and_other_scalars_stay():
    data = {'${HOST}': '${HOST}', 'port': 25, 'secure': True, 'size': 1.5, 'none': None,
            'listen': [{'host': '${HOST}', 'port': 2525}, '${HOST}', 7],
            'tls': {'sni_options': {'${HOST}': {'cert': 'x-${HOST}.pem'}}}}
    before = copy.deepcopy(data)
    assert expand(data, ENV).data == {
        '${HOST}': 'mail.example.com', 'port': 25, 'secure': True, 'size': 1.5, 'none': None,
        'listen': [{'host': 'mail.example.com', 'port': 2525}, 'mail.example.com', 7],
        'tls': {'sni_options': {'${HOST}': {'cert': 'x-mail.example.com.pem'}}}}
    assert data == before, 'the loaded document was changed in place'


def test_yaml_aliases_stay_shared_and_a_cycle_ends():
    data = yaml.safe_load('base: &b {host: "${HOST}"}\nother: *b\nloop: &l [1, *l]\n')
    result = expand(data, ENV).data
    assert result['base'] == {'host': 'mail.example.com'}
    assert result['other'] is result['base']
    assert result['loop'][1] is result['loop']


def test_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv('SMTP_STACK_TEST_SECRET', 'from-os-environ')
    assert expand(['${SMTP_STACK_TEST_SECRET}']).data == ['from-os-environ']


# -- errors ---------------------------------------------------------------------

def test_an_unset_variable_names_the_key_path_and_the_variable():
    data = {'deliver': {'relay': {'host': '${HOST}', 'password': '${RELAY_PASSWORD}'}}}
    with pytest.raises(SubstitutionError) as caught:
        expand(data, {'HOST': 'x'})
    assert caught.value.errors == [('deliver.relay.password', '${RELAY_PASSWORD} is not set')]
    assert str(caught.value) == 'deliver.relay.password: ${RELAY_PASSWORD} is not set'


def test_every_error_of_the_document_at_once_with_list_paths():
    data = {'listen': [{'host': '127.0.0.1'}, {'host': '${LISTEN_HOST}'}],
            'store': 'redis://:${REDIS_PASSWORD}@${REDIS_HOST}/0',
            'users': [{'username': 'a', 'secret': '${A_SECRET'}]}
    with pytest.raises(SubstitutionError) as caught:
        expand(data, {})
    assert caught.value.errors == [
        ('listen[1].host', '${LISTEN_HOST} is not set'),
        ('store', '${REDIS_PASSWORD} is not set'),
        ('store', '${REDIS_HOST} is not set'),
        ('users[0].secret', "'${A_SECRET' is not a reference: "
                            'write ${NAME} or ${NAME:-default} ($${ for a literal ${)'),
    ]


@pytest.mark.parametrize('written', ['${HOST', '${}', '${1HOST}', '${HOST-x}', '${HOST:?x}',
                                     '${HOST:+x}', '${HO ST}', '${HOST}${'])
def test_what_is_not_a_reference_is_an_error_not_left_as_is(written):
    with pytest.raises(SubstitutionError) as caught:
        expand({'key': written}, ENV)
    [(path, message)] = caught.value.errors
    assert path == 'key' and 'is not a reference: write ${NAME} or ${NAME:-default}' in message


def test_a_document_that_is_one_string_has_the_empty_path():
    with pytest.raises(SubstitutionError) as caught:
        expand('${UNSET}', {})
    assert caught.value.errors == [('', '${UNSET} is not set')]


# -- what came from the environment, and redaction -------------------------------------

def test_paths_are_those_that_took_a_value_from_the_environment():
    data = {'a': '${HOST}', 'b': '${UNSET:-default}', 'c': 'plain', 'd': ['${EMPTY}'],
            'e': {'f': 'x${RELAY_PASSWORD}'}}
    substitutions = expand(data, ENV).substitutions
    assert substitutions.paths == {'a': '${HOST}', 'e.f': 'x${RELAY_PASSWORD}',
                                   'd[0]': '${EMPTY}'}
    assert substitutions
    assert not expand({'a': 'plain', 'b': '${UNSET:-x}'}, ENV).substitutions


def test_redact_shows_the_reference_wherever_the_secret_would_appear():
    data = {'deliver': {'relay': {'password': '${RELAY_PASSWORD}'}},
            'store': 'redis://:${RELAY_PASSWORD}@${HOST}/0'}
    substitutions = expand(data, ENV).substitutions
    redact = substitutions.redact
    assert redact("password 's3cret-Pa55' refused") == "password '${RELAY_PASSWORD}' refused"
    # the whole value first (longest), then each variable alone
    assert redact('cannot reach redis://:s3cret-Pa55@mail.example.com/0') == \
        'cannot reach redis://:${RELAY_PASSWORD}@${HOST}/0'
    assert redact('s3cret-Pa55 and again s3cret-Pa55') == \
        '${RELAY_PASSWORD} and again ${RELAY_PASSWORD}'
    assert redact('nothing secret here') == 'nothing secret here'


def test_redact_knows_the_escaped_form_a_repr_prints():
    substitutions = expand({'secret': '${QUOTED}'}, ENV).substitutions
    value = ENV['QUOTED']
    for shown in (value, repr(value), f'{value!r}'):
        message = f'bad secret {shown}: too short'
        assert value not in substitutions.redact(message)
        assert '${QUOTED}' in substitutions.redact(message)
    assert repr(value)[1:-1] not in substitutions.redact(f'x {value!r}')


def test_a_short_value_is_redacted_as_itself_not_inside_other_words():
    substitutions = expand({'port': '${PORT}'}, ENV).substitutions
    assert substitutions.redact('must be from 0 to 65535, not 5') == \
        'must be from 0 to 65535, not ${PORT}'


def test_a_default_is_not_redacted_it_is_in_the_file_anyway():
    substitutions = expand({'host': '${UNSET:-relay.example.com}'}, ENV).substitutions
    assert substitutions.redact('cannot resolve relay.example.com') == \
        'cannot resolve relay.example.com'


def test_redact_errors_keeps_the_paths():
    substitutions = expand({'users': [{'secret': '${RELAY_PASSWORD}'}]}, ENV).substitutions
    errors = [('users[0].secret', "'s3cret-Pa55' is too short"), ('', 'other')]
    assert substitutions.redact_errors(errors) == [
        ('users[0].secret', "'${RELAY_PASSWORD}' is too short"), ('', 'other')]


def test_nothing_shows_a_secret_by_accident():
    """The repr of the result's parts (in a traceback, a debugger, a log of
    the object) and the errors name variables, never their values."""
    substitutions = expand({'password': '${RELAY_PASSWORD}'}, ENV).substitutions
    assert 's3cret' not in repr(substitutions)
    assert repr(substitutions) == "<Substitutions ['password']>"
    with pytest.raises(SubstitutionError) as caught:
        expand({'password': '${RELAY_PASSWORD}', 'user': '${UNSET}'}, ENV)
    assert 's3cret' not in str(caught.value)


def test_an_empty_substitutions_redacts_nothing():
    assert Substitutions().redact('any text') == 'any text'
    assert not Substitutions()
