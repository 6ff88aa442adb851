"""A rough cross-host measurement of the backbone (not a test): one batched Publisher on es A,
one Subscriber on es B, A and B joined by a NATS server started here; beside the same on a
single es. Prints events/s and latency (p50) per setup, and what a third es C without
subscribers received. Every process runs on this machine; loopback only.

    python tests/helpers/bb_measure.py [--events 50000] [--rate 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

SUBSCRIBER = r"""
import json, sys, time, threading
from eventservice import Subscriber
n, rate = int(sys.argv[2]), float(sys.argv[3])
class S(Subscriber):
    def __init__(self):
        super().__init__(esURI=sys.argv[1])
        self.got = 0; self.first = None; self.lat = []; self.done = threading.Event()
    def event(self, e):
        now = time.time()
        if e.msg.get("warmup"):
            print("WARM", flush=True); return
        if self.first is None: self.first = now
        self.got += 1; self.lat.append(now - e.msg["t"])
        if self.got >= n:
            self.last = now; self.done.set(); self.abort()
s = S(); s.subscribe(["bench"]); print("READY", flush=True)
s.listen()
lat = sorted(s.lat)
print(json.dumps({"events": s.got, "seconds": s.last - s.first, "p50": lat[len(lat) // 2]}), flush=True)
"""

PUBLISHER = r"""
import sys, time
from eventservice import Publisher
n, rate = int(sys.argv[2]), float(sys.argv[3])
with Publisher(esURI=sys.argv[1], batch=True) as p:
    for line in sys.stdin:
        if line.strip() == "warm":
            p.publish("bench", {"warmup": True}); p.flush()
        elif line.strip() == "go":
            break
    start = time.time()
    for i in range(n):
        if rate:
            delay = start + i / rate - time.time()
            if delay > 0: time.sleep(delay)
        p.publish("bench", {"seq": i, "t": time.time()})
    p.flush()
"""


def spawn(args: List[str], **kw: Any) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYRO_HOST=HOST, PYTHONUNBUFFERED="1")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kw)


def start_es(*more: str) -> Any:
    proc = spawn([sys.executable, "-m", "eventservice.cli", "-N", "-n", HOST, "-p", "0", "--heartbeat", "0", *more])
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("URI: "):
            return proc, line.split()[1]
    raise RuntimeError("es did not start")


def backbone(uri: str) -> Dict[str, Any]:
    import Pyro5.api
    with Pyro5.api.Proxy(uri) as proxy:
        return proxy.stats()["backbone"]


def once(pub_uri: str, sub_uri: str, events: int, rate: float) -> Dict[str, Any]:
    sub = spawn([sys.executable, "-c", SUBSCRIBER, sub_uri, str(events), str(rate)])
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "READY"
    pub = spawn([sys.executable, "-c", PUBLISHER, pub_uri, str(events), str(rate)], stdin=subprocess.PIPE)
    assert pub.stdin is not None
    while True:  # until the subscription is known on the publisher's side
        pub.stdin.write("warm\n")
        pub.stdin.flush()
        if sub.stdout.readline().strip() == "WARM":
            break
    pub.stdin.write("go\n")
    pub.stdin.close()
    line = sub.stdout.readline()
    pub.wait(60)
    sub.wait(60)
    result = json.loads(line)
    result["rate"] = result["events"] / result["seconds"] if result["seconds"] > 0 else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=1000, help="events/s of the latency runs")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    binary = Path(sys.executable).parent / "nats-server"
    port = 42000 + os.getpid() % 1000
    nats = spawn([str(binary), "-a", HOST, "-p", str(port)])
    time.sleep(0.5)
    procs = []
    try:
        single, single_uri = start_es()
        a, a_uri = start_es("--backbone", f"nats://{HOST}:{port}")
        b, b_uri = start_es("--backbone", f"nats://{HOST}:{port}")
        c, c_uri = start_es("--backbone", f"nats://{HOST}:{port}")
        procs = [single, a, b, c]
        rows: Dict[str, List[Dict[str, Any]]] = {"single": [], "cross": [], "single@rate": [], "cross@rate": []}
        for _ in range(args.repeat):
            rows["single"].append(once(single_uri, single_uri, args.events, 0))
            rows["cross"].append(once(a_uri, b_uri, args.events, 0))
            rows["single@rate"].append(once(single_uri, single_uri, min(args.events, 5000), args.rate))
            rows["cross@rate"].append(once(a_uri, b_uri, min(args.events, 5000), args.rate))
        for name, results in rows.items():
            rate = statistics.median(r["rate"] for r in results)
            p50 = statistics.median(r["p50"] for r in results) * 1e6
            print(f"{name:12} {rate:10,.0f} events/s   latency p50 {p50:9,.0f} us   (median of {len(results)})")
        quiet = backbone(c_uri)
        sent = backbone(a_uri)
        print(f"es A sent {sent['sent']} events in {sent['messages_sent']} engine messages; "
              f"es C (no subscribers) received {quiet['received']} events, {quiet['messages_received']} messages")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        nats.terminate()
        nats.wait(10)


if __name__ == "__main__":
    main()
