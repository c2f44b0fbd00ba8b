"""What webhooks need (doctor): each one's secret set in ctbot's environment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from services.core.doctor import Check
from services.webhooks import messages

if TYPE_CHECKING:
    from services.webhooks.config import WebhookConfig


async def webhook_checks(configs: Sequence[WebhookConfig]) -> list[Check]:
    checks = []
    for config in configs:
        name = f"webhook {config.name} secret"
        if config.secret_problems:
            checks.append(Check(name, False, "; ".join(config.secret_problems),
                                messages.secret_recipe(config)))
        elif not config.secrets:
            checks.append(Check(name, False, messages.no_secret(config.name,
                                                                config.secret_env),
                                messages.secret_recipe(config)))
        elif config.unset_env:
            set_ = [n for n in config.secret_env if n not in config.unset_env]
            checks.append(Check(name, True, f"{', '.join(set_)} set; "
                                f"{', '.join(config.unset_env)} unset (needed only while "
                                "rotating)"))
        else:
            checks.append(Check(name, True, f"{', '.join(config.secret_env)} set"))
    return checks
