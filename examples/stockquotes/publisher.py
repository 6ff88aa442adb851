"""Publishes stock quotes on the subjects stockquotes.<SYMBOL>, one symbol after the other.

    python publisher.py                      # forever, two quotes a second
    python publisher.py --count 20 --interval 0 --symbols SUN IBM
"""

import argparse
import random
import time

from eventservice import Publisher

SYMBOLS = ["SUN", "IBM", "MSFT", "SAP", "ORCL", "HP"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--count", type=int, default=0, help="quotes to publish (default 0: forever)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between quotes (default 0.5)")
    parser.add_argument("--symbols", nargs="+", default=SYMBOLS, help=f"symbols to quote (default {' '.join(SYMBOLS)})")
    return parser.parse_args()


def quotes(symbols, count):
    """(subject, quote) pairs, going round the symbols; endless when count is 0."""
    prices = {symbol: random.uniform(10, 200) for symbol in symbols}
    n = 0
    while not count or n < count:
        symbol = symbols[n % len(symbols)]
        prices[symbol] = max(0.01, prices[symbol] * random.uniform(0.97, 1.03))
        yield f"stockquotes.{symbol}", {"symbol": symbol, "price": round(prices[symbol], 2)}
        n += 1


def main():
    args = parse_args()
    with Publisher() as publisher:
        for subject, quote in quotes(args.symbols, args.count):
            publisher.publish(subject, quote)
            print(f"published {subject} {quote['price']:.2f}", flush=True)
            if args.interval:
                time.sleep(args.interval)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
