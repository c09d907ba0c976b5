"""The one exception hierarchy of bpnet: what a step raises when the work cannot be done.

A ``BpnetError``'s message is what the user reads (the CLI logs it, a pipeline pod logs it), so it
names the file or value and says what to do; ``exit_code`` is what ``bpnet <sub_task>`` exits
with. Anything else escaping a step is a bug and gets a traceback. Library modules keep their
specific classes (``ConvertError``, ``ModelKeyError`` ...), re-parented here so callers can catch
one family; the ``ValueError``/``RuntimeError`` second bases stay where callers rely on them.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_BAD_SPEC = 2


class BpnetError(Exception):
    """A failure to tell the user plainly (no traceback); the message says what went wrong."""

    exit_code = EXIT_FAILED

    @property
    def lines(self) -> list[str]:
        """The message, one problem a line (as the CLI prints it)."""
        return str(self).splitlines() or [type(self).__name__]


class SpecError(BpnetError):
    """One or more problems with a spec file; ``lines`` holds one message per problem."""

    exit_code = EXIT_BAD_SPEC

    def __init__(self, lines: list[str]):
        self._lines = [" ".join(line.splitlines()) for line in lines]  # one problem, one line
        super().__init__("\n".join(self._lines))

    @property
    def lines(self) -> list[str]:
        return self._lines


class UsageError(BpnetError):
    """A bad command-line or settings value, found before any work starts. ``field`` names the
    setting or argument (the CLI shows its flag); the message reads ``field: detail``."""

    exit_code = EXIT_BAD_SPEC

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(f"{field}: {detail}" if field else detail)
        self.detail, self.field = detail, field


class DataError(BpnetError):
    """The input data (images, annotations, records) cannot be used as it is."""


class ModelError(BpnetError):
    """A model file that cannot be used: wrong key, wrong shape, diverged weights."""


class StepError(BpnetError):
    """A step could not complete for a reason outside the data and the model (storage, engine, ...)."""
