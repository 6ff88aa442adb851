"""A one-off script using the module-level shortcut: registers a callback, emits, waits for
the callback, prints what it got and exits (the shared clients are closed at exit).

    python cl_shortcut.py SUBJECT MESSAGE
"""

import sys
import threading

import eventservice

got = threading.Event()
subject, message = sys.argv[1], sys.argv[2]

eventservice.register(subject, lambda event: (print(f"GOT {event.subject} {event.msg}", flush=True), got.set()))
eventservice.emit(subject, message)

sys.exit(0 if got.wait(10) else 1)
