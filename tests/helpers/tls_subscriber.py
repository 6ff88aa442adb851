"""A TLS subscriber process for tests/test_tls.py: an eventservice.Subscriber addressing
the service by URI, configured by the PYRO_SSL* environment variables of the test (its own
daemon serves TLS with PYRO_SSL_SERVERCERT/PYRO_SSL_SERVERKEY). Prints
"CALLBACK <uri of its callback object>", then READY once subscribed, then one JSON line
per event."""

import argparse
import json

import Pyro5

from eventservice import Subscriber

parser = argparse.ArgumentParser()
parser.add_argument("uri")
parser.add_argument("subjects", nargs="+")
parser.add_argument("--ident")
args = parser.parse_args()


class Recording(Subscriber):
    def event(self, event):
        print(json.dumps({"subject": event.subject, "msg": event.msg}), flush=True)


sub = Recording(ident=args.ident, esURI=args.uri)
print(f"SSL {bool(Pyro5.config.SSL)}", flush=True)
print(f"CALLBACK {sub.uri}", flush=True)
sub.subscribe(args.subjects)
print("READY", flush=True)
sub.listen()
