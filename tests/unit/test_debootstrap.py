"""debootstrap's fd 3 records (recorded from a real `debootstrap --debian-installer`
of bookworm on this project's machines) become one readable activity line."""

from __future__ import annotations

from pathlib import Path

from services.machines.debootstrap import DebootstrapProgress

RECORDED = Path(__file__).parent / "data" / "debootstrap-fd3.txt"


class Recorder:
    def __init__(self) -> None:
        self.activities: list[str] = []

    async def __call__(self, line: str) -> None:
        raise AssertionError("debootstrap's records are activities, not steps")

    async def status(self, text: str) -> None:
        self.activities.append(text)


async def test_records_become_phase_percent_and_what_it_does():
    recorder = Recorder()
    parse = DebootstrapProgress(recorder)
    parse._status._interval = 0  # see every activity here, not one per half second
    for line in RECORDED.read_text().splitlines():
        await parse(line)
    seen = recorder.activities
    assert "debootstrap: Downloading Release file 100% (Retrieving InRelease)" in seen
    assert any(a.startswith("debootstrap: Downloading Packages files 1%") for a in seen)
    assert "debootstrap: Extracting packages 2% (Extracting adduser)" in seen
    assert seen[-1].startswith("debootstrap: ")
    assert all("%s" not in a for a in seen)
