"""A chat room over the Event Service: every room is the subject chat.<ROOM>.

    python chat.py NICK ROOM

Type lines to say them to the room; what the others say is printed as "<nick> text".
End with Ctrl-D (end of input) or /quit.
"""

import argparse
import sys

from eventservice import Publisher, Subscriber


class Room(Subscriber):
    """Prints what the others in the room say."""

    def __init__(self, nick):
        super().__init__()
        self.setThreading(False)
        self.nick = nick

    def event(self, event):
        said = event.msg
        if said["nick"] == self.nick:
            return  # our own line: already on our screen
        if said["text"] is None:
            print(f"* {said['nick']} {said['action']}", flush=True)
        else:
            print(f"<{said['nick']}> {said['text']}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nick")
    parser.add_argument("room")
    args = parser.parse_args()
    subject = f"chat.{args.room}"
    with Room(args.nick) as room, Publisher() as publisher:
        room.subscribe(subject)
        room.start()  # receive in a background thread; this one reads the keyboard
        publisher.publish(subject, {"nick": args.nick, "text": None, "action": "joined"})
        print(f"joined {args.room} as {args.nick} (Ctrl-D or /quit leaves)", flush=True)
        try:
            for line in sys.stdin:
                text = line.rstrip("\n")
                if text == "/quit":
                    break
                if text:
                    publisher.publish(subject, {"nick": args.nick, "text": text})
        except KeyboardInterrupt:
            pass
        publisher.publish(subject, {"nick": args.nick, "text": None, "action": "left"})


if __name__ == "__main__":
    main()
