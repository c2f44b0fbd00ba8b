"""Cross-cutting checks, each a middleware that calls ``await call_next()``.

Order (outermost first): audit → authorize → confirm → the verb. Audit is outermost
so that denied and failed attempts are recorded too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from handlers import messages
from handlers.context import Invocation, Reply, Transport
from services.core.audit import Outcome
from services.core.errors import PermissionDenied, UserError

log = logging.getLogger(__name__)

Next = Callable[[], Awaitable[Reply]]
Middleware = Callable[[Invocation, Next], Awaitable[Reply]]


async def audit(inv: Invocation, call_next: Next) -> Reply:
    if not inv.verb.audited:
        return await call_next()
    outcome, detail = Outcome.INTERNAL_ERROR, ""
    try:
        reply = await call_next()
        outcome = reply.outcome
        if reply.job_id is not None:
            detail = f"job #{reply.job_id}"
        return reply
    except PermissionDenied as exc:
        outcome, detail = Outcome.DENIED, str(exc)
        raise
    except UserError as exc:
        outcome, detail = Outcome.USER_ERROR, str(exc)
        raise
    finally:
        inv.services.audit.record(
            user_id=inv.user_id,
            role=inv.role,
            transport=inv.request.transport,
            command=inv.request.text,
            outcome=outcome,
            detail=detail,
            correlation_id=inv.request.correlation_id,
        )


async def authorize(inv: Invocation, call_next: Next) -> Reply:
    if not inv.role.allows(inv.verb.role):
        log.info("command denied user=%s role=%s verb=%s needs=%s cid=%s", inv.user_id,
                 inv.role, inv.verb.name, inv.verb.role, inv.request.correlation_id)
        raise PermissionDenied(messages.denied(inv.verb.name, inv.verb.role, inv.role))
    return await call_next()


async def confirm(inv: Invocation, call_next: Next) -> Reply:
    if inv.verb.confirm and not inv.request.confirmed:
        return Reply(
            message=messages.needs_confirmation(inv.request.text.strip(),
                                                webhook=inv.request.transport is Transport.WEBHOOK),
            outcome=Outcome.USER_ERROR,
            needs_confirmation=True,
            data={"error": "confirmation required", "needs_confirmation": True},
        )
    return await call_next()


DEFAULT_CHAIN: tuple[Middleware, ...] = (audit, authorize, confirm)
