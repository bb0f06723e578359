"""The command line: --check, config errors, the master key rules, start-up failures."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import DATA, KEY, REPO, auth, proxy_config, run_cli

VALID = {
    "system": {"port": 0, "host": "127.0.0.1"},
    "targets": {
        "default": "tgi",
        "tgi": {"url": "http://127.0.0.1:8080", "mapping": {"/generate": None, "/info": None}},
    },
}


def write(folder: Path, document, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def assert_clean_failure(result) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_check_prints_a_one_line_summary(tmp_path):
    result = run_cli("--config", str(write(tmp_path, VALID)), "--check", env={"MOOLTIPROXY_KEY": KEY})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "1 targets, 2 routes" in lines[0]


def test_original_config_template_passes_check_once_its_env_key_is_set(tmp_path):
    path = tmp_path / "config.yaml"
    shutil.copy(DATA / "original-config.template.yaml", path)
    result = run_cli("--config", str(path), "--check", env={"YOUR_OPENAI_API_KEY_ENVIRONMENT_VARIABLE_NAME": "sk-x"})
    assert result.returncode == 0, result.stderr
    assert "4 targets" in result.stdout
    missing = run_cli("--config", str(path), "--check")
    assert_clean_failure(missing)
    assert (
        "targets.openai.envkey: environment variable 'YOUR_OPENAI_API_KEY_ENVIRONMENT_VARIABLE_NAME' is not set"
        in missing.stderr
    )


def test_every_problem_is_reported_at_once_with_its_path(tmp_path):
    document = {
        "system": {"port": "eighty", "timeout": -1, "colour": "blue"},
        "cerbere": {"max_tries": 0, "whitelist": ["1.2.3.4", "not-an-ip"]},
        "targets": {
            "default": "missing",
            "tgi": {
                "url": "localhost:8080",
                "mapping": {
                    "/chat/completions": {"path": "/generate", "in": "chatReqOpenAItoTG", "template": "Nope"},
                    "generate": None,
                },
            },
        },
    }
    result = run_cli("--config", str(write(tmp_path, document)), "--check")
    assert_clean_failure(result)
    for expected in (
        "system.port: expected an integer",
        "system.timeout: expected a number > 0",
        "system.colour: unknown key",
        "cerbere.max_tries: expected an integer >= 1",
        "cerbere.whitelist.1: 'not-an-ip' is not an IP address or CIDR network",
        "targets.default: 'missing' is not a defined target (targets: tgi)",
        "targets.tgi.url: expected an http:// or https:// URL",
        "targets.tgi.mapping./chat/completions.in: unknown mapper 'chatReqOpenAItoTG' (known: ",
        "targets.tgi.mapping./chat/completions.template: unknown template 'Nope'",
        "targets.tgi.mapping.generate: an incoming path must start with '/'",
    ):
        assert expected in result.stderr, f"{expected!r} missing from:\n{result.stderr}"


def test_missing_sections_and_keys_are_named(tmp_path):
    result = run_cli("--config", str(write(tmp_path, {"system": {"port": 8000}})), "--check")
    assert_clean_failure(result)
    assert "targets: required key is missing" in result.stderr
    result = run_cli(
        "--config", str(write(tmp_path, {"targets": {"default": "a", "a": {"mapping": {"/x": None}}}})), "--check"
    )
    assert "targets.a.url: required key is missing" in result.stderr


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "system:\n  port: 8000\ntargets: [unclosed\n  default: x\n")
    result = run_cli("--config", str(path), "--check")
    assert_clean_failure(result)
    assert f"{path}:4:" in result.stderr
    assert "YAML syntax error" in result.stderr


@pytest.mark.parametrize("content", ["", "just a string", "- a\n- list\n"])
def test_a_document_that_is_not_a_mapping(tmp_path, content):
    result = run_cli("--config", str(write(tmp_path, content)), "--check")
    assert_clean_failure(result)
    assert str(tmp_path) in result.stderr


def test_unreadable_config(tmp_path):
    result = run_cli("--config", str(tmp_path / "absent.yaml"), "--check")
    assert_clean_failure(result)
    assert "cannot read config file" in result.stderr
    result = run_cli("--config", str(tmp_path), "--check")
    assert_clean_failure(result)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert_clean_failure(run_cli("--config", str(binary), "--check"))


def test_config_from_the_environment_and_the_working_directory(tmp_path):
    path = write(tmp_path, VALID, "elsewhere.yaml")
    assert run_cli("--check", env={"MOOLTIPROXY_CONFIG": str(path)}).returncode == 0
    write(tmp_path, VALID)
    in_cwd = run_cli("--check", cwd=tmp_path)
    assert in_cwd.returncode == 0
    assert "config.yaml" in in_cwd.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run_cli("--check", cwd=empty)
    assert_clean_failure(missing)
    assert "(mooltiproxy init writes one from config.template.yaml)" in missing.stderr


def test_serving_without_a_master_key_is_refused(tmp_path):
    result = run_cli("--config", str(write(tmp_path, VALID)))
    assert_clean_failure(result)
    assert "MOOLTIPROXY_KEY" in result.stderr


@pytest.mark.parametrize("where", ["env", "file"])
def test_placeholder_master_key_is_refused(tmp_path, where):
    placeholder = "XXXXXXXXXXXXXXXXXXXXX"
    document = {**VALID, "system": {**VALID["system"], "masterkey": placeholder}} if where == "file" else VALID
    env = {"MOOLTIPROXY_KEY": placeholder} if where == "env" else {}
    result = run_cli("--config", str(write(tmp_path, document)), env=env)
    assert_clean_failure(result)
    assert "placeholder" in result.stderr
    assert placeholder not in result.stderr


def test_short_key_warns(start_proxy):
    proxy = start_proxy(VALID, env={"MOOLTIPROXY_KEY": "short-key-9"})
    assert "shorter than 16 characters" in proxy.log()
    assert "short-key-9" not in proxy.log()


def test_master_key_from_the_file_warns_loudly(start_proxy, fake_tgi):
    in_file = "file-master-key-0123456789abcdef"
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, system={"masterkey": in_file})
    proxy = start_proxy(config, env={"MOOLTIPROXY_KEY": ""})
    assert "SECURITY" in proxy.log()
    assert httpx.get(f"{proxy.url}/info", headers=auth(in_file)).status_code == 200
    assert in_file not in proxy.log()


def test_environment_key_wins_over_the_file(start_proxy, fake_tgi):
    in_file = "file-master-key-0123456789abcdef"
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, system={"masterkey": in_file})
    proxy = start_proxy(config)
    assert "wins over system.masterkey" in proxy.log()
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200
    assert httpx.get(f"{proxy.url}/info", headers=auth(in_file)).status_code == 401


def test_port_in_use_is_a_clean_failure(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        document = {**VALID, "system": {"host": "127.0.0.1", "port": busy.getsockname()[1]}}
        result = run_cli("--config", str(write(tmp_path, document)), env={"MOOLTIPROXY_KEY": KEY})
    assert_clean_failure(result)
    assert "cannot listen on 127.0.0.1:" in result.stderr


def test_ssl_without_certificate_is_a_clean_failure(tmp_path):
    document = {**VALID, "system": {**VALID["system"], "ssl": True}}
    result = run_cli("--config", str(write(tmp_path, document)), env={"MOOLTIPROXY_KEY": KEY})
    assert_clean_failure(result)
    assert "system.ssl: cannot load certificate" in result.stderr
    assert str(tmp_path / "certificates" / "cert.pem") in result.stderr


VALID_YAML = yaml.safe_dump(VALID)
LAUGHS = "".join(
    f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9) if level else ', '.join(['lol'] * 9)}]\n"
    for level in range(8)
)
BROKEN_LOADERS = {
    # A 1 KB "billion laughs": PyYAML shares the aliased nodes, validation would walk 43 million.
    "alias bomb": (LAUGHS + "cerbere:\n  whitelist: [*l7]\n" + VALID_YAML, "l5.0", "expands to more than 100,000"),
    "alias loop": ("a: &a [x, *a]\n" + VALID_YAML, "a.1", "inside what it names"),
    "deep nesting": ("x: " + "[" * 3000 + "]" * 3000 + "\n" + VALID_YAML, "x.0.0", "nested more than 64 levels"),
    "huge integer": (VALID_YAML + "cerbere:\n  max_tries: " + "7" * 5000 + "\n", "cerbere.max_tries", "5000 digits"),
    "infinity": (VALID_YAML + "cerbere:\n  ban_seconds: .inf\n", "cerbere.ban_seconds", "not a finite number"),
    "not a number": (VALID_YAML.replace("port: 0", "port: .nan"), "system.port", "not a finite number"),
    "duplicate client": (
        VALID_YAML + "clients:\n  alice:\n    envkey: A\n    targets: [tgi]\n  alice:\n    envkey: A\n",
        "clients.alice",
        "duplicate key (first on line",
    ),
    "duplicate section": (
        VALID_YAML + "cerbere: {max_tries: 3}\ncerbere: {max_tries: 99}\n",
        "cerbere",
        "duplicate key",
    ),
}


@pytest.mark.parametrize("case", BROKEN_LOADERS, ids=list(BROKEN_LOADERS))
def test_configs_that_break_yaml_loaders_are_one_line_errors(tmp_path, case):
    text, key, problem = BROKEN_LOADERS[case]
    path = write(tmp_path, text)
    for result in (
        run_cli("--config", str(path), "--check"),
        run_cli("--config", str(path), env={"MOOLTIPROXY_KEY": KEY}),
    ):
        assert_clean_failure(result)
        problems = result.stderr.splitlines()[1:]
        assert len(problems) == 1, result.stderr
        assert problems[0].startswith(f"  {path}:") and f": {key}" in problems[0] and problem in problems[0]
        assert len(result.stderr) < 1000
    if case.startswith("duplicate"):  # the second occurrence is named, with the first's line
        name = key.rpartition(".")[2] + ":"
        lines = [number for number, content in enumerate(text.splitlines(), 1) if content.strip().startswith(name)]
        assert f"{path}:{lines[1]}: {key}: duplicate key (first on line {lines[0]})" in result.stderr


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = write(tmp_path, VALID_YAML + "#" + "x" * (1024 * 1024) + "\n")
    result = run_cli("--config", str(path), "--check")
    assert_clean_failure(result)
    assert "a config may have at most 1,048,576" in result.stderr


def test_merges_stay_allowed(tmp_path):
    text = (
        "system: {port: 0, host: 127.0.0.1}\n"
        "base: &route {path: /generate}\n"
        "targets:\n  default: tgi\n  tgi:\n    url: http://127.0.0.1:8080\n    mapping:\n"
        "      /a: {<<: *route}\n      /b:\n        <<: *route\n        methods: [POST]\n"
    )
    result = run_cli("--config", str(write(tmp_path, text)), "--check", env={"MOOLTIPROXY_KEY": KEY})
    assert "base: unknown key" in result.stderr  # the anchor holder is not a section; the merges themselves load
    assert "<<" not in result.stderr


def test_version_and_the_pid_to_reload(start_proxy, fake_tgi):
    from mooltiproxy import __version__

    result = run_cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"mooltiproxy {__version__}")
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}))
    assert f"(pid {proxy.process.pid}: kill -HUP reloads)" in proxy.log()


@pytest.mark.parametrize("hostname", ["a" * 40 + "." + "b" * 40 + ".example.com", "", "bad name", "x_y.example"])
def test_gen_cert_takes_long_names_and_refuses_invalid_ones(tmp_path, hostname):
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    result = run_cli("--gen-cert", "--hostname", hostname, "--certfile", str(certfile), "--keyfile", str(keyfile))
    assert "Traceback" not in result.stderr
    if hostname.endswith(".example.com"):  # 93 characters: past a CN's 64, fine in the SAN
        assert result.returncode == 0, result.stderr
        from cryptography import x509

        names = x509.load_pem_x509_certificate(certfile.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        assert hostname in names.value.get_values_for_type(x509.DNSName)
    else:
        assert result.returncode == 1
        assert f"--hostname {hostname!r}: not an IP address or a DNS name" in result.stderr
        assert not certfile.exists() and not keyfile.exists()


def test_check_loads_the_certificate_it_would_serve_with(tmp_path):
    config = proxy_config({"t": {"url": "http://127.0.0.1:9", "mapping": {"/x": None}}}, system={"ssl": True})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("--config", str(tmp_path / "config.yaml"), "--check")
    assert result.returncode == 1
    assert "system.ssl: cannot load certificate" in result.stderr and "--gen-cert" in result.stderr


def test_init_makes_a_folder_ready_to_serve_and_overwrites_nothing(tmp_path):
    config = tmp_path / "new" / "config.yaml"
    made = run_cli("--config", str(config), "init")
    assert made.returncode == 0, made.stderr
    assert config.read_text() == (REPO / "config.template.yaml").read_text()
    key = config.parent / ".proxy-key"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and len(key.read_text().strip()) >= 32
    assert f'MOOLTIPROXY_KEY="$(cat {key})" mooltiproxy --config {config}' in made.stdout
    checked = run_cli("--config", str(config), "--check", env={"MOOLTIPROXY_KEY": key.read_text().strip()})
    assert checked.returncode == 0, checked.stderr
    config.write_text(config.read_text() + "# mine\n")
    again = run_cli("--config", str(config), "init")
    assert "exists: kept as it is" in again.stdout and config.read_text().endswith("# mine\n")
    assert "the proxy key kept as it is" in again.stdout


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # A key without its colon: PyYAML notices at the next line's colon; the mistake is the line before.
        ("system:\n  port 8000\n  host: 127.0.0.1\n", ":2: YAML syntax error: 'port 8000' has no ':' after its key"),
        # An unclosed quote: noticed at the end of the file; it began on line 3.
        ('system:\n  port: 8000\n  host: "127.0.0.1\ntargets:\n  default: t\n', ":3:9: YAML syntax error"),
    ],
)
def test_a_yaml_mistake_is_named_where_it_is(tmp_path, text, said):
    (tmp_path / "config.yaml").write_text(text)
    result = run_cli("--config", str(tmp_path / "config.yaml"), "--check")
    assert result.returncode == 1 and said in result.stderr
