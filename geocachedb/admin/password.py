"""The admin shell's password: read from a file, or generated on first start.

`load_or_create_password` runs once when the node service is built.  With
``--admin-password-file`` the operator owns the secret; without it the node
keeps one in ``<data>/admin.password``, created with mode 0600 so that only
the node's user (and root) can read it, and reused on every restart.  The
caller logs the returned *path*, never the password.
"""

import os
import secrets
import stat

from twisted.logger import Logger

log = Logger(namespace="geocachedb.admin")

PASSWORD_FILENAME = "admin.password"


class PasswordFileError(ValueError):
    """The password file is missing, empty or unreadable; the message says
    which file and what to do about it."""


def load_or_create_password(data_dir, password_file=None):
    """Return ``(password, path)``.

    With ``password_file``: its content without the trailing newline; a
    missing or empty file is a `PasswordFileError` (never a silent
    fallback: an operator who names a file expects that password).
    Otherwise ``<data_dir>/admin.password``, generated on first start.
    """
    if password_file:
        password = _read(password_file, generated=False)
        return password, password_file
    path = os.path.join(data_dir, PASSWORD_FILENAME)
    try:
        return _read(path, generated=True), path
    except FileNotFoundError:
        pass
    try:
        _create(path)
    except FileExistsError:
        # Another process created it between our read and our create; its
        # password is the one to use.
        pass
    return _read(path, generated=True), path


def _read(path, generated):
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        if generated:
            raise
        raise PasswordFileError(
            "admin password file %s does not exist: create it with the "
            "password on one line (chmod 600), or leave out "
            "--admin-password-file to have one generated in the data "
            "directory" % (path,)
        ) from None
    except OSError as e:
        raise PasswordFileError(
            "cannot read admin password file %s: %s" % (path, e.strerror)
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warn(
            "admin password file {path} is accessible by other users "
            "(mode {mode:04o}): chmod 600 it",
            path=path,
            mode=stat.S_IMODE(st.st_mode),
        )
    # Editors add a newline (or CRLF); the password never ends with one.
    text = raw.rstrip(b"\r\n")
    try:
        password = text.decode("utf-8")
    except UnicodeDecodeError:
        raise PasswordFileError(
            "admin password file %s is not UTF-8 text" % (path,)
        ) from None
    if not password:
        hint = (
            "delete it and restart to generate a new one"
            if generated
            else "write the password on its first line"
        )
        raise PasswordFileError("admin password file %s is empty: %s" % (path, hint))
    return password


def _create(path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    password = secrets.token_urlsafe(24)
    # O_EXCL: never truncate a file that appeared meanwhile; 0o600 from the
    # first byte on, so there is no moment where the secret is world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits; be exact
        os.write(fd, password.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
