"""Run localstripe on 127.0.0.1:<port> only, keeping its store in memory (no shared /tmp pickle).

`python -P tests/support/localstripe_main.py PORT`: started once per test session by the `localstripe`
fixture (-P keeps this folder off sys.path).
"""

import sys

from aiohttp import web
from localstripe import resources, server

if __name__ == "__main__":
    # localstripe pickles its whole store to /tmp after every write: slow, and shared with any other
    # localstripe on this machine. Tests want a private, in-memory fake.
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
