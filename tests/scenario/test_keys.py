"""Keyrings from the command line: `key add/list/remove/import`, with keys made by
asyncssh and a local HTTP server standing in for https://github.com/LOGIN.keys."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncssh
import pytest

from tests.scenario.processes import run_ctbot


def public_line(algorithm: str, comment: str, **options: int) -> str:
    key = asyncssh.generate_private_key(algorithm, comment=comment, **options)
    return key.export_public_key("openssh").decode().strip()


ANA = [public_line("ssh-ed25519", "ana@laptop"), public_line("ecdsa-sha2-nistp256", "ana@ci")]
SHORT_RSA = public_line("ssh-rsa", "old@box", key_size=1024)


class KeysServer(BaseHTTPRequestHandler):
    """/ana.keys: two good keys and a short RSA; /big.keys: 100 KiB; /slow.keys: answers
    after 5 s; anything else: 404 (GitHub's answer for a login that does not exist)."""

    def do_GET(self) -> None:
        bodies = {"/ana.keys": "\n".join([*ANA, SHORT_RSA, ""]).encode(),
                  "/big.keys": b"ssh-ed25519 " + b"A" * 100_000 + b"\n"}
        if self.path == "/slow.keys":
            time.sleep(5)
        if self.path == "/split.keys":  # one key, a pause, the next: as TLS records come
            self.send_response(200)
            self.end_headers()
            self.wfile.write(ANA[0].encode() + b"\n")
            self.wfile.flush()
            time.sleep(0.3)
            self.wfile.write(ANA[1].encode() + b"\n")
            return
        body = bodies.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeysServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "ctbot.toml"
    config.write_text(f'[ssh]\nkey_url = "http://127.0.0.1:{server.server_port}/{{login}}.keys"'
                      '\nfetch_timeout = 2\n[roles]\nviewers = ["U0VIEW01"]\n')
    try:
        yield {"CTBOT_STATE_DIR": str(tmp_path), "CTBOT_CONFIG": str(config),
               "KEYS_URL": f"http://127.0.0.1:{server.server_port}"}
    finally:
        server.shutdown()
        server.server_close()


def cmd(env: dict[str, str], text: str, *flags: str) -> tuple[int, str]:
    result = run_ctbot("cmd", text, *flags, env=env, timeout=60)
    return result.returncode, result.stdout + result.stderr


def keys_of(env: dict[str, str], *flags: str) -> list[dict]:
    code, out = cmd(env, "key list", "--json", *flags)
    assert code == 0, out
    return json.loads(out)["keys"]


def test_key_add_list_remove_as_ssh_keygen_shows_them(env):
    code, out = cmd(env, f"key add {ANA[0]}")  # unquoted, with its comment: as pasted
    assert code == 0 and "ED25519 256 SHA256:" in out and "(ana@laptop)" in out, out
    listed = keys_of(env)
    assert [(k["type"], k["bits"], k["comment"]) for k in listed] == [
        ("ED25519", 256, "ana@laptop")]
    fingerprint = listed[0]["fingerprint"]
    assert fingerprint == asyncssh.import_public_key(ANA[0]).get_fingerprint("sha256")
    assert cmd(env, f"key add {ANA[0]}")[0] == 0 and len(keys_of(env)) == 1  # idempotent
    code, out = cmd(env, f"key remove {fingerprint}")
    assert code == 0 and keys_of(env) == []
    code, out = cmd(env, f"key remove {fingerprint}")
    assert code == 1 and "has no key" in out


def test_short_rsa_and_pasted_options_are_refused(env):
    code, out = cmd(env, f"key add {SHORT_RSA}")
    assert code == 1 and "1024 bits; at least 2048" in out
    code, out = cmd(env, f'key add restrict,command="id" {ANA[0]}')
    assert code == 1 and "without options" in out
    assert keys_of(env) == []


def test_import_from_github_keeps_the_good_keys_and_says_why_not_the_others(env):
    code, out = cmd(env, "key import gh:ana")
    assert code == 0 and "Imported 2 new keys" in out and "1024 bits" in out, out
    assert sorted(k["comment"] for k in keys_of(env)) == ["ana@ci", "ana@laptop"]
    code, out = cmd(env, "key import gh:nobody-here")
    assert code == 1 and "HTTP 404 (no such user?)" in out
    code, out = cmd(env, "key import gh:big")
    assert code == 1 and "larger than 64 KiB" in out
    started = time.monotonic()
    code, out = cmd(env, "key import gh:slow")
    assert code == 1 and "did not answer within 2 s" in out
    assert time.monotonic() - started < 5
    code, out = cmd(env, "key import --user U0VIEW01 gh:split")  # read to the end
    assert code == 0 and "Imported 2 new keys" in out, out
    code, out = cmd(env, "key import gh:bad..login")
    assert code == 1 and "not a GitHub login" in out


def test_urls_and_other_peoples_keyrings_are_for_admins(env):
    url = f"{env['KEYS_URL']}/ana.keys"
    code, out = cmd(env, f"key import {url}", "--as", "U0VIEW01")
    assert code == 1 and "only admins import keys from a URL" in out
    code, out = cmd(env, f"key add --user local {ANA[0]}", "--as", "U0VIEW01")
    assert code == 1 and "only admins manage other users' keys" in out
    # A viewer manages their own keyring; an admin (local) anyone's, from any URL.
    assert cmd(env, f"key add {ANA[1]}", "--as", "U0VIEW01")[0] == 0
    assert cmd(env, f"key import --user U0VIEW01 {url}")[0] == 0
    assert len(keys_of(env, "--as", "U0VIEW01")) == 2
    assert len(keys_of(env)) == 0
    code, out = cmd(env, "key import --user U0VIEW01 file:///etc/passwd")
    assert code == 1 and "neither gh:LOGIN nor an http(s) URL" in out


def test_a_pasted_private_key_is_refused_and_never_stored(env, tmp_path):
    private = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    code, out = cmd(env, f"key add {private}")
    assert code == 1 and "PRIVATE key" in out and "BEGIN" not in out.split("PRIVATE")[0]
    code, out = cmd(env, "audit", "--json")
    assert code == 0 and "PRIVATE KEY" not in out and "not stored" in out
    assert keys_of(env) == []
    # …nor taken from a URL that serves one.
    code, out = cmd(env, "key import gh:ana")  # fine
    assert code == 0
