"""Run a program under a seccomp filter that narrows two system calls a machine may be
allowed (``SystemCallFilter=bpf keyctl`` in its .nspawn file: Docker's runc and the
outer machine of a nested one need them) to what those users need and no more.

Without a user namespace the machine's root holds CAP_SYS_ADMIN, with which any BPF
program may call ``bpf_probe_read_kernel``: a socket filter or a tracing program would
read the host's memory. What runc (libcontainer/cgroups/devices) and systemd
(bpf-devices.c) need is a cgroup device filter: a program that looks at the device
asked for and calls no helper. So:

- ``bpf(BPF_PROG_LOAD)`` is intercepted (SECCOMP_RET_USER_NOTIF, seccomp_unotify(2)).
  A handler process on the host, outside the machine, reads the request from the
  caller's memory, accepts only ``BPF_PROG_TYPE_CGROUP_DEVICE`` programs that call no
  helper and load no map or BTF object, loads that *copy* itself and puts the program's
  file descriptor into the caller (SECCOMP_IOCTL_NOTIF_ADDFD): what the kernel verifies
  is what was checked, however the caller's memory changes meanwhile. Anything else is
  EPERM.
- ``BPF_PROG_ATTACH``, ``BPF_PROG_DETACH`` and ``BPF_PROG_QUERY`` are allowed: the only
  programs a machine can hold are those device filters. Every other command (maps,
  objects, tracepoint and link attachments, ids) is EPERM.
- ``keyctl(2)`` answers ENOSYS. Keyrings are per user id, and the machine's root is uid 0
  of the host: it could link and read the host root's keys. runc treats ENOSYS from
  ``KEYCTL_JOIN_SESSION_KEYRING`` as "no keyrings here" (libcontainer/
  standard_init_linux.go).

nspawn installs its own filter after this one; the kernel applies both, and for the
same action the one installed last decides (seccomp(2), "SECCOMP_RET_ERRNO"), so the
.nspawn file must allow these calls for this filter's narrower answer to be seen.

Runs as ``/usr/bin/python3 -I syscall_filter.py -- PROGRAM ARG…`` and execs PROGRAM: the
process keeps its PID (ctbot's supervisors watch it by PID). The handler is forked
before the filter is loaded (it must not be under it), gets the listener through a
socket, and ends when the last process under the filter does. Uses libseccomp's own
Python bindings (Debian: python3-seccomp), which the venv does not need.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from pathlib import Path
from typing import Any

# ctypes, fcntl, platform, select and socket are imported where the filter runs: ctbot
# imports this module for prefix() in every command, and they cost ~15 ms together.

SYSTEM_PYTHON = "/usr/bin/python3"  # the one python3-seccomp is for


def prefix() -> list[str]:
    """What to put before a program's argv to run it under this filter."""
    return [SYSTEM_PYTHON, "-I", str(Path(__file__).resolve()), "--"]


# uapi/linux/bpf.h
BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_QUERY = 5, 8, 9, 16
BPF_ALLOWED = (BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_QUERY)
BPF_PROG_TYPE_CGROUP_SKB, BPF_PROG_TYPE_CGROUP_DEVICE = 8, 15
# The device filter, and the cgroup-skb program cilium/ebpf (runc's) loads to learn
# whether the kernel has BPF_PROG_ATTACH; neither may call anything.
PROG_TYPES = (BPF_PROG_TYPE_CGROUP_SKB, BPF_PROG_TYPE_CGROUP_DEVICE)
MAX_INSNS = 4096  # a device filter is a few dozen instructions
PROG_LOAD_ATTR_SIZE = 128  # up to fd_array: the fields a device filter may use, and checks
SYS_BPF = {"x86_64": 321, "aarch64": 280}

# uapi/linux/seccomp.h: _IOWR('!', 0, seccomp_notif), _IOWR('!', 1, seccomp_notif_resp),
# _IOW('!', 2, __u64), _IOW('!', 3, seccomp_notif_addfd)
NOTIF_RECV, NOTIF_SEND, NOTIF_ID_VALID, NOTIF_ADDFD = (0xC0502100, 0xC0182101, 0x40082102,
                                                       0x40182103)
NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, nr, arch, ip, args[6]
RESPONSE = struct.Struct("=QqiI")  # id, val, error, flags
ADDFD = struct.Struct("=QIIII")  # id, flags, srcfd, newfd, newfd_flags
ADDFD_FLAG_SEND = 2


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
    rules.add_rule(seccomp.NOTIFY, "bpf", seccomp.Arg(0, seccomp.EQ, BPF_PROG_LOAD))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "keyctl")
    return rules


# ---------------------------------------------------------------------- the handler

def check_program(attr: bytes, read: Any) -> tuple[bytes, bytes, bytes] | None:
    """``(attr for our own call, instructions, license)`` if the PROG_LOAD request in
    ``attr`` is a device filter that calls no helper and names no map or object; None
    otherwise. ``read(address, size)`` reads the caller's memory."""
    attr = attr.ljust(PROG_LOAD_ATTR_SIZE, b"\0")
    prog_type, insn_cnt, insns, license_ptr = struct.unpack_from("=IIQQ", attr, 0)
    prog_flags, = struct.unpack_from("=I", attr, 44)
    name = attr[48:64]
    expected_attach_type, = struct.unpack_from("=I", attr, 68)
    if prog_type not in PROG_TYPES or not 0 < insn_cnt <= MAX_INSNS:
        return None
    # prog_ifindex, prog_btf_fd, func/line info, attach ids, relocations, fd_array, and
    # anything past them: a device filter has none.
    if any(attr[64:68]) or any(attr[72:PROG_LOAD_ATTR_SIZE]):
        return None
    code = read(insns, insn_cnt * 8)
    if len(code) != insn_cnt * 8:
        return None
    for offset in range(0, len(code), 8):
        opcode, registers = code[offset], code[offset + 1]
        if opcode in (0x85, 0x8D):
            return None  # BPF_JMP|BPF_CALL (a helper, a kfunc, a function; by register)
        if opcode == 0x18 and registers >> 4:
            return None  # ld_imm64 of a map, BTF object or function: src_reg != 0
        if opcode & 0x07 == 0x00 and opcode & 0xE0 in (0x20, 0x40):
            return None  # BPF_LD|BPF_ABS/IND: packet access
    license = b""
    while b"\0" not in license and len(license) < 128:  # a C string, 16 bytes at a time
        chunk = read(license_ptr + len(license), 16)
        if not chunk:
            return None
        license += chunk
    license = license.split(b"\0", 1)[0] + b"\0"
    own = bytearray(PROG_LOAD_ATTR_SIZE)
    struct.pack_into("=IIQQ", own, 0, prog_type, insn_cnt, 0, 0)  # pointers set by caller
    struct.pack_into("=I", own, 44, prog_flags)
    own[48:64] = name
    struct.pack_into("=I", own, 68, expected_attach_type)
    return bytes(own), bytes(code), license


def drop_capabilities(libc: Any) -> None:
    """Load programs with CAP_BPF but neither CAP_SYS_ADMIN nor CAP_PERFMON: the verifier
    then lets no program compare or return kernel pointers (allow_ptr_leaks is
    perfmon_capable(), kernel/bpf/syscall.c), whoever asked for it."""
    import ctypes

    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = ctypes.create_string_buffer(24)  # two {effective, permitted, inheritable}
    if libc.capget(header, data) != 0:
        return
    words = list(struct.unpack("=6I", data.raw))
    for cap in (21, 38):  # CAP_SYS_ADMIN, CAP_PERFMON
        index, bit = divmod(cap, 32)
        for field in (0, 1):  # effective, permitted
            words[index * 3 + field] &= ~(1 << bit)
    libc.capset(header, struct.pack("=6I", *words))


def handle(listener: int) -> None:
    """Answer PROG_LOAD notifications until no process is under the filter any more."""
    import ctypes
    import fcntl
    import platform
    import select

    libc = ctypes.CDLL(None, use_errno=True)
    drop_capabilities(libc)
    sys_bpf = SYS_BPF.get(platform.machine())
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    while True:
        events = poller.poll()
        if any(flags & (select.POLLHUP | select.POLLERR) for _, flags in events):
            return
        request = bytearray(NOTIF.size)
        try:
            fcntl.ioctl(listener, NOTIF_RECV, request, True)
        except OSError:
            continue  # the caller went away meanwhile
        notif_id, pid, _, _, _, _, _, attr_ptr, size, *_ = NOTIF.unpack(request)
        fd, error = -1, errno.EPERM
        try:
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
                def read(address: int, length: int) -> bytes:
                    memory.seek(address)
                    return memory.read(length)

                attr = read(attr_ptr, min(size, 4096))
                checked = check_program(attr, read)
                # The PID still named the caller while we read (not a new process that
                # got its PID): else what we read is not the request.
                fcntl.ioctl(listener, NOTIF_ID_VALID, struct.pack("=Q", notif_id))
            if checked is not None and sys_bpf is not None:
                own, code, license = checked
                insns = ctypes.create_string_buffer(code, len(code))
                lic = ctypes.create_string_buffer(license, len(license))
                buffer = bytearray(own)
                struct.pack_into("=QQ", buffer, 8, ctypes.addressof(insns),
                                 ctypes.addressof(lic))
                raw = (ctypes.c_char * len(buffer)).from_buffer(buffer)
                fd = libc.syscall(sys_bpf, BPF_PROG_LOAD, raw, len(buffer))
                error = ctypes.get_errno() if fd < 0 else 0
        except OSError:
            fd, error = -1, errno.EPERM
        try:
            if fd >= 0:
                fcntl.ioctl(listener, NOTIF_ADDFD, ADDFD.pack(notif_id, ADDFD_FLAG_SEND, fd,
                                                              0, os.O_CLOEXEC))
            else:
                fcntl.ioctl(listener, NOTIF_SEND, RESPONSE.pack(notif_id, 0, -error, 0))
        except OSError:
            pass  # the caller went away meanwhile
        finally:
            if fd >= 0:
                os.close(fd)


def _start_handler(channel: Any) -> None:
    """Fork the handler, detached (its parent is init once the middle child exits, not
    the program this process becomes); it waits for the listener, then serves it."""
    import socket

    middle = os.fork()
    if middle:
        os.waitpid(middle, 0)
        return
    try:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for stream in (0, 1):
                os.dup2(devnull, stream)
            _, fds, _, _ = socket.recv_fds(channel, 1, 1)
            channel.close()
            if fds:
                handle(fds[0])
    finally:
        os._exit(0)


def _under_a_filter() -> bool:
    """/proc/self/status says "Seccomp: 2" (proc(5)): a filter is installed above us."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    return any(line.split() == ["Seccomp:", "2"] for line in status.splitlines())


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: syscall_filter.py -- PROGRAM [ARG…]", file=sys.stderr)
        return 2
    import socket

    rules = build_filter()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    _start_handler(theirs)  # before the filter: the handler must not be under it
    theirs.close()
    try:
        rules.load()
    except RuntimeError as exc:
        # Only "a listener is there already": EBUSY from the kernel, which libseccomp
        # reports as -ECANCELED; any other failure is a failure.
        if not _under_a_filter() or not any(f"errno = -{n}" in str(exc)
                                            for n in (errno.EBUSY, errno.ECANCELED)):
            raise
        # The kernel allows one listener per filter tree (seccomp(2): EBUSY on
        # SECCOMP_FILTER_FLAG_NEW_LISTENER): this ctbot runs inside a machine, and every
        # process here, a nested nspawn too, is under that machine's filter already
        # (ctbot's own, on the host: the same narrowing). The handler ends on EOF.
        ours.close()
        print("syscall_filter: this process is under a seccomp listener already (ctbot "
              "inside a machine): nspawn runs under that filter", file=sys.stderr)
        os.execvp(argv[2], argv[2:])
    listener = rules.get_notify_fd()
    socket.send_fds(ours, [b"L"], [listener])
    ours.close()
    os.close(listener)  # never in the machine: it could answer its own requests
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
