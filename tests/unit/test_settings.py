from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings
from handlers.roles import Role


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ctbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_built_in_defaults_need_no_file():
    settings = load_settings(None, {})
    assert str(settings.listen) == "127.0.0.1:3000"
    assert settings.state_dir == Path("/var/lib/ctbot")
    assert not settings.slack.http_enabled and not settings.slack.socket_mode_enabled
    assert settings.slack.api_url == "https://slack.com/api/"


def test_file_and_environment(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "[::1]:8080"\n[roles]\nadmins = ["U0ADMIN"]\n'
                           'operators = ["U0OPS"]\ndefault = "viewer"\n')
    settings = load_settings(None, {"CTBOT_CONFIG": str(path), "CTBOT_STATE_DIR": "/srv/ct",
                                    "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
                                    "SLACK_API_URL": "http://127.0.0.1:9/api"})
    assert (settings.listen.host, settings.listen.port) == ("::1", 8080)
    assert settings.state_dir == Path("/srv/ct")
    assert settings.roles.role_of("U0ADMIN") is Role.ADMIN
    assert settings.roles.role_of("U0OPS") is Role.OPERATOR
    assert settings.roles.role_of("U0SOMEONE") is Role.VIEWER
    assert settings.slack.http_enabled
    assert settings.slack.api_url == "http://127.0.0.1:9/api/"


def test_env_listen_overrides_file(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:3000"\n')
    assert load_settings(path, {"CTBOT_LISTEN": "0.0.0.0:9000"}).listen.port == 9000


@pytest.mark.parametrize(
    ("toml", "env", "key", "problem"),
    [
        ('[http]\nlisten = "3000"\n', {}, "[http] listen", "expected HOST:PORT"),
        ('[http]\nlisten = "127.0.0.1:99999"\n', {}, "[http] listen", "port must be"),
        ('[http]\nlisten = "example.com:80"\n', {}, "[http] listen", "IP address"),
        ('[http]\nlisten = 3000\n', {}, "[http] listen", "must be a str"),
        ('[htttp]\nlisten = "x"\n', {}, "[htttp]", "did you mean 'http'"),
        ('[roles]\nadmin = []\n', {}, "[roles] admin", "did you mean 'admins'"),
        ('[roles]\nadmins = ["alice"]\n', {}, "[roles] admins", "not a Slack user id"),
        ('[roles]\ndefault = "root"\n', {}, "[roles] default", "one of none, viewer"),
        ('[paths]\nstate_dir = "relative/dir"\n', {}, "[paths] state_dir", "absolute"),
        ('[log]\nlevel = "loud"\n', {}, "[log] level", "one of debug"),
        ('[slack]\napi_url = "ftp://x"\n', {}, "[slack] api_url", "http(s) URL"),
        ('[slack]\ncommand = "ct"\n', {}, "[slack] command", "look like /ct"),
        ("", {"SLACK_BOT_TOKEN": "xoxp-user-token"}, "SLACK_BOT_TOKEN", "expected xoxb-"),
        ("", {"SLACK_APP_TOKEN": "nope"}, "SLACK_APP_TOKEN", "expected xapp-"),
        ("", {"CTBOT_LISTEN": "nonsense"}, "CTBOT_LISTEN", "expected HOST:PORT"),
    ],
)
def test_bad_values_fail_with_the_key_and_the_problem(tmp_path, toml, env, key, problem):
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, toml), env)
    assert key in str(err.value) and problem in str(err.value)


def test_secret_values_are_never_echoed(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(None, {"SLACK_BOT_TOKEN": "xoxp-very-secret-value"})
    assert "very-secret" not in str(err.value)
    settings = load_settings(None, {"SLACK_BOT_TOKEN": "xoxb-hidden-value"})
    assert "hidden-value" not in repr(settings)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", {})
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "[http\n"), {})


def test_example_config_documents_and_loads_every_key():
    example = Path(__file__).parents[2] / "ctbot.example.toml"
    settings = load_settings(example, {})
    assert settings.source == str(example)
    text = example.read_text()
    from bot.settings.sections import EXAMPLE_FOOTER, EXAMPLE_HEADER, SECTIONS

    for section in SECTIONS:
        assert f"[{section.name}]" in text
        for key in section.keys:
            assert f"{key.name} =" in text, f"{section.name}.{key.name} undocumented"
    from bot.settings.schema import example_config

    assert text == example_config(EXAMPLE_HEADER, SECTIONS, EXAMPLE_FOOTER), \
        "ctbot.example.toml is stale: python -m bot.settings example > ctbot.example.toml"
    # The commented [[webhooks]] example is a working entry once uncommented.
    import tomllib

    from services.webhooks.config import parse_webhooks

    block = EXAMPLE_FOOTER[EXAMPLE_FOOTER.index("[[webhooks]]"):]
    (hook,) = parse_webhooks(tomllib.loads(block)["webhooks"], {})
    assert hook.name == "ci" and hook.rules[0].do.startswith("restart ")


def test_readme_settings_table_matches_the_declarations():
    from bot.settings.schema import markdown_table
    from bot.settings.sections import ENVIRONMENT, SECTIONS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = markdown_table(SECTIONS, ENVIRONMENT)
    assert table in readme, "README's settings table is stale: python -m bot.settings table"
    assert readme.count("| setting | default |") == 1


def test_images_follow_the_state_dir_unless_set(tmp_path):
    assert load_settings(None, {"CTBOT_STATE_DIR": "/srv/ct"}).images.images_dir == \
        Path("/srv/ct/images")
    assert load_settings(None, {"CTBOT_STATE_DIR": "/srv/ct", "CTBOT_IMAGES_DIR": "/img"}
                         ).images.images_dir == Path("/img")


def test_log_lines_mask_secrets_even_in_tracebacks():
    import io
    import logging

    from bot.logs import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging("info", secrets=["xoxb-super-secret"], stream=stream)
        try:
            raise RuntimeError("token xoxb-super-secret rejected")
        except RuntimeError:
            logging.getLogger("ctbot.test").exception("call failed with %s",
                                                      "xoxb-super-secret")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert "xoxb-super-secret" not in stream.getvalue()
    assert "***" in stream.getvalue() and "Traceback" in stream.getvalue()


@pytest.mark.parametrize(("key", "pool"), [
    ("ipv4_pool", "127.0.0.0/24"), ("ipv4_pool", "0.0.0.0/0"), ("ipv4_pool", "169.254.0.0/16"),
    ("ipv4_pool", "224.0.0.0/24"), ("ipv4_pool", "10.0.0.0/31"), ("ipv6_pool", "fe80::/64"),
    ("ipv6_pool", "::1/128"), ("ipv6_pool", "ff02::/64"), ("ipv6_pool", "fd00::/32")])
def test_pools_that_would_cut_the_host_off_are_refused(tmp_path, key, pool):
    with pytest.raises(SettingsError, match=re.escape(f"[network] {key}")):
        load_settings(write(tmp_path, f'[network]\n{key} = "{pool}"\n'), {})


def test_a_remote_command_cannot_break_out_of_its_authorized_keys_option(tmp_path):
    for bad in ('/opt/ctbot/bin/ctbot remote" ,no-restrict', "ctbot remote",
                "/opt/ctbot/bin/ctbot remote \\x", "/opt/ctbot/bin/ctbot\nremote"):
        config = tmp_path / "c.toml"
        config.write_text(f"[hosts]\nremote_command = {json.dumps(bad)}\n")
        with pytest.raises(SettingsError, match="remote_command"):
            load_settings(config, {})
