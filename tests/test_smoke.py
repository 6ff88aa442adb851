"""The shortest path a newcomer takes: es, a subscriber, a publisher."""

import json

from eventservice import Event, Publisher



def test_publish_reaches_project_subscriber(es, make_subscriber):
    sub = make_subscriber()
    sub.subscribe("stockquotes.sun")
    with Publisher() as pub:
        pub.publish("StockQuotes.SUN", {"price": 22.44})
    [event] = sub.recorder.wait_count(1)
    assert isinstance(event, Event)
    assert event.subject == "StockQuotes.SUN" and event.msg == {"price": 22.44}


def test_plain_subscriber_without_eventservice_gets_dicts(es, cluster):
    proc = cluster.python("subscriber.py", "--plain", "news")
    proc.wait_line("READY")
    with Publisher() as pub:
        pub.publish("news", "hello")
    line = proc.wait_line(r"^\{")
    got = json.loads(line.string)
    assert got["type"] == "dict" and got["subject"] == "news" and got["msg"] == "hello"


def test_plain_subscriber_that_imports_eventservice_gets_events(es, cluster):
    proc = cluster.python("subscriber.py", "--plain-import", "news")
    proc.wait_line("READY")
    with Publisher() as pub:
        pub.publish("news", "hello")
    got = json.loads(proc.wait_line(r"^\{").string)
    assert got["type"] == "Event" and got["msg"] == "hello"
