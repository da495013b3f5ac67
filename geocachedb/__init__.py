"""geocachedb: a strongly consistent, replicated key-value database on Twisted.

The package map is in docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
