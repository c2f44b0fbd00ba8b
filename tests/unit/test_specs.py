"""Typed job arguments survive the store: what a job reads back is what was parsed."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from services.core.errors import InvalidInput
from services.grammar.addresses import AUTO, Family
from services.machines.jobs import ImageBuild, ImageImport
from services.machines.specs import CreateSpec, MachineRef
from services.network.operations import Readdress
from services.network.part import Addressing, NetworkPart


class NoNetworking:
    """NetworkPart only needs its networking at run time, not to read options."""


def test_create_spec_round_trips_with_the_parts_options():
    part = NetworkPart(NoNetworking())  # type: ignore[arg-type]
    spec = CreateSpec(name="web1", image="bookworm", cpu=1.5, memory_bytes=2**30, start=False,
                      options={"network": Addressing({
                          Family.V4: ipaddress.ip_interface("10.231.0.9/24"),
                          Family.V6: None})})
    again = CreateSpec.from_json(spec.to_json(), [part])
    assert again == spec
    assert again.options["network"].to_json() == {"ipv4": "10.231.0.9/24", "ipv6": "none"}


def test_other_job_arguments_round_trip():
    for args, decode in ((MachineRef("db1"), MachineRef.from_json),
                         (Readdress("db1", {Family.V4: AUTO}), Readdress.from_json),
                         (ImageBuild("base", "trixie"), ImageBuild.from_json),
                         (ImageImport("tiny", Path("/srv/tiny.tar")), ImageImport.from_json)):
        assert decode(args.to_json()) == args


def test_stored_arguments_are_read_back_through_the_grammar():
    with pytest.raises(InvalidInput, match="machine name"):
        MachineRef.from_json({"name": "../etc"})
    with pytest.raises(InvalidInput, match="is an IPv6 address"):
        Readdress.from_json({"name": "db1", "ipv4": "fd00::1/64"})
