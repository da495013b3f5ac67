# The twistd plugin for geocachedb.  Deliberately nothing but a lazy
# ServiceMaker: importing it must be cheap and must not import the node, since
# twistd imports every plugin file just to list them.
from twisted.application.service import ServiceMaker

geocache = ServiceMaker(
    "geocachedb",
    "geocachedb.tap",
    "A replicated, strongly consistent key-value database node.",
    "geocache",
)
