"""ICMP echo to many addresses at once: one raw socket per family, kernel timestamps.

Why not icmplib (the usual library): its asyncio API opens one socket per target and
takes the reply's time when the event loop gets round to it. Every raw socket sees every
ICMP packet the host receives, so N sockets copy N×N replies, and a busy loop adds its
lag to each RTT. Here, as in fping: one socket per family, replies told apart by ICMP
identifier and sequence (RFC 792, RFC 4443 §4.1-4.2), the send time taken just before
sendto(), the receive time from the kernel (SO_TIMESTAMPNS, socket(7)), and an ICMP
filter so that the kernel hands the socket echo replies only (raw(7) ICMP_FILTER,
RFC 3542 §3.2 ICMP6_FILTER).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from services.grammar.addresses import Family, IPAddress

log = logging.getLogger(__name__)

ECHO_REQUEST = {Family.V4: 8, Family.V6: 128}
ECHO_REPLY = {Family.V4: 0, Family.V6: 129}
SO_TIMESTAMPNS = 35  # asm-generic/socket.h; also SCM_TIMESTAMPNS
SO_RCVBUFFORCE = 33
ICMP_FILTER = 1  # linux/icmp.h, at SOL_RAW
SOL_RAW = 255
ICMP6_FILTER = 1  # linux/icmpv6.h, at IPPROTO_ICMPV6
RECEIVE_BUFFER = 4 << 20  # a sweep's replies arrive in a burst
READ_BATCH = 512  # datagrams per wake-up of the reader
PAYLOAD = 16  # bytes after the 8-byte header: fping's default is 56; 16 carries the tag
TIMESPEC = struct.Struct("@qq")


@dataclass(frozen=True, slots=True)
class EchoResult:
    address: IPAddress
    rtt: float | None  # seconds, from the kernel's receive timestamp; None: no reply
    error: str | None = None  # why there is no reply, when known


class IcmpUnavailable(Exception):
    """No raw ICMP socket for a family (not root, no CAP_NET_RAW, or no IPv6 at all)."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


SO_ATTACH_FILTER = 26
# Classic BPF (Documentation/networking/filter.rst): keep a packet whose ICMP identifier
# is ours, drop the rest in the kernel, before it takes room in the socket's buffer. An
# IPv4 raw socket sees the IP header first (its length from the IHL nibble), an ICMPv6
# one the ICMPv6 header.
_BPF_LDX_MSH, _BPF_LDH_IND, _BPF_LDH_ABS, _BPF_JEQ, _BPF_RET = 0xB1, 0x48, 0x28, 0x15, 0x06


def identifier_filter(family: Family, identifier: int) -> list[tuple[int, int, int, int]]:
    """The (code, jt, jf, k) instructions that accept echo replies to ``identifier``."""
    load = ([(_BPF_LDX_MSH, 0, 0, 0), (_BPF_LDH_IND, 0, 0, 4)] if family is Family.V4
            else [(_BPF_LDH_ABS, 0, 0, 4)])
    return [*load, (_BPF_JEQ, 0, 1, identifier), (_BPF_RET, 0, 0, 0xFFFF), (_BPF_RET, 0, 0, 0)]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    import ctypes

    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_socket(family: Family, identifier: int | None = None) -> socket.socket:
    """A non-blocking raw ICMP(v6) socket that receives echo replies only (to
    ``identifier`` only, when given), with kernel receive timestamps. IcmpUnavailable
    when the host does not allow one."""
    try:
        if family is Family.V4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            # A set bit drops that type: everything but echo reply (type 0).
            sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", 0xFFFFFFFF & ~1))
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            blocked = [0xFFFFFFFF] * 8
            blocked[129 >> 5] &= ~(1 << (129 & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
    except OSError as exc:
        raise IcmpUnavailable(f"cannot open a raw ICMP socket for {family}: "
                              f"{os.strerror(exc.errno or 0)}") from exc
    sock.setblocking(False)
    if identifier is not None:
        _attach_filter(sock, identifier_filter(family, identifier))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:  # without CAP_NET_ADMIN: what rmem_max allows
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    return sock


@dataclass(slots=True)
class _Pending:
    address: IPAddress
    sent_ns: int
    rtt: float | None = None


class Pinger:
    """Echo requests to many addresses of both families in one go.

        pinger = Pinger()
        results = await pinger.ping_many([ip("10.0.0.2"), ip("fd00::2")], timeout=2.0)
        pinger.close()

    Sockets are opened on first use and kept; ``available(family)`` says whether one
    could be. One instance sends with one random identifier; the sequence number tells
    its probes apart (65536 in flight at most)."""

    def __init__(self) -> None:
        self.identifier = secrets.randbelow(0x10000)
        self._sockets: dict[Family, socket.socket] = {}
        self._unavailable: dict[Family, str] = {}
        self._sequence = 0
        self._pending: dict[tuple[Family, int], _Pending] = {}
        self._lock = asyncio.Lock()
        self._outstanding = 0  # probes of this sweep still without a reply
        self._sending = False  # the sweep's requests are still going out
        self._all_answered = asyncio.Event()

    def available(self, family: Family) -> str | None:
        """None if a socket for ``family`` is open or can be; else the reason why not."""
        try:
            self._socket(family)
        except IcmpUnavailable as exc:
            return str(exc)
        return None

    def _socket(self, family: Family) -> socket.socket:
        if family in self._unavailable:
            raise IcmpUnavailable(self._unavailable[family])
        if family not in self._sockets:
            try:
                sock = open_socket(family, self.identifier)
            except IcmpUnavailable as exc:
                self._unavailable[family] = str(exc)
                raise
            asyncio.get_running_loop().add_reader(sock.fileno(), self._receive, family, sock)
            self._sockets[family] = sock
        return self._sockets[family]

    async def ping_many(self, addresses: Iterable[IPAddress], *,
                        timeout: float) -> dict[IPAddress, EchoResult]:
        """One echo request to each address; waits until all answered or ``timeout``
        seconds after the last was sent. Raises IcmpUnavailable for a family without a
        socket only if every address is of it; otherwise those get an ``error``."""
        async with self._lock:  # one sweep at a time: the sequence space is shared
            return await self._ping_many(list(dict.fromkeys(addresses)), timeout)

    async def _ping_many(self, addresses: list[IPAddress],
                         timeout: float) -> dict[IPAddress, EchoResult]:
        results: dict[IPAddress, EchoResult] = {}
        sent: list[tuple[Family, int]] = []
        self._all_answered.clear()
        self._outstanding = 0
        self._sending = True
        for index, address in enumerate(addresses):
            family = Family.V4 if address.version == 4 else Family.V6
            try:
                sock = self._socket(family)
            except IcmpUnavailable as exc:
                results[address] = EchoResult(address, None, str(exc))
                continue
            self._sequence = (self._sequence + 1) & 0xFFFF
            key = (family, self._sequence)
            header = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, self.identifier,
                                 self._sequence)
            payload = struct.pack("!Q", time.time_ns()).ljust(PAYLOAD, b"\0")
            if family is Family.V4:  # the kernel fills in ICMPv6's (it covers the IPv6 header)
                header = header[:2] + struct.pack("!H", checksum(header + payload)) + header[4:]
            pending = _Pending(address, time.time_ns())
            self._pending[key] = pending
            self._outstanding += 1
            try:
                sock.sendto(header + payload, (str(address), 0))
            except OSError as exc:
                del self._pending[key]
                self._outstanding -= 1
                results[address] = EchoResult(address, None, _send_error(exc))
                continue
            sent.append(key)
            if index % 64 == 63:
                await asyncio.sleep(0)  # let the reader take replies already in
        self._sending = False
        try:
            if self._outstanding:
                async with asyncio.timeout(timeout):
                    await self._all_answered.wait()
        except TimeoutError:
            pass
        finally:
            for key in sent:
                pending = self._pending.pop(key)
                results[pending.address] = EchoResult(
                    pending.address, pending.rtt,
                    None if pending.rtt is not None else f"no reply within {timeout:g} s")
        return results

    def _receive(self, family: Family, sock: socket.socket) -> None:
        """Reader callback: take the datagrams waiting, match them to probes. At most
        READ_BATCH per call: a flood of echo replies (a machine's root can send them)
        must not keep the event loop here."""
        for _ in range(READ_BATCH):
            try:
                data, ancillary, _flags, source = sock.recvmsg(
                    256, socket.CMSG_SPACE(TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("icmp receive failed family=%s: %s", family, exc)
                return
            received_ns = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = TIMESPEC.unpack(value[:TIMESPEC.size])
                    received_ns = seconds * 1_000_000_000 + nanoseconds
            if received_ns is None:
                received_ns = time.time_ns()
            if family is Family.V4:
                data = data[(data[0] & 0x0F) * 4:] if data else b""  # past the IP header
            if len(data) < 8:
                continue
            icmp_type, _code, _sum, identifier, sequence = struct.unpack("!BBHHH", data[:8])
            if icmp_type != ECHO_REPLY[family] or identifier != self.identifier:
                continue
            pending = self._pending.get((family, sequence))
            if pending is None or pending.rtt is not None or \
                    str(pending.address) != source[0].split("%")[0]:
                continue
            pending.rtt = max(received_ns - pending.sent_ns, 0) / 1e9
            self._outstanding -= 1
            if self._outstanding == 0 and not self._sending:
                self._all_answered.set()

    def close(self) -> None:
        loop = None
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
        for sock in self._sockets.values():
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()


def _send_error(exc: OSError) -> str:
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "the host has no route to it"
    return f"cannot send: {os.strerror(exc.errno or 0)}"
