from __future__ import annotations

import ipaddress

import pytest

from services.core.errors import Conflict, InvalidInput
from services.core.store import Store
from services.network.addresses import (
    AUTO,
    AddressBook,
    Family,
    host_ula_prefix,
    parse_pool,
    parse_request,
)


@pytest.fixture
def book(tmp_path) -> AddressBook:
    return AddressBook(Store(tmp_path / "db.sqlite3"), {
        Family.V4: parse_pool("10.9.0.0/29", Family.V4),
        Family.V6: parse_pool("fd00:9::/64", Family.V6),
    })


def test_auto_takes_the_lowest_free_address_never_the_gateway(book):
    assert str(book.allocate("a", Family.V4, AUTO)) == "10.9.0.2/29"
    assert str(book.allocate("b", Family.V4, AUTO)) == "10.9.0.3/29"
    assert str(book.allocate("a", Family.V6, AUTO)) == "fd00:9::2/64"


def test_released_addresses_are_handed_out_again(book):
    book.allocate("a", Family.V4, AUTO)
    book.allocate("b", Family.V4, AUTO)
    book.release("a")
    assert str(book.allocate("c", Family.V4, AUTO)) == "10.9.0.2/29"
    assert book.of("a") == {}


def test_allocations_survive_reopening_the_store(tmp_path):
    pools = {Family.V4: parse_pool("10.9.0.0/29", Family.V4)}
    AddressBook(Store(tmp_path / "db.sqlite3"), pools).allocate("a", Family.V4, AUTO)
    again = AddressBook(Store(tmp_path / "db.sqlite3"), pools)
    assert str(again.of("a")[Family.V4]) == "10.9.0.2/29"
    assert str(again.allocate("b", Family.V4, AUTO)) == "10.9.0.3/29"


@pytest.mark.parametrize(("wanted", "error", "message"), [
    ("10.9.0.1/29", InvalidInput, "is the gateway"),
    ("10.9.0.0/29", InvalidInput, "network or broadcast"),
    ("10.9.0.7/29", InvalidInput, "network or broadcast"),
    ("10.9.1.5/29", InvalidInput, "outside the ipv4 pool"),
    ("10.9.0.5/24", InvalidInput, "outside the ipv4 pool"),
])
def test_explicit_addresses_are_checked(book, wanted, error, message):
    with pytest.raises(error, match=message):
        book.allocate("a", Family.V4, parse_request(wanted, Family.V4))
    assert book.of("a") == {}


def test_duplicates_and_exhaustion_are_refused(book):
    book.allocate("a", Family.V4, parse_request("10.9.0.4/29", Family.V4))
    with pytest.raises(Conflict, match="already used by `a`"):
        book.allocate("b", Family.V4, parse_request("10.9.0.4/29", Family.V4))
    for name in "bcde":
        book.allocate(name, Family.V4, AUTO)
    with pytest.raises(Conflict, match="exhausted"):
        book.allocate("f", Family.V4, AUTO)
    assert "f" not in [m for m in "abcde" if book.of(m) == {}]
    assert book.used(Family.V4) == 5


def test_reallocating_a_machine_replaces_its_address(book):
    book.allocate("a", Family.V4, AUTO)
    book.allocate("a", Family.V4, parse_request("10.9.0.6/29", Family.V4))
    assert str(book.of("a")[Family.V4]) == "10.9.0.6/29" and book.used(Family.V4) == 1
    book.allocate("a", Family.V4, None)
    assert book.of("a") == {}


@pytest.mark.parametrize(("raw", "message"), [
    ("10.0.0.300/24", "not a valid"), ("10.0.0.5", "ADDRESS/PREFIX"),
    ("fd00::1/64", "is an IPv6 address"), ("$(id)/24", "not a valid")])
def test_requests_have_a_strict_grammar(raw, message):
    with pytest.raises(InvalidInput, match=message):
        parse_request(raw, Family.V4)


def test_the_default_ula_prefix_is_stable_and_unique_local():
    prefix = host_ula_prefix()
    assert prefix == host_ula_prefix() and prefix.prefixlen == 64
    assert prefix.subnet_of(ipaddress.ip_network("fd00::/8"))


def test_ports_used_by_host_programs_are_detected():
    import socket

    from services.network.service import PortProtocol, host_ports_in_use

    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port in host_ports_in_use(PortProtocol.TCP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        assert bound.getsockname()[1] in host_ports_in_use(PortProtocol.UDP)
