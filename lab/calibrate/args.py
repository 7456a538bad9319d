"""Checks that ``calibrate fit`` and ``validate`` make before they start: a bad flag found after
minutes of simulation would throw that work away.

* :func:`check_profile` reads ``--calibration FILE`` once, up front. :func:`sim.calibration.load_profile`
  turns a missing file or bad YAML into a :class:`ConfigError`, but a folder or a binary file
  reached the user as a traceback (from a worker process, in ``validate --silicon``).
* :func:`check_writable` makes sure ``--output`` / ``--json`` can be written before the run,
  not after it.
"""

from __future__ import annotations

import os
from pathlib import Path

from sim.errors import ConfigError


def check_profile(path: str | None) -> None:
    """``--calibration FILE`` loads, or a ConfigError that names the flag and the file."""
    if path is None:
        return
    from sim.calibration import load_profile

    if Path(path).is_dir():
        raise ConfigError(f"--calibration {path}: is a folder; expected a calibration profile (YAML), "
                          f"such as the one `servelab calibrate fit -o FILE` writes")
    try:
        load_profile(path)
    except UnicodeDecodeError:
        raise ConfigError(f"--calibration {path}: not a text file; expected a calibration profile (YAML), "
                          f"such as the one `servelab calibrate fit -o FILE` writes") from None
    except OSError as exc:
        raise ConfigError(f"--calibration {path}: cannot read it ({exc.strerror})") from None


def check_writable(flag: str, path: str) -> None:
    """``path`` can be created or replaced: its folder exists (or can be made) and takes files."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create its folder ({exc.strerror}); "
                          f"choose a path you can write") from None
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(f"{flag} {path}: not writable; choose a path you can write")
