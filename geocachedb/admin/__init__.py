"""The telnet admin shell: operate and inspect a node with telnet or nc.

The node service calls `load_or_create_password` once at startup and
listens on the ``--admin`` endpoint with the factory from
`make_admin_factory`.  Modules: `password` (the secret), `telnet` (bytes to
lines), `quoting` (arguments and printed bytes), `formatting` (tables and
units), `dispatch` (the command table and `execute`), `commands` (the
commands), `shell` (the session and factory).
See docs/ADMIN.md for the operator's view.
"""

from geocachedb.admin.password import PasswordFileError, load_or_create_password
from geocachedb.admin.shell import AdminShellFactory, make_admin_factory

__all__ = [
    "AdminShellFactory",
    "PasswordFileError",
    "load_or_create_password",
    "make_admin_factory",
]
