"""Prints the stock quotes whose subject matches a pattern (a Python regex, case-insensitive,
matched at the start of the subject).

    python matcher.py                              # every quote: stockquotes\\..*
    python matcher.py --count 5 "stockquotes\\.S"   # SUN and SAP
"""

import argparse

from subscriber import QuotePrinter  # the same printing Subscriber, next to this file


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="*", default=[r"stockquotes\..*"],
                        help=r"regex patterns (default stockquotes\..*)")
    parser.add_argument("-c", "--count", type=int, default=0, help="exit after this many quotes (default 0: never)")
    args = parser.parse_args()
    with QuotePrinter(args.count) as matcher:
        matcher.subscribeMatch(args.patterns)
        print(f"subscribed to the patterns {', '.join(args.patterns)}", flush=True)
        try:
            matcher.listen()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
