"""One exception hierarchy for everything gwsim reports to a user as bad input."""

from __future__ import annotations


class GwsimError(Exception):
    """Base of errors shown to the user as one line, exit code 2."""

    exit_code = 2


class ScenarioError(GwsimError):
    """A scenario file (or an override of it) is not what the schema expects."""


class UsageError(GwsimError):
    """The command line asks for something that cannot be done."""


class Interrupted(GwsimError):
    """Ctrl-C, after what had finished was written; the message says what was kept."""

    exit_code = 130


class PartialResults(KeyboardInterrupt):
    """Ctrl-C in the middle of a batch of work, carrying what had finished.

    ``finished`` is the part that completed (its form is the raiser's: a list, a frame, a
    result object), ``total`` how many units were asked for.  It is a KeyboardInterrupt, so
    a caller that does not keep partial work sees the plain interrupt.
    """

    def __init__(self, finished: object, total: int) -> None:
        super().__init__()
        self.finished = finished
        self.total = total
