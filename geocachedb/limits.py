"""Limits on keys, values and frames that the whole system agrees on,
server and client.

Keys are limited to 511 bytes because that is LMDB's compiled-in maximum and
every backend must accept the same keys (a cluster may mix backends).
Values are limited to 1 MiB by default so that one request always fits a
frame together with its envelope; operators can lower it with --max-value.

Keys starting with `RESERVED_PREFIX` hold the cluster's own replicated state
(client sessions, the membership) in the same storage as user data: user
requests may not name them, scans hide them, and a backup's user key count
leaves them out.
"""

MAX_KEY_SIZE = 511
RESERVED_PREFIX = b"\x00\x00geocache/"
MAX_VALUE_SIZE = 1024 * 1024
MAX_FRAME_SIZE = 4 * 1024 * 1024
