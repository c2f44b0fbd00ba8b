"""SSH values and files: who a USER is, logins, --from, and what the access files say."""

from __future__ import annotations

import pytest

from services.core.errors import InvalidInput
from services.grammar.access import login, source_networks
from services.grammar.slack import user
from services.ssh.files import authorized_files, expiry_time, known_hosts
from services.ssh.keys import parse_key
from services.ssh.store import Grant, HostKey

KEY = parse_key("ssh-ed25519 "
                "AAAAC3NzaC1lZDI1NTE5AAAAIGzH4JYQfMxj8JYcVjH5LrNXZQ/kcrPQoBlRkUWJpSw8 ana")


def test_a_user_is_an_id_a_mention_or_local():
    assert user("U012ABCDEF") == "U012ABCDEF" and user("W012ABCDEF") == "W012ABCDEF"
    assert user("<@U012ABCDEF|ana>") == "U012ABCDEF" and user("<@U012ABCDEF>") == "U012ABCDEF"
    assert user("local") == "local" and user("@U012ABCDEF") == "U012ABCDEF"
    for bad in ("ana", "@ana", "B012ABCDEF", "<@B012ABCDEF>", "<@U012|a>b>", "LOCAL", "u012abc"):
        with pytest.raises(InvalidInput, match="is not a user ctbot can tell by id"):
            user(bad)


def test_logins_follow_systemds_strict_rule():
    for good in ("root", "deploy", "_svc", "a-b_c9"):
        assert login(good) == good
    for bad in ("Root", "9lives", "-x", "a" * 32, "a b", "a/b", "a:b", ""):
        with pytest.raises(InvalidInput, match="is not a login"):
            login(bad)


def test_from_takes_networks_and_refuses_host_bits():
    assert [str(n) for n in source_networks("192.0.2.0/24,2001:db8::/32,198.51.100.7")] == [
        "192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"]
    injected = 'fe80::1%x"\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB injected\n#/128'
    for bad in ("192.0.2.1/24", "example.com", "", ",".join(["10.0.0.0/8"] * 17),
                "fe80::1%eth0", injected, "10.0.0.0/8 ", '10.0.0.1"'):
        with pytest.raises(InvalidInput):
            source_networks(bad)


def test_access_files_carry_the_grants_options_and_drop_expired_ones():
    now = 1_800_000_000.0
    grants = [Grant("web1", "U1", "root", "192.0.2.0/24", None, "local", now),
              Grant("web1", "U2", "deploy", None, now + 3600, "local", now),
              Grant("web1", "U3", "root", None, now - 1, "local", now)]  # expired
    files = authorized_files(grants, {"U1": [KEY], "U2": [KEY], "U3": [KEY]}, now=now)
    root = files["root"].decode().splitlines()
    assert root[1] == f'from="192.0.2.0/24" ssh-ed25519 {KEY.blob} ctbot:U1'
    assert len(root) == 2  # the header, and U1's key: U3's grant has expired
    assert files["deploy"].decode().splitlines()[1].startswith(
        f'expiry-time="{expiry_time(now + 3600)}" ssh-ed25519 ')
    assert expiry_time(now) == "20270115080000"  # UTC, as sshd(8) reads it


def test_known_hosts_has_each_address_with_each_key():
    keys = [HostKey("ssh-ed25519", "AAAA1", "SHA256:x"), HostKey("ecdsa-sha2-nistp256",
                                                                  "AAAA2", "SHA256:y")]
    assert known_hosts(["10.0.0.2", "fd00::2"], keys) == [
        "10.0.0.2 ssh-ed25519 AAAA1", "10.0.0.2 ecdsa-sha2-nistp256 AAAA2",
        "fd00::2 ssh-ed25519 AAAA1", "fd00::2 ecdsa-sha2-nistp256 AAAA2"]


@pytest.mark.parametrize(("text", "reason"), [
    ("ssh-dss AAAAB3NzaC1kc3M", "DSA"),
    ("ssh-ed25519 !!!", "not base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5!!!!AAAAIGzH4JYQfMxj8JYcVjH5LrNXZQ/kcrPQoBlRkUWJpSw8",
     "not base64"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC7", "does not parse"),
    ('from="1.2.3.4" ssh-ed25519 AAAA', "without options"),
    ("ssh-ed25519 AAAA a\nssh-ed25519 BBBB b", "one key per command"),
    ("x" * 17000, "16 KiB"),
    ("hello", "not an OpenSSH public key"),
])
def test_bad_keys_say_what_is_wrong(text, reason):
    with pytest.raises(InvalidInput, match=reason):
        parse_key(text)


def test_a_deep_tree_is_removed_without_recursion(tmp_path):
    import os

    from services.machines import rootfs

    deep = tmp_path / "top" / "junk"
    deep.mkdir(parents=True)
    (deep / "link").symlink_to("/etc")
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # deeper than Python's recursion limit (and than PATH_MAX)
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("file", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    rootfs.remove_tree(tmp_path, "top/junk")
    assert not deep.exists() and (tmp_path / "top").is_dir()
    assert list((tmp_path / "top").iterdir()) == []  # nothing renamed-up left behind
