"""Run a program under a seccomp filter that narrows two system calls a machine may be
allowed (``SystemCallFilter=bpf keyctl`` in its .nspawn file: Docker's runc and the
outer machine of a nested one need them) to what those users need and no more:

- ``bpf(2)``: only ``BPF_PROG_LOAD``, ``BPF_PROG_ATTACH``, ``BPF_PROG_DETACH`` and
  ``BPF_PROG_QUERY`` — what a cgroup device filter takes (runc's
  libcontainer/cgroups/devices, systemd's bpf-devices.c). Every way to attach a
  program to the kernel's tracepoints, LSM hooks or functions (``BPF_RAW_TRACEPOINT_OPEN``,
  ``BPF_LINK_CREATE``) and every map or object command is refused with EPERM: without a
  user namespace the machine's root holds CAP_SYS_ADMIN, and a tracing program would
  read any host process's memory.
- ``keyctl(2)``: refused with ENOSYS. Keyrings are per user id, and the machine's root
  is uid 0 of the host: it could link and read the host root's keys. runc treats ENOSYS
  from ``KEYCTL_JOIN_SESSION_KEYRING`` as "no keyrings here" and carries on
  (libcontainer/standard_init_linux.go).

nspawn installs its own filter after this one; the kernel applies both, and for the
same action the one installed last decides (seccomp(2), "SECCOMP_RET_ERRNO"), so the
.nspawn file must allow these calls for this filter's narrower answer to be seen.

Runs as ``/usr/bin/python3 -I syscall_filter.py -- PROGRAM ARG…`` and execs PROGRAM: the
process keeps its PID (ctbot's supervisors watch it by PID). Uses libseccomp's own
Python bindings (Debian: python3-seccomp), which the venv does not need.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"  # the one python3-seccomp is for


def prefix() -> list[str]:
    """What to put before a program's argv to run it under this filter."""
    return [SYSTEM_PYTHON, "-I", str(Path(__file__).resolve()), "--"]


BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_QUERY = 5, 8, 9, 16  # uapi/linux/bpf.h
BPF_ALLOWED = (BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_QUERY)
LAST_BPF_COMMAND = 64  # above every command Linux has: refused as a range


def build_filter() -> Any:
    """The filter, as a libseccomp ``SyscallFilter`` ready to ``load()``."""
    import seccomp  # type: ignore[import-not-found]  # the system python's (python3-seccomp)

    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for arch in (seccomp.Arch.X86, seccomp.Arch.X32, seccomp.Arch.ARM):
        try:  # the native arch's 32-bit ABIs: the same calls by other numbers
            rules.add_arch(arch)
        except (OSError, ValueError, RuntimeError):
            continue  # not an ABI of this machine
    deny = seccomp.ERRNO(errno.EPERM)
    rules.add_rule(deny, "bpf", seccomp.Arg(0, seccomp.LT, BPF_ALLOWED[0]))
    for command in range(BPF_ALLOWED[0] + 1, BPF_ALLOWED[-1]):
        if command not in BPF_ALLOWED:
            rules.add_rule(deny, "bpf", seccomp.Arg(0, seccomp.EQ, command))
    rules.add_rule(deny, "bpf", seccomp.Arg(0, seccomp.GT, BPF_ALLOWED[-1]))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "keyctl")
    return rules


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: syscall_filter.py -- PROGRAM [ARG…]", file=sys.stderr)
        return 2
    build_filter().load()
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
