"""What the machines capability says to users: errors and progress lines, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def no_machine(name: str) -> str:
    return f"there is no machine `{name}`; `list` shows the machines"


def gone_meanwhile(name: str, note: str) -> str:
    return f"there is no machine `{name}` any more: {note}"


def being_created(name: str, job: int | None) -> str:
    on = f" (job #{job})" if job else ""
    return f"machine `{name}` is being created{on}; try again when it is done"


def busy(name: str, op: str, job: int | None) -> str:
    on = f" (job #{job})" if job else ""
    return f"machine `{name}` is busy: {op} in progress{on}; try again when it is done"


def exists(name: str) -> str:
    return f"machine `{name}` exists already; `status {name}` shows it"


def not_ours(root: Path, settings: Path, name: str) -> str:
    return (f"{root} or {settings} exists but ctbot has no machine `{name}`; move it away "
            "or pick another name")


def running_already(name: str) -> str:
    return f"machine `{name}` is running already"


def not_running(name: str) -> str:
    return f"machine `{name}` is not running"


def not_started(name: str, state: str) -> str:
    return f"machine `{name}` is {state}; `start {name}` first"


def cannot_run(name: str, program: str, stderr: str) -> str:
    return f"cannot run `{program}` in `{name}`: {stderr.strip()[-300:]}"


def not_a_plain_file(path: str) -> str:
    return (f"{path} inside the machine cannot be replaced (a directory, or a file made "
            "immutable, is there): ctbot writes nothing through it. Remove it, inside the "
            "machine, and try again")


def not_a_plain_directory(path: str) -> str:
    return (f"{path} inside the machine is not a plain directory (a symlink, or a file): "
            "ctbot neither reads nor writes through it. Make it a directory again, inside the "
            "machine, and try again")


def exec_timed_out(name: str, program: str, timeout: float) -> str:
    return (f"`{program}` in `{name}` did not finish within {timeout:.0f} s and was killed; "
            "give it longer with `--timeout SECONDS`")


def stopped_while_booting(name: str, console: str, hint: str) -> str:
    return f"machine `{name}` stopped while booting. Its console said:\n{console}{hint}"


def boot_timeout(name: str, seconds: float, console: str) -> str:
    return (f"machine `{name}` did not finish booting within {seconds:.0f} s. Its console "
            f"said:\n{console}")


def inotify_exhausted(limit: str) -> str:
    # Every machine's systemd holds inotify instances, and all machines run as the host's
    # root: the per-user limit (128 by default) runs out first.
    return ("\nThe host ran out of inotify instances (fs.inotify.max_user_instances = "
            f"{limit}). Raise it, e.g. `sysctl -w fs.inotify.max_user_instances=1024`, and "
            "persist it in /etc/sysctl.d/.")


def image_in_use(image: str, users: list[str]) -> str:
    return f"image `{image}` is used by {', '.join(users)}; destroy those machines first"


# Progress lines of a job (what `job ID` and the Slack message show).

def building_image(image: str) -> str:
    return f"image `{image}` does not exist yet: building it (first use)"


def cloned(image: str, method: str, seconds: float) -> str:
    return f"cloned `{image}` ({method}) in {seconds:.2f} s"


def configured(seconds: float) -> str:
    return f"configured machine-id, hostname and settings in {seconds:.2f} s"


def nspawn_started(pid: int, supervisor: str) -> str:
    return f"started systemd-nspawn (pid {pid}, {supervisor})"


def booting(name: str, seconds: float) -> str:
    return f"booting `{name}`: {seconds:.0f} s, waiting for its systemd to report ready"


def booted(seconds: float) -> str:
    return f"booted: its systemd reported ready after {seconds:.2f} s"


def powered_off(seconds: float | None = None) -> str:
    return "powered off" if seconds is None else f"powered off in {seconds:.2f} s"


def removed(name: str) -> str:
    return f"removed its root filesystem, settings and addresses; `{name}` is gone"


def interrupted_create(name: str, step: str) -> str:
    return f"create of `{name}` was interrupted at step {step}; rolled back: nothing of it is left"


def interrupted_destroy(name: str, step: str) -> str:
    return f"destroy of `{name}` was interrupted at step {step}; finished it"


def interrupted_other(op: str, name: str, step: str, running: bool) -> str:
    return (f"{op} of `{name}` was interrupted at step {step}; the machine is "
            f"{'running' if running else 'stopped'}")


restoring = "putting back the machine as it was"


def interrupted_undone(op: str, name: str, step: str) -> str:
    return (f"{op} of `{name}` was interrupted at step {step}; undone: the machine is as it "
            "was before")


def interrupted_not_undone(op: str, name: str, reason: str) -> str:
    return (f"{op} of `{name}` was interrupted, and undoing it failed ({reason[:200]}): "
            f"`{name}` is marked failed; `logs {name}` shows why, then `net set` or "
            f"`start` it again, or `destroy` it")


def interrupted_job(note: str) -> str:
    return f"interrupted: {note}"


def remounted(name: str) -> str:
    return f"remounted the root of `{name}` (the host rebooted?)"


def found_running(name: str, pid: int) -> str:
    return f"`{name}` runs as nspawn pid {pid}; record updated"


def found_stopped(name: str) -> str:
    return (f"`{name}` should be running but is not (powered off from inside, or the host "
            f"rebooted); `start {name}` starts it")


def found_powered_off(name: str) -> str:
    return (f"`{name}` was powered off outside ctbot (machinectl poweroff, systemctl stop, "
            f"or poweroff inside it): recorded as stopped; `start {name}` starts it")


def part_reconcile_failed(part: str) -> str:
    return f"could not check the {part} side of the machines; see the log"


def reconcile_failed(name: str) -> str:
    return f"could not reconcile `{name}`; see the log"


# Images.

def no_image(name: str, known: str) -> str:
    return f"there is no image `{name}` (images: {known}); `image build {name}` makes one"


def image_exists(name: str) -> str:
    return f"image `{name}` exists already; `image remove {name}` first"


def unknown_suite(suite: str, known: Sequence[str]) -> str:
    return f"suite `{suite}` is not one of {', '.join(known)}"


def relative_path(origin: Path) -> str:
    return f"give an absolute path, not `{origin}`"


def not_a_tree(origin: Path) -> str:
    return f"`{origin}` is neither a directory nor a tar archive"


def bad_tarball(origin: Path, stderr: str) -> str:
    lines = [line.removeprefix("tar: ") for line in stderr.splitlines()
             if line.strip() and "R: " not in line]
    return f"`{origin}` could not be unpacked: {'; '.join(lines[:3])[:300]}"


def not_a_root(origin: Path) -> str:
    return f"`{origin}` has no /etc: it is not a root filesystem"


def feature_set(name: str, feature: str, on: bool, restarted: bool, running: bool) -> str:
    state = "on" if on else "off"
    if restarted or not running:
        return f"{feature} is {state} for {name}" + ("" if restarted else
                                                     " (it applies when it starts)")
    return f"{feature} is {state} for {name} from its next start (`restart {name}`, or " \
           f"`feature {name} {feature} {state} --restart`)"


def restart_for_feature(feature: str) -> str:
    return f"restarting the machine to apply {feature}"


def deriving(base: str, packages: Sequence[str]) -> str:
    return f"image: {base} + {', '.join(packages)} (installed once, then reused)"


def derive_failed(base: str, packages: Sequence[str], returncode: int | None,
                  last: list[str]) -> str:
    status = "timed out" if returncode is None else f"exited {returncode}"
    said = "; ".join(last) or "nothing"
    return (f"installing {', '.join(packages)} into a copy of image {base} failed: apt "
            f"{status}; its last lines: {said}. Check [images] mirror and the host's "
            "network, or the image itself (`image list`)")


def derived(name: str, seconds: float) -> str:
    return f"image {name} ready in {seconds:.0f} s"


def debootstrap_started(suite: str, packages: int) -> str:
    return f"debootstrap {suite} ({packages} extra packages)"


def debootstrap_done(seconds: float) -> str:
    return f"debootstrap done in {seconds:.0f} s; cleaning up"


def copying(origin: Path) -> str:
    return f"copying {origin}"


def unpacking(origin: Path) -> str:
    return f"unpacking {origin}"


def unpacked_bytes(done: int, total: int) -> str:
    return (f"unpacking: {done / 2**20:.0f} of {total / 2**20:.0f} MiB "
            f"({min(100, done * 100 // total)}%)")


# Job results.

def disk_too_full(where: object, free: int, floor: int) -> str:
    return (f"only {human_size(free)} free at {where}, below [machines] min_free_disk "
            f"({human_size(floor)}): free some space (`image list`, `destroy` what is not needed) "
            "or lower the setting")


def memory_not_available(asked: int, available: int) -> str:
    return (f"--memory {human_size(asked)} is more than the host has available "
            f"({human_size(available)}, MemAvailable): ask for less")


def not_for_inner(flags: list[str]) -> str:
    return (f"{', '.join(flags)}: not for a machine inside another (machines nest one level "
            "deep, start when created, and share their outer's process limit)")


def machine_is(name: str, state: str) -> str:
    return f"`{name}` is {state}"


def destroyed(name: str) -> str:
    return f"`{name}` destroyed"


def human_size(size_bytes: int) -> str:
    if size_bytes < 1024:
        return f"{size_bytes} bytes"
    value, units = float(size_bytes), ("KiB", "MiB", "GiB", "TiB")
    for unit in units:
        value /= 1024
        if value < 1024 or unit == units[-1]:
            break
    return f"{value:.1f} {unit}"


def image_ready(name: str, size_bytes: int) -> str:
    return f"image `{name}` ready ({human_size(size_bytes)})"


def image_imported(name: str, size_bytes: int) -> str:
    return f"image `{name}` imported ({human_size(size_bytes)})"


def give_a_command() -> str:
    return "give the command after `--`, e.g. `exec web1 -- uname -a`"


def no_journal(name: str) -> str:
    return (f"{name} has no readable journal in /var/log/journal (a regular file per "
            "journal, no symlinks); `exec NAME -- journalctl` reads it from inside")
