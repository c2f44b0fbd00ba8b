"""Roles, by immutable Slack user id (never display names)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

# The host's own operator (`ctbot cmd`, the console) is LOCAL_USER, always admin; the
# id grammar is services/grammar/slack.py's.
from services.grammar.slack import LOCAL_USER, SLACK_USER_ID_RE

__all__ = ["LOCAL_USER", "Role", "RolePolicy", "is_slack_user_id", "is_valid_user_id"]


class Role(StrEnum):
    NONE = "none"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


_RANK = {Role.NONE: 0, Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


def is_slack_user_id(user_id: str) -> bool:
    return SLACK_USER_ID_RE.fullmatch(user_id) is not None


def is_valid_user_id(user_id: str) -> bool:
    return user_id == LOCAL_USER or is_slack_user_id(user_id)


@dataclass(frozen=True)
class RolePolicy:
    """Maps a user id to a role; a user in several lists gets the highest."""

    assignments: Mapping[str, Role]
    default: Role = Role.NONE

    @classmethod
    def from_lists(
        cls,
        *,
        admins: Iterable[str] = (),
        operators: Iterable[str] = (),
        viewers: Iterable[str] = (),
        default: Role = Role.NONE,
    ) -> RolePolicy:
        assignments: dict[str, Role] = {}
        for role, users in ((Role.VIEWER, viewers), (Role.OPERATOR, operators),
                            (Role.ADMIN, admins)):
            for user in users:
                assignments[user] = role
        return cls(assignments=assignments, default=default)

    def role_of(self, user_id: str) -> Role:
        if user_id == LOCAL_USER:
            # Whoever can run ctbot on the host is root there already.
            return Role.ADMIN
        return self.assignments.get(user_id, self.default)
