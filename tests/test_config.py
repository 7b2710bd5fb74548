"""The YAML configuration: every value checked, every error with its path."""
import logging
import os
import textwrap

import pytest

from smtp_stack.config import ConfigError, Listener, load
from smtp_stack.tls import generate_self_signed
from smtp_stack.users import hash_password

HASH = hash_password('pw', 'pbkdf2-sha256')


@pytest.fixture
def write(tmp_path):
    """write(yaml_text, name='smtp.yaml') -> path of the file."""
    def put(text, name='smtp.yaml'):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return put


@pytest.fixture
def pems(tmp_path):
    key, cert = generate_self_signed('mx.test')
    (tmp_path / 'key.pem').write_bytes(key)
    (tmp_path / 'cert.pem').write_bytes(cert)
    return tmp_path


def errors_of(path):
    with pytest.raises(ConfigError) as err:
        load(path)
    return err.value.lines()


def test_no_file_means_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load(None)
    assert config.listeners == [Listener('127.0.0.1', 2525, False, False)]
    assert config.deliver == ('maildir', {'path': str(tmp_path / 'maildir')})
    assert config.tls_wanted and config.users is None


def test_a_full_config_loads(write, pems, tmp_path):
    (tmp_path / 'users.yaml').write_text(f'- username: alice\n  password_hash: "{HASH}"\n')
    path = write('''
        name: mx.test
        banner: welcome
        size: 10M
        auth_methods: [PLAIN, LOGIN, CRAM-MD5]
        allow_insecure_auth: true
        socket_timeout: 30
        close_timeout: 2.5
        use_xforward: [127.0.0.1, 10.0.0.0/8]
        log_level: warn
        log_backend: my.logger
        disabled_commands: [VRFY]
        listen:
          - {host: 127.0.0.1, port: 2525}
          - {host: 127.0.0.1, port: 4650, secure: true}
          - {port: 2424, lmtp: true}
        tls:
          key: key.pem
          cert: cert.pem
          min_version: TLSv1.2
          sni_options:
            mail.example.com: {key: key.pem, cert: cert.pem}
        users: users.yaml
        deliver:
          relay: {host: 127.0.0.1, port: 10026, xforward: true, timeout: 30}
    ''')
    config = load(path)
    assert [(each.port, each.secure, each.lmtp) for each in config.listeners] == \
        [(2525, False, False), (4650, True, False), (2424, False, True)]
    assert config.options['size'] == 10 * 1024 * 1024
    assert config.options['log_backend'] is logging.getLogger('my.logger')
    assert config.tls['cert'].startswith('-----BEGIN CERTIFICATE')
    assert config.tls['sni_options']['mail.example.com']['key'].startswith('-----BEGIN')
    assert [u.username for u in config.users] == ['alice']
    assert config.deliver == ('relay', {'host': '127.0.0.1', 'port': 10026,
                                        'xforward': True, 'timeout': 30})
    options = config.server_options(config.listeners[1])
    assert options['secure'] is True and options['name'] == 'mx.test'


@pytest.mark.parametrize('text, expected', [
    ('sise: 100\n', "sise: unknown option (did you mean 'size'?)"),
    ('size: lots\n', 'size: must be a number of bytes, e.g. 10485760 or 10M'),
    ('size: -1\n', 'size: must be a number of bytes, e.g. 10485760 or 10M'),
    ('size: 1.5M\n', 'size: must be a number of bytes, e.g. 10485760 or 10M'),
    ('maxRecipients: 5\n', "maxRecipients: unknown option (did you mean 'max_recipients'?)"),
    ('session: null\n', "session: Node's client-side TLS session: a server has no use for it"),
    ('tls: {request_ocsp: true}\n',
     'tls.request_ocsp: request_ocsp=True is not supported: OCSP stapling needs a server-side '
     "status callback that Python's ssl module (gevent's TLS) does not have"),
    ('request_ocsp: false\n', 'request_ocsp: a TLS option: put it under tls:'),
    ('socket_timeout: 0\n', 'socket_timeout: must be a positive number of seconds'),
    ('log_level: loud\n', "log_level: unknown level 'loud'"),
    ('auth_methods: [PLAIN, KERBEROS]\n', "auth_methods: unknown mechanism 'KERBEROS'"),
    ('use_proxy: [not-an-ip]\n', "use_proxy: 'not-an-ip' is not an IP address or CIDR"),
    ('bare_newline: fix\n', "bare_newline: must be 'reject' or 'normalize'"),
    ('on_connect: 42\n', 'on_connect: must be "package.module:function"'),
    ('on_connect: "no_such_module_xyz:f"\n',
     "on_connect: cannot import 'no_such_module_xyz': No module named 'no_such_module_xyz'"),
    ('key: key.pem\n', 'key: a TLS option: put it under tls:'),
    ('secure: yes please\n', 'secure: must be true or false'),
    ('listen: 2525\n', 'listen: must be a listener {host, port, secure, lmtp} or a list of them'),
    ('listen: [{port: 70000}]\n', 'listen[0].port: must be an integer from 0 to 65535'),
    ('listen: [{port: 25, tls: true}]\n', "listen[0].tls: unknown option"),
    ('listen: [{port: 25}, {port: 25}]\n', 'listen[1]: 127.0.0.1:25 is listed twice'),
    ('listen: {host: 127.0.0.1, port: "x"}\n', 'listen.port: must be an integer from 0 to 65535'),
    ('tls: {cert: missing.pem, key: key.pem}\n', 'tls.cert: {dir}/missing.pem: file not found'),
    ('tls: {cert: smtp.yaml}\n', 'tls.cert: {dir}/smtp.yaml is not a PEM file'),
    ('tls: {min_version: SSLv3}\n',
     "tls.min_version: must be one of 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'"),
    ('tls: {sni_options: {mail.example.com: {cert: nope.pem}}}\n',
     'tls.sni_options.mail.example.com.cert: {dir}/nope.pem: file not found'),
    ('tls: {sni_options: {mail.example.com: {crt: cert.pem}}}\n',
     "tls.sni_options.mail.example.com.crt: unknown option (did you mean 'cert'?)"),
    ('tls: {key: key.pem}\n', 'tls: key given without cert'),
    ('users: [{username: bob, password: hunter2}]\n',
     'users[0].password: store a salted hash as password_hash (smtp-stack hash-password); '
     'a plain secret: is only for CRAM-MD5/XOAUTH2'),
    ('users: [{username: bob, password_hash: hunter2}]\n',
     'users[0].password_hash: not a salted hash (make one with: smtp-stack hash-password)'),
    ('users: [{username: bob, secret: s3cret}]\n',
     'users[0].secret: a plain secret is only for CRAM-MD5/XOAUTH2 users: add one of them '
     'to auth_methods, or store password_hash instead'),
    ('users: [{password_hash: x}]\n', 'users[0].username: must be a non-empty string'),
    ('users: [{username: bob}]\n', 'users[0]: needs password_hash (or secret, for CRAM-MD5/XOAUTH2)'),
    ('users: nofile.yaml\n', 'users: {dir}/nofile.yaml: file not found'),
    ('users: 3\n', 'users: must be a list of {username, password_hash} (or a file holding one)'),
    ('deliver: {maildirs: x}\n', "deliver.maildirs: unknown option (did you mean 'maildir'?)"),
    ('deliver: {relay: {port: 25}}\n', 'deliver.relay.host: is required'),
    ('deliver: {relay: {host: h, port: "25"}}\n', 'deliver.relay.port: must be an integer'),
    ('deliver: {relay: {host: h, username: u}}\n', 'deliver.relay: username and password go together'),
    ('deliver: {relay: {host: h, ca: nope.pem}}\n', 'deliver.relay.ca: {dir}/nope.pem: file not found'),
    ('deliver: {callable: "json:nothing_here"}\n',
     "deliver.callable: 'json' has no attribute 'nothing_here'"),
    ('deliver: {callable: "no colon"}\n',
     'deliver.callable: \'no colon\' is not of the form "package.module:function"'),
    ('deliver: {maildir: smtp.yaml/inbox}\n', 'deliver.maildir: {dir}/smtp.yaml is not a directory'),
    ('workers: 0\n', 'workers: must be an integer >= 1'),
])
def test_each_error_is_reported_with_its_path(write, pems, tmp_path, text, expected):
    path = write(text)
    assert expected.replace('{dir}', str(tmp_path)) in errors_of(path)


# A document that is not a mapping has nothing else to check: one line, no
# bogus Maildir complaint about the default delivery.
@pytest.mark.parametrize('text, kind', [('- a\n- b\n', 'a list'), ('just words\n', "str 'just words'"),
                                        ('42\n', 'int 42')])
def test_a_document_that_is_not_a_mapping_is_one_error(write, text, kind):
    assert errors_of(write(text)) == [
        f'the configuration must be a YAML mapping (key: value), not {kind}']


def test_size_is_read_by_the_parser_smtp_server_uses(write):
    for text, size in (('25M', 25 << 20), ('512 KiB', 512 << 10), ('1g', 1 << 30), (4096, 4096)):
        assert load(write(f'size: {text}\n')).options['size'] == size


def test_request_ocsp_false_under_tls_reaches_the_server(write):
    config = load(write('tls: {request_ocsp: false}\n'))
    assert config.server_options(config.listeners[0])['request_ocsp'] is False


def test_all_errors_are_reported_at_once(write):
    lines = errors_of(write('size: x\nlisten: [{port: -1}]\ntls: {cert: a.pem}\n'))
    assert {line.split(':')[0] for line in lines} == {'size', 'listen[0].port', 'tls.cert'}


def test_bad_yaml_names_the_line(write):
    [line] = errors_of(write('name: mx\nsize: [1,\n'))
    assert 'not valid YAML' in line and 'line 3' in line


def test_missing_file(tmp_path):
    assert errors_of(str(tmp_path / 'none.yaml')) == [f'{tmp_path}/none.yaml: file not found']


def test_relative_paths_follow_the_config_file(write, pems, tmp_path, monkeypatch):
    monkeypatch.chdir('/')
    config = load(write('tls: {key: key.pem, cert: cert.pem}\ndeliver: {maildir: inbox}\n'))
    assert config.deliver == ('maildir', {'path': str(tmp_path / 'inbox')})


def test_users_file_may_hold_a_users_key(write, tmp_path):
    (tmp_path / 'u.yaml').write_text(f'users:\n  - {{username: a, password_hash: "{HASH}"}}\n')
    assert [u.username for u in load(write('users: u.yaml\n')).users] == ['a']


def test_plain_secret_allowed_with_cram_md5(write):
    config = load(write('auth_methods: [PLAIN, CRAM-MD5]\nusers: [{username: a, secret: s}]\n'))
    assert config.users[0].secret == 's'


def test_users_and_on_auth_exclude_each_other(write):
    lines = errors_of(write(f'on_auth: "json:dumps"\nusers: [{{username: a, password_hash: "{HASH}"}}]\n'))
    assert 'on_auth: cannot be combined with users: (both would answer AUTH)' in lines


def test_command_line_overrides(write, tmp_path):
    config = load(write('listen: {host: 0.0.0.0, port: 25}\n'), port=0, host='127.0.0.1',
                  maildir=str(tmp_path / 'm'))
    assert (config.listeners[0].host, config.listeners[0].port) == ('127.0.0.1', 0)
    assert config.deliver == ('maildir', {'path': str(tmp_path / 'm')})
    with pytest.raises(ConfigError) as err:
        load(write('listen: [{port: 25}, {port: 26}]\n'), port=0)
    assert err.value.lines() == ['listen: --host/--port cannot override several listeners']


def test_callable_next_to_the_config_file_is_found(write, tmp_path):
    (tmp_path / 'my_hooks_for_config_test.py').write_text('def deliver(session, envelope, body):\n    pass\n')
    config = load(write('deliver: {callable: "my_hooks_for_config_test:deliver"}\n'))
    assert config.deliver[1]['fn'].__name__ == 'deliver'


def test_the_shipped_example_config_is_one_file_in_two_places():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    texts = [open(os.path.join(root, name)).read()
             for name in ('examples/config.example.yaml', 'docs/config.example.yaml')]
    assert texts[0] == texts[1]
    config = load(os.path.join(root, 'docs/config.example.yaml'))    # as shipped: no files added
    assert len(config.listeners) == 3 and config.options['size'] == 25 << 20
