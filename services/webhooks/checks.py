"""What webhooks need (doctor): each one's secret set in ctbot's environment."""

from __future__ import annotations

from collections.abc import Sequence

from services.core.doctor import Check
from services.webhooks import messages
from services.webhooks.config import WebhookConfig


async def webhook_checks(configs: Sequence[WebhookConfig]) -> list[Check]:
    checks = []
    for config in configs:
        name = f"webhook {config.name} secret"
        if not config.secrets:
            checks.append(Check(name, False, messages.no_secret(config.name,
                                                                config.secret_env),
                                f"set {config.secret_env[0]} in ctbot's environment (e.g. "
                                "`openssl rand -hex 32`, the same value as the sender's)"))
        elif config.unset_env:
            set_ = [n for n in config.secret_env if n not in config.unset_env]
            checks.append(Check(name, True, f"{', '.join(set_)} set; "
                                f"{', '.join(config.unset_env)} unset (needed only while "
                                "rotating)"))
        else:
            checks.append(Check(name, True, f"{', '.join(config.secret_env)} set"))
    return checks
