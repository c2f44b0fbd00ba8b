"""Webhooks as `webhooks` and doctor see them: endpoints, rules, recent deliveries."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from services.core.errors import NotFound
from services.webhooks import messages
from services.webhooks.store import Delivery, DeliveryStore

if TYPE_CHECKING:
    from services.webhooks.config import WebhookConfig


class Webhooks:
    def __init__(self, configs: Sequence[WebhookConfig], store: DeliveryStore, *,
                 source: str = "built-in defaults",
                 clock: Callable[[], float] = time.time) -> None:
        self.configs = {c.name: c for c in configs}
        self.store = store
        self.source = source  # the settings file they came from, as `webhooks` says
        self._clock = clock

    def config(self, name: str) -> WebhookConfig:
        found = self.configs.get(name)
        if found is None:
            raise NotFound(messages.unknown_webhook(name, sorted(self.configs), self.source))
        return found

    def summary(self, *, last: int = 5) -> dict[str, Any]:
        """``{"webhooks": [{name, path, auth, run_as, channel, secret_set, rules: [...],
        last_24h: {state: n}, deliveries: [Delivery.to_json(), …]}]}``."""
        since = self._clock() - 86400
        return {"settings": self.source, "webhooks": [{
            "name": c.name, "path": c.path, "auth": str(c.auth), "run_as": c.run_as,
            "channel": c.channel, "max_body": c.max_body, "secret_env": list(c.secret_env),
            "secret_set": bool(c.secrets), "unset_env": list(c.unset_env),
            "secret_problems": list(c.secret_problems),
            "rules": [{"number": r.number, "when": {k.key: list(k.values) for k in r.when},
                       "do": r.do, "concurrency": str(r.concurrency), "confirm": r.confirm,
                       "channel": r.channel or c.channel} for r in c.rules],
            "last_24h": self.store.counts(c.name, since),
            "deliveries": [d.to_json() for d in self.store.latest(c.name, last)],
        } for c in self.configs.values()]}

    def delivery(self, name: str, delivery_id: str) -> Delivery:
        self.config(name)
        found = self.store.get(name, delivery_id)
        if found is None:
            raise NotFound(messages.unknown_delivery(name, delivery_id))
        return found
