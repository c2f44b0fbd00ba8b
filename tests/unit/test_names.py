from __future__ import annotations

import pytest

from services.core.errors import InvalidInput
from services.grammar.names import MACHINE_NAME_MAX, bridge_name, image_name, machine_name
from services.network.links import nspawn_link_names


@pytest.mark.parametrize("good", ["a", "web1", "db-primary", "a" * MACHINE_NAME_MAX, "x9"])
def test_valid_machine_names(good):
    assert machine_name(good) == good


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "it is empty"),
        ("..", "does not start with a letter"),
        ("a/b", "characters other than"),
        ("$(id)", "does not start with a letter"),
        ("-rf", "does not start with a letter"),
        ("UPPER", "uppercase"),
        ("x;y", "characters other than"),
        ("a\nb", "characters other than"),
        ("a" * 64, "64 characters"),
        ("wéb", "non-ASCII"),
        ("web-", "ends with a hyphen"),
        ("a" * (MACHINE_NAME_MAX + 1), "13 characters"),
    ],
)
def test_invalid_machine_names_say_why(bad, reason):
    with pytest.raises(InvalidInput) as err:
        machine_name(bad)
    assert reason in str(err.value) and "1–12 lowercase letters" in str(err.value)
    assert "\n" not in str(err.value).split(" is not valid")[0]  # shown safely


@pytest.mark.parametrize("name", ["a", "web1", "z" * MACHINE_NAME_MAX, "a-b-c-d-e-f9"])
def test_every_interface_name_derived_from_a_machine_name_is_valid(name):
    """What nspawn derives from the longest names the grammar admits fits IFNAMSIZ."""
    for link in nspawn_link_names(machine_name(name)):
        assert len(link.encode()) <= 15 and bridge_name(link) == link and name in link


def test_image_names_allow_longer_names():
    assert image_name("bookworm-docker-2026") == "bookworm-docker-2026"
    with pytest.raises(InvalidInput):
        image_name("Bookworm")
