"""Atomic file writing: a process killed at any moment leaves the old file or the new one."""

import os
import tempfile


def atomic_write(path, write):
    """Call write(temp_path), then rename the temp file to path.

    The temp file sits in the same folder (a rename is atomic only within one file system), so
    a process killed at any moment leaves either the old file or the new one, never half of one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]  # keeps the format recognisable to writers that need it
    fd, temp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix=suffix,
                                     dir=folder)
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
