"""Operation claims: what keeps two commands (or two ctbot processes) off one machine."""

from __future__ import annotations

import subprocess

import pytest

from services.core.errors import Conflict, NotFound
from services.core.store import Store
from services.machines.records import MachineStore, Op


@pytest.fixture
def records(tmp_path) -> MachineStore:
    return MachineStore(Store(tmp_path / "db.sqlite3"))


def create(records: MachineStore, name: str = "web1") -> None:
    records.begin_create(name=name, image="base", features=(), cpu=None, memory_bytes=None,
                         pids=None,
                         job_id=7)


def owned_by_a_dead_process(records: MachineStore, name: str) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    records._store.execute("UPDATE machines SET op_pid = ?, op_start = NULL WHERE name = ?",
                           (dead.pid, name))


def test_a_name_is_created_once(records):
    create(records)
    with pytest.raises(Conflict, match="is being created \\(job #7\\)"):
        create(records)
    records.release("web1")
    with pytest.raises(Conflict, match="exists already"):
        create(records)


def test_a_live_claim_keeps_other_operations_out(records):
    create(records)
    records.release("web1")
    records.claim("web1", Op.STOP)
    with pytest.raises(Conflict, match="busy: stop in progress"):
        records.claim("web1", Op.DESTROY)
    records.release("web1")
    assert records.claim("web1", Op.DESTROY).op is Op.DESTROY


def test_a_stale_claim_is_taken_over_by_exactly_one_process(records):
    create(records)
    owned_by_a_dead_process(records, "web1")
    stale = records.get("web1")
    assert stale.op_stale and not stale.op_alive and stale.op_step == "claimed"
    assert records.take_over(stale) is True
    assert records.take_over(stale) is False  # the snapshot's owner is no longer the owner
    assert records.get("web1").op_alive


def test_abandoned_operations_become_stale(records):
    create(records)
    records.abandon("web1")
    assert records.get("web1").op_stale


def test_claiming_a_missing_machine_says_so(records):
    with pytest.raises(NotFound, match="there is no machine `nope`"):
        records.claim("nope", Op.START)
