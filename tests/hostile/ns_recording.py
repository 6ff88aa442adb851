"""A real Pyro5 name server (no broadcast) at HOST PORT that prints ``LOOKUP <name>`` for
every lookup it answers, so that a test can see when ``es``'s registration keeper has
looked at its name. Never imports eventservice."""

import sys

import Pyro5.nameserver
from Pyro5.server import expose

host, port = sys.argv[1], int(sys.argv[2])
assert "eventservice" not in sys.modules
_lookup = Pyro5.nameserver.NameServer.lookup


@expose
def lookup(self, name, return_metadata=False):
    found = _lookup(self, name, return_metadata)
    print(f"LOOKUP {name}", flush=True)
    return found


Pyro5.nameserver.NameServer.lookup = lookup
Pyro5.nameserver.start_ns_loop(host, port, enableBroadcast=False)
