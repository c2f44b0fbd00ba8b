from __future__ import annotations

import asyncio
import subprocess

import pytest

from services.core.errors import InvalidInput
from services.core.job_runner import JobContext, JobRunner
from services.core.jobs import Job, JobState, JobStore
from services.core.store import Store


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[JobState, int]] = []

    async def job_changed(self, job: Job) -> None:
        self.seen.append((job.state, len(job.progress)))


async def two_steps(ctx: JobContext) -> str:
    await ctx.progress("first")
    await ctx.progress("second")
    return f"done {ctx.args['x']}"


async def refuses(ctx: JobContext) -> str:
    raise InvalidInput("that will not work")


async def crashes(ctx: JobContext) -> str:
    raise RuntimeError("boom")


async def hangs(ctx: JobContext) -> str:
    await ctx.progress("started")
    await asyncio.sleep(3600)
    return "never"


@pytest.fixture
def runner(tmp_path) -> JobRunner:
    r = JobRunner(JobStore(Store(tmp_path / "db.sqlite3")))
    for kind, body in (("two", two_steps), ("refuse", refuses), ("crash", crashes),
                       ("hang", hangs)):
        r.register(kind, body)
    return r


async def test_job_is_persisted_with_progress_and_result(runner):
    recorder = Recorder()
    job = await runner.submit("two", {"x": 1}, requested_by="U0A", correlation_id="c-1",
                              observer=recorder)
    done = await runner.wait(job.id)
    assert done.state is JobState.SUCCEEDED and done.result == "done 1"
    assert [p.line for p in runner.store.get(job.id).progress] == ["first", "second"]
    assert recorder.seen == [(JobState.RUNNING, 0), (JobState.RUNNING, 1),
                             (JobState.RUNNING, 2), (JobState.SUCCEEDED, 2)]
    assert runner.running() == []  # no task kept after it ended


async def test_user_error_fails_the_job_with_its_message(runner):
    job = await runner.submit("refuse", {}, requested_by="U0A", correlation_id="c-2")
    done = await runner.wait(job.id)
    assert done.state is JobState.FAILED and done.error == "that will not work"


async def test_crash_fails_the_job_and_points_at_the_log(runner, caplog):
    job = await runner.submit("crash", {}, requested_by="U0A", correlation_id="c-3")
    done = await runner.wait(job.id)
    assert done.state is JobState.FAILED and "c-3" in done.error and "boom" not in done.error
    assert any(r.exc_info for r in caplog.records)


async def test_shutdown_marks_running_jobs_interrupted(runner):
    job = await runner.submit("hang", {}, requested_by="U0A", correlation_id="c-4")
    while not runner.store.get(job.id).progress:
        await asyncio.sleep(0.01)
    await runner.shutdown()
    assert runner.store.get(job.id).state is JobState.INTERRUPTED


async def test_shutdown_lets_a_job_finish_within_the_drain_and_interrupts_the_rest(runner):
    async def short(ctx: JobContext) -> str:
        await ctx.progress("started")
        await asyncio.sleep(0.3)
        return "finished"

    runner.register("short", short)
    quick = await runner.submit("short", {}, requested_by="U0A", correlation_id="c-6")
    slow = await runner.submit("hang", {}, requested_by="U0A", correlation_id="c-7")
    while not (runner.store.get(quick.id).progress and runner.store.get(slow.id).progress):
        await asyncio.sleep(0.01)
    assert runner.running() == [quick.id, slow.id]
    await runner.shutdown(drain=2.0)
    assert runner.store.get(quick.id).state is JobState.SUCCEEDED
    assert runner.store.get(quick.id).result == "finished"
    assert runner.store.get(slow.id).state is JobState.INTERRUPTED
    assert runner.running() == []


def _owned_by(path, pid: int) -> int:
    store = Store(path)
    jobs = JobStore(store)
    job_id = jobs.create(kind="hang", args={}, requested_by="U0A", correlation_id="c-5")
    jobs.mark_running(job_id)
    store.execute("UPDATE jobs SET owner_pid = ?, owner_start = NULL WHERE id = ?",
                  (pid, job_id))
    return job_id


async def test_jobs_whose_process_died_are_marked_interrupted(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # …as if SIGKILLed while the job ran
    job_id = _owned_by(tmp_path / "db.sqlite3", dead.pid)
    fresh = JobRunner(JobStore(Store(tmp_path / "db.sqlite3")))
    assert [j.id for j in fresh.recover_interrupted()] == [job_id]
    assert fresh.store.get(job_id).state is JobState.INTERRUPTED
    assert fresh.recover_interrupted() == []


async def test_jobs_of_another_live_process_are_left_alone(tmp_path):
    other = subprocess.Popen(["sleep", "30"])
    try:
        job_id = _owned_by(tmp_path / "db.sqlite3", other.pid)
        fresh = JobRunner(JobStore(Store(tmp_path / "db.sqlite3")))
        assert fresh.recover_interrupted() == []
        assert fresh.store.get(job_id).state is JobState.RUNNING
    finally:
        other.kill()
        other.wait()


async def test_observer_failure_does_not_fail_the_job(runner):
    class Broken:
        async def job_changed(self, job: Job) -> None:
            raise ConnectionError("slack is down")

    job = await runner.submit("two", {"x": 2}, requested_by="U0A", correlation_id="c-6",
                              observer=Broken())
    assert (await runner.wait(job.id)).state is JobState.SUCCEEDED
