"""One contract for every tool: train, sample, prepare, params, bench and export each end their main() with
`return entry.run(body)`, so they share exit codes, one-line errors and the handling of a reader that left.

    exit  when
    0     done, including a reader that left early (`python sample.py | head -3`), and --help
    2     bad input: a UserError (a flag, a config, a corpus, a checkpoint), told in one line
    1     a runtime fault: an OSError or a Fault, told in one line that names the fix
    130   Ctrl-C

Any other exception is a bug and keeps its traceback: a plain ValueError is not taken for bad input
(minigpt/errors.py). Under torchrun only rank 0 prints, so one failure is told once.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

from minigpt.errors import Fault, UserError

DONE, FAULT, USAGE, INTERRUPTED = 0, 1, 2, 130

_OS_FIXES = {
    errno.ENOSPC: "free some space, then run it again",
    errno.EDQUOT: "free some space (the disk quota is used up), then run it again",
    errno.EACCES: "check its permissions, or choose a folder you can write to",
    errno.EPERM: "check its permissions, or choose a folder you can write to",
    errno.EROFS: "choose a folder on a writable disk",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path: a part of it is a file, not a folder",
    errno.EISDIR: "give a file, not a folder",
}
"""An OSError's errno -> what the user can do about it."""


def reader_left() -> int:
    """After a BrokenPipeError (`python train.py --help | head` stopped reading): send the rest of stdout to
    /dev/null, so that Python's flush at exit does not fail again, and succeed."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return DONE


def os_error_line(e: OSError) -> str:
    """An OSError in one line: the file, the system's reason, the fix ("No space left" is the full disk
    even where a library dropped the errno)."""
    code = errno.ENOSPC if "No space left" in str(e) else e.errno
    reason = e.strerror or str(e).splitlines()[0][:200] or type(e).__name__
    fix = _OS_FIXES.get(code, "check that file and its folder, then run it again")
    return f"{e.filename or 'a file'}: {reason}; {fix}"


def run(body: Callable[[], int | None], *, after_help: str = "",
        interrupted: str | Callable[[], str] = "interrupted") -> int:
    """Run a tool's body and return its exit code; body returns one itself (None is 0).

    after_help: printed after tyro's --help (a tool's flags that tyro does not know).
    interrupted: the line for Ctrl-C (what was kept, how to go on), or a function that writes what
    it must first and returns the line."""
    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun every rank fails alike

    def tell(line: str) -> None:
        if is_main:
            print(line, file=sys.stderr, flush=True)

    try:
        return body() or DONE
    except SystemExit as e:  # tyro exits 0 after --help
        if e.code in (0, None) and after_help:
            try:
                print(after_help, flush=True)
            except BrokenPipeError:
                return reader_left()
        return e.code if isinstance(e.code, int) else USAGE if e.code else DONE
    except BrokenPipeError:  # the reader left: what it wanted, it has
        return reader_left()
    except UserError as e:
        tell(f"error: {e}")
        return USAGE
    except Fault as e:
        tell(f"error: {e}")
        return FAULT
    except OSError as e:  # reads and writes that no message above covers
        tell(f"error: {os_error_line(e)}")
        return FAULT
    except KeyboardInterrupt:
        tell(interrupted if isinstance(interrupted, str) else interrupted())
        return INTERRUPTED
