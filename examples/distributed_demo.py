"""Write on one node, read on the others, with the Python client.

Start a cluster first (`make run` or examples/run-raft-cluster.sh), then:

    python examples/distributed_demo.py [127.0.0.1:50051 127.0.0.1:50052 127.0.0.1:50053]
"""

import sys
import time

from geocachedb.client import BlockingClient


def main(addresses):
    writer, *readers = addresses
    stamp = time.strftime("%H:%M:%S").encode()
    with BlockingClient([writer]) as c:
        for i in range(5):
            c.put(b"demo:%d" % i, b"written via %s at %s" % (writer.encode(), stamp))
        print("wrote demo:0..4 through %s" % writer)
    for address in readers:
        with BlockingClient([address]) as c:
            print("read on %s (linearizable):" % address)
            for i in range(5):
                print("  demo:%d = %s" % (i, c.get(b"demo:%d" % i).decode()))
            pairs, _ = c.range(prefix=b"demo:", serializable=True)
            print("  local (serializable) scan sees %d keys" % len(pairs))


if __name__ == "__main__":
    main(sys.argv[1:] or ["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"])
