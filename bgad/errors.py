"""The base classes of errors that the same inputs always raise, and of those a user can fix.

The command line prints a ``UserError`` (a setting, a path, the data, a name, the cluster) as one line
with exit code 2. No executor retries a ``DeterministicError``: the same inputs fail the same way.
Both decide by class, so a new subclass is handled everywhere without being listed anywhere. Failures
cross process and cluster boundaries as traceback text, so the class leaves a note in the traceback
(``NOT_RETRIED``) that the executors read back.
"""

from __future__ import annotations

#: The note every deterministic error carries into its traceback text.
NOT_RETRIED = "(not retried: the same inputs fail the same way)"


class DeterministicError(Exception):
    """An error that a retry cannot cure (a diverged training, a bad setting, missing data …)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.add_note(NOT_RETRIED)


class UserError(DeterministicError):
    """An error whose message names the file or option at fault and says what to do."""
