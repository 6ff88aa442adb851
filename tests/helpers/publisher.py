"""A publisher process for tests: publishes COUNT events {"seq": i, "src": NAME} on
SUBJECT, prints DONE <n> when all were accepted (flushed)."""

import argparse

from eventservice import Publisher

parser = argparse.ArgumentParser()
parser.add_argument("subject")
parser.add_argument("count", type=int)
parser.add_argument("--name", default="p")
parser.add_argument("--batch", action="store_true")
parser.add_argument("--ident")
args = parser.parse_args()

with Publisher(ident=args.ident, batch=args.batch) as pub:
    for i in range(args.count):
        pub.publish(args.subject, {"seq": i, "src": args.name})
    pub.flush()
print(f"DONE {args.count}", flush=True)
