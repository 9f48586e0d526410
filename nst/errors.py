"""Every error type of the project and the exit code each one means.

An NSTError's message is one line naming the file or option and what is wrong; the command line
prints it as `error: <message>` and exits with the error's exit_code, never with a traceback.
"""

import os
import signal

EXIT_FAILURE = 1       # a failure at run time
EXIT_USAGE = 2         # bad options or input
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143   # SIGTERM (128 + 15), as a shell reports a process it ended


class NSTError(Exception):
    """A problem the user can fix; the message is one line naming the file or option."""
    exit_code = EXIT_USAGE


class UsageError(NSTError):
    """Bad options or input."""


class WeightsError(NSTError):
    """The weights file is missing, damaged or not the MatConvNet VGG-19 file."""


class ImageError(NSTError):
    """An image cannot be read."""


class WriteError(NSTError):
    """A result cannot be written (disk full, permissions): a failure at run time."""
    exit_code = EXIT_FAILURE


class DownloadError(NSTError):
    """The weights could not be downloaded or did not verify: a failure at run time.

    offline: no connection to the server could be made at all (no network, DNS, refused).
    """
    exit_code = EXIT_FAILURE

    def __init__(self, message, offline=False):
        super().__init__(message)
        self.offline = offline


class CheckpointError(NSTError):
    """A checkpoint to resume from is missing, damaged or does not match the run (exit 2)."""


class MatFormatError(ValueError):
    """A MAT-file this reader cannot read: not v5, truncated, damaged or unsupported (one line)."""


class MatNotCellError(MatFormatError):
    """The variable read_mat_cells was asked for is not a cell array."""


INTERRUPTED_AT_ONCE = 'Interrupted; nothing more was saved'
TERMINATED_AT_ONCE = 'Terminated (SIGTERM); nothing more was saved'


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python would raise KeyboardInterrupt for a Ctrl-C (raise_terminated),
    so that what a Ctrl-C cleans up (a temporary file half written) SIGTERM cleans up too."""


def raise_terminated(signum, frame):
    """A SIGTERM handler: raise Terminated."""
    raise Terminated


def exit_quietly_on_ctrl_c():
    """Until quiet_start_ended: a Ctrl-C (or SIGTERM) says so in one line and exits 130 (143)
    at once.

    For the start of `python art_generation.py`, while its modules load (about 0.3 s), where
    Python would print a KeyboardInterrupt traceback; nothing has been written yet.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _exit_at_once)


def quiet_start_ended():
    """Python's own Ctrl-C (KeyboardInterrupt) again, if exit_quietly_on_ctrl_c set ours, and
    Terminated for SIGTERM."""
    if signal.getsignal(signal.SIGINT) is _exit_at_once:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, raise_terminated)


def _exit_at_once(signum, frame):
    terminated = signum == signal.SIGTERM
    os.write(2, ((TERMINATED_AT_ONCE if terminated else INTERRUPTED_AT_ONCE) + '\n').encode())
    os._exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def one_line(error):
    """An exception's message on one line (or its type's name when it has none)."""
    return ' '.join(str(error).split()) or type(error).__name__
