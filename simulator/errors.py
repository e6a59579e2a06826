"""One exception hierarchy for everything gwsim reports to a user as bad input."""

from __future__ import annotations


class GwsimError(Exception):
    """Base of errors shown to the user as one line, exit code 2."""

    exit_code = 2


class ScenarioError(GwsimError):
    """A scenario file (or an override of it) is not what the schema expects."""


class UsageError(GwsimError):
    """The command line asks for something that cannot be done."""
