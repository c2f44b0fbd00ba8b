"""Run a program inside a running machine with no more rights than the machine has.

`nsenter --all` would run the machine's binary — which root inside the machine can
replace — with every capability the host's root has. This helper, run as its own
process (``python -m services.machines.enter LEADER -- ARGV…``), enters the machine's namespaces
and then shrinks its capability bounding set to the machine's (read from its PID 1),
so what it execs can do no more than a process the machine started itself.

Everything it needs is imported before it enters the machine's mount namespace: after
that, the file system it sees is the machine's.
"""

from __future__ import annotations

import os
import sys

NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")  # mnt last: it changes the root
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAP_LAST_CAP_PATH = "/proc/sys/kernel/cap_last_cap"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "TERM": "dumb", "LANG": "C.UTF-8"}


def enter_argv(leader: int, argv: list[str]) -> list[str]:
    """The host command line that runs ``argv`` inside the machine led by ``leader``."""
    return [sys.executable, "-I", "-m", "services.machines.enter", str(leader), "--", *argv]


def _bounding_set(leader: int) -> int:
    with open(f"/proc/{leader}/status") as status:
        for line in status:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    raise RuntimeError(f"no CapBnd for pid {leader}")


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: python -m services.machines.enter LEADER_PID -- ARGV…", file=sys.stderr)
        return 2
    import ctypes  # here, not at the top: ctbot imports enter_argv and needs no ctypes

    leader, argv = int(args[0]), args[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    bounding = _bounding_set(leader)
    with open(CAP_LAST_CAP_PATH) as f:
        last_cap = int(f.read())
    fds = [os.open(f"/proc/{leader}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
    for ns, fd in zip(NAMESPACES, fds, strict=True):
        if os.readlink(f"/proc/{leader}/ns/{ns}") == os.readlink(f"/proc/self/ns/{ns}"):
            continue  # shared with the host (e.g. no private cgroup namespace)
        if libc.setns(fd, 0) != 0:
            err = ctypes.get_errno()
            print(f"enter: setns {ns}: {os.strerror(err)}", file=sys.stderr)
            return 125
    os.chdir("/")
    for cap in range(last_cap + 1):
        if not (bounding >> cap) & 1 and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            print(f"enter: cannot drop capability {cap}", file=sys.stderr)
            return 125
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # A new PID namespace applies to children only: fork, then exec in the child.
    child = os.fork()
    if child == 0:
        try:
            os.execvpe(argv[0], argv, ENV)
        except OSError as exc:
            os.write(2, f"enter: {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + (
        os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
