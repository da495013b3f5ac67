"""Size limits that the whole system agrees on.

Keys are limited to 511 bytes because that is LMDB's compiled-in maximum and
every backend must accept the same keys (a cluster may mix backends).
Values are limited to 1 MiB by default so that one request always fits a
frame together with its envelope; operators can lower it with --max-value.
"""

MAX_KEY_SIZE = 511
MAX_VALUE_SIZE = 1024 * 1024
MAX_FRAME_SIZE = 4 * 1024 * 1024
