"""A batching Publisher that never calls flush() or close(): publishes COUNT events
{"seq": i} on SUBJECT and returns from the script; interpreter exit must flush them."""

import argparse

from eventservice import Publisher

parser = argparse.ArgumentParser()
parser.add_argument("subject")
parser.add_argument("count", type=int)
args = parser.parse_args()

pub = Publisher(batch=True)
for i in range(args.count):
    pub.publish(args.subject, {"seq": i})
print("QUEUED", flush=True)
