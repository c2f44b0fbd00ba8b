"""Writes into a machine's root never follow symlinks planted inside it."""

from __future__ import annotations

import os

import pytest

from services.core.errors import InternalError, OperationFailed
from services.machines import rootfs


@pytest.fixture
def machine_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    return root


def test_write_replaces_the_file_atomically(machine_root):
    rootfs.write_file(machine_root, "etc/hostname", b"web1\n")
    rootfs.write_file(machine_root, "/etc/hostname", b"web2\n")
    assert (machine_root / "etc/hostname").read_bytes() == b"web2\n"
    assert [p.name for p in (machine_root / "etc").iterdir()] == ["hostname"]


def test_a_planted_symlink_is_replaced_not_followed(machine_root, tmp_path):
    victim = tmp_path / "host-shadow"
    victim.write_text("root:secret\n")
    os.symlink(victim, machine_root / "etc/hostname")
    rootfs.write_file(machine_root, "etc/hostname", b"web1\n")
    assert victim.read_text() == "root:secret\n"
    assert not (machine_root / "etc/hostname").is_symlink()
    assert (machine_root / "etc/hostname").read_text() == "web1\n"


def test_a_symlinked_directory_is_refused(machine_root, tmp_path):
    outside = tmp_path / "host-etc"
    outside.mkdir()
    os.symlink(outside, machine_root / "etc/systemd")
    # The machine's root made it so: a message for them, not an apology of ctbot's.
    with pytest.raises(OperationFailed, match="/etc/systemd inside the machine is not a plain"):
        rootfs.write_file(machine_root, "etc/systemd/network/10-host0.network", b"x")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("path", ["../escape", "etc/../../escape", "", "/"])
def test_paths_that_leave_the_root_are_refused(machine_root, path):
    with pytest.raises(InternalError):
        rootfs.write_file(machine_root, path, b"x")


def test_remove_unlinks_a_symlink_itself(machine_root, tmp_path):
    victim = tmp_path / "keep"
    victim.write_text("keep")
    os.symlink(victim, machine_root / "etc/machine-id")
    rootfs.remove_file(machine_root, "etc/machine-id")
    assert victim.read_text() == "keep" and not (machine_root / "etc/machine-id").exists()
