from __future__ import annotations

import ipaddress

import pytest

from services.core.errors import Conflict, InvalidInput
from services.core.store import Store
from services.grammar.addresses import AUTO, Family, address_request, network
from services.network.addresses import AddressBook, Pool, host_ula_prefix


def parse_pool(raw: str, family: Family) -> Pool:
    return Pool(family, network(raw, family))


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
        book.allocate("a", Family.V4, address_request(wanted, Family.V4))
    assert book.of("a") == {}


def test_duplicates_and_exhaustion_are_refused(book):
    book.allocate("a", Family.V4, address_request("10.9.0.4/29", Family.V4))
    with pytest.raises(Conflict, match="already used by `a`"):
        book.allocate("b", Family.V4, address_request("10.9.0.4/29", Family.V4))
    for name in "bcde":
        book.allocate(name, Family.V4, AUTO)
    book.allocate("a", Family.V6, AUTO)
    before = {m: book.of(m) for m in "abcdef"}
    with pytest.raises(Conflict, match="exhausted"):
        book.allocate("f", Family.V4, AUTO)
    with pytest.raises(Conflict, match="already used by `b`"):
        book.allocate("a", Family.V4, book.of("b")[Family.V4])  # a keeps its own address
    assert {m: book.of(m) for m in "abcdef"} == before  # refusals changed nothing
    assert len({str(book.of(m)[Family.V4]) for m in "abcde"}) == 5
    assert book.used(Family.V4) == 5


def test_reallocating_a_machine_replaces_its_address(book):
    book.allocate("a", Family.V4, AUTO)
    book.allocate("a", Family.V4, address_request("10.9.0.6/29", Family.V4))
    assert str(book.of("a")[Family.V4]) == "10.9.0.6/29" and book.used(Family.V4) == 1
    book.allocate("a", Family.V4, None)
    assert book.of("a") == {}


@pytest.mark.parametrize(("raw", "message"), [
    ("10.0.0.300/24", "not a valid"), ("10.0.0.5", "ADDRESS/PREFIX"),
    ("fd00::1/64", "is an IPv6 address"), ("$(id)/24", "not a valid")])
def test_requests_have_a_strict_grammar(raw, message):
    with pytest.raises(InvalidInput, match=message):
        address_request(raw, Family.V4)


def test_the_default_ula_prefix_is_stable_and_unique_local():
    prefix = host_ula_prefix()
    assert prefix == host_ula_prefix() and prefix.prefixlen == 64
    assert prefix.subnet_of(ipaddress.ip_network("fd00::/8"))


def test_ports_used_by_host_programs_are_detected():
    import socket

    from services.grammar.ports import PortProtocol
    from services.network.firewall import host_ports_in_use

    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port in host_ports_in_use(PortProtocol.TCP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        assert bound.getsockname()[1] in host_ports_in_use(PortProtocol.UDP)


def test_a_refused_family_leaves_every_family_as_it_was(book):
    book.allocate_all("a", {Family.V4: AUTO, Family.V6: AUTO})
    book.allocate("b", Family.V6, address_request("fd00:9::9/64", Family.V6))
    before = book.of("a")
    with pytest.raises(Conflict, match="already used by `b`"):
        book.allocate_all("a", {Family.V4: address_request("10.9.0.6/29", Family.V4),
                                Family.V6: address_request("fd00:9::9/64", Family.V6)})
    assert book.of("a") == before  # the IPv4 change was not kept either
