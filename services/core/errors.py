"""The exceptions ctbot raises, in one small tree.

    CtbotError
     ├── UserError            the caller can fix it; the message is fit to show in chat
     │    ├── InvalidInput     input failed its grammar (name, address, flag, payload)
     │    ├── NotFound         the thing named does not exist
     │    ├── Conflict         exists already, in use, or busy with another job
     │    ├── OperationFailed  the host could not do it (boot timeout, …); says what next
     │    │    └── MissingProgram  a program ctbot runs is not installed; says which package
     │    └── PermissionDenied the caller's role is not enough
     └── InternalError        a bug or a host failure; logged with its traceback once,
          ├── StoreError       the user sees a short apology with a correlation id
          └── HostCommandFailed
               └── CommandTimedOut

Library errors are translated at the service boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence


class CtbotError(Exception):
    """Base of every error ctbot raises on purpose."""


class UserError(CtbotError):
    """Something the caller can fix. ``str(err)`` is shown to them verbatim."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n{self.hint}"


class InvalidInput(UserError):
    """Input that does not match its grammar. Nothing was changed."""


class NotFound(UserError):
    """The named object does not exist."""


class Conflict(UserError):
    """The object exists already, is in use, or another job holds it."""


class OperationFailed(UserError):
    """The request was fine but the host could not carry it out; the message says why
    and what to look at next (e.g. a machine that did not finish booting)."""


class MissingProgram(OperationFailed):
    """A program ctbot runs is not installed on this host."""

    def __init__(self, program: str, package: str | None) -> None:
        how = (f"`apt-get install {package}`" if package else "install it")
        super().__init__(f"`{program}` is not installed on this host: {how}, or run "
                         "`make run`, which installs everything ctbot needs")
        self.program = program
        self.package = package


class PermissionDenied(UserError):
    """The caller's role does not allow the command."""


class InternalError(CtbotError):
    """Not the caller's fault; logged with a traceback, shown as an apology."""


class StoreError(InternalError):
    """The state database failed."""


class HostCommandFailed(InternalError):
    """An external program exited non-zero or timed out."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"{argv[0]} {status}: {stderr.strip()[-500:]}")


class CommandTimedOut(HostCommandFailed):
    """An external program did not finish within its timeout and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(argv, None, f"no answer within {timeout:.0f} s")
        self.timeout = timeout
