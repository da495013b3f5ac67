"""The errors the B+Tree backend raises for files it cannot trust or use.

Every message starts with the file's path, so an operator reading a log line
knows which node's data is at fault.  None of these is ever swallowed: a
damaged page gives an error, never a silently wrong answer.
"""


class BTreeFileError(Exception):
    """Base class: something is wrong with the B+Tree file ``path``."""

    def __init__(self, path, message):
        super().__init__("%s: %s" % (path, message))
        self.path = path
        self.reason = message


class NotABTreeFileError(BTreeFileError):
    """The file is not a geocachedb B+Tree file (wrong magic, empty, or
    too short to hold the two meta pages)."""


class CorruptFileError(BTreeFileError):
    """The file is ours but damaged: both meta pages bad, truncated below
    what the meta page describes, or a page failing its checksum."""


class FileLockedError(BTreeFileError):
    """Another process (or another open in this one) holds the file."""


class StorageFailedError(BTreeFileError):
    """An I/O error interrupted a commit; the store refuses further work
    until it is reopened (the file itself still holds the last commit)."""
