"""The two kinds of expected failure, which every tool reports in one line (minigpt/entry.py).

Anything else that escapes a tool is a bug, and keeps its traceback: a plain ValueError or RuntimeError
is not caught as one of these. This module imports nothing, so any layer may raise them.
"""


class UserError(ValueError):
    """Bad input the user can fix: a flag, a config, a corpus, a checkpoint or a file they named. The
    message is one line that names the problem and the fix; tools exit 2. A ValueError, so code that
    checks arguments as the standard library does still catches it."""


class Fault(RuntimeError):
    """A run that the machine or its surroundings stopped (a folder deleted mid-run, ...), not its input.
    The message names the fix; tools exit 1, as they do for an OSError."""
