"""Prints the stock quotes of some symbols: subscribes to the exact subjects stockquotes.<SYMBOL>.

    python subscriber.py                 # SUN and IBM, until Ctrl-C
    python subscriber.py --count 5 SUN
"""

import argparse
import time

from eventservice import Subscriber


class QuotePrinter(Subscriber):
    """Prints each quote; stops listening after ``count`` quotes (0: never)."""

    def __init__(self, count=0):
        super().__init__()
        self.setThreading(False)  # event() is called by one thread at a time
        self.remaining = count or None

    def event(self, event):
        if self.remaining == 0:
            return  # done: quotes still on their way are ignored
        when = time.strftime("%H:%M:%S", time.localtime(event.time))
        print(f"{when} {event.subject:20} {event.msg['price']:10.2f}", flush=True)
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining == 0:
                self.abort()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("symbols", nargs="*", default=["SUN", "IBM"], help="symbols (default SUN IBM)")
    parser.add_argument("-c", "--count", type=int, default=0, help="exit after this many quotes (default 0: never)")
    args = parser.parse_args()
    subjects = [f"stockquotes.{symbol}" for symbol in args.symbols]
    with QuotePrinter(args.count) as printer:
        printer.subscribe(subjects)
        print(f"subscribed to {', '.join(subjects)}", flush=True)
        try:
            printer.listen()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
