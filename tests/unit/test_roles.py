from __future__ import annotations

import pytest

from handlers.roles import LOCAL_USER, Role, RolePolicy, is_slack_user_id, is_valid_user_id


def test_role_order():
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.NONE.allows(Role.VIEWER)
    assert Role.NONE.allows(Role.NONE)


def test_highest_role_wins_and_default_applies():
    policy = RolePolicy.from_lists(admins=["U1"], operators=["U1", "U2"], viewers=["U3"],
                                   default=Role.NONE)
    assert policy.role_of("U1") is Role.ADMIN
    assert policy.role_of("U2") is Role.OPERATOR
    assert policy.role_of("U3") is Role.VIEWER
    assert policy.role_of("U4") is Role.NONE


def test_local_operator_is_admin_regardless_of_lists():
    assert RolePolicy.from_lists().role_of(LOCAL_USER) is Role.ADMIN


@pytest.mark.parametrize("user_id", ["U012ABCDEF", "W0ENTERPRISE", "B0BOT"])
def test_slack_ids(user_id):
    assert is_slack_user_id(user_id) and is_valid_user_id(user_id)


@pytest.mark.parametrize("user_id", ["alice", "u012abc", "U", "", "U0 1", "local\n", "Ü0ABC"])
def test_not_slack_ids(user_id):
    assert not is_slack_user_id(user_id)
    assert not is_valid_user_id(user_id)
