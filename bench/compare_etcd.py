#!/usr/bin/env python
"""etcd 3.4 and geocachedb side by side: the same as
``geocache-bench compare-etcd`` (see geocachedb/bench/compare.py).

    python bench/compare_etcd.py [--duration 10] [--concurrency 1,16,64,256] [--single-node]
"""

import sys

from geocachedb.bench.compare import main

if __name__ == "__main__":
    sys.exit(main())
