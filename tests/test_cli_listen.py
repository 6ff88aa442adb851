"""``es listen`` and ``es tap``: one line per event (time and running number on a terminal
or with --timestamps), escaped, colour only on a terminal without NO_COLOR, --raw, valid
JSON Lines, work-queue groups, filters, presence, and the warning for NATS-style subjects."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest

from cli_kit import Terminal, listen, ok, run_all, subscribers
from conftest import wait_for
from eventservice import Publisher

STAMP = r"\d\d:\d\d:\d\d\.\d{3} \[#(\d+)\] "


def publish(*events):
    with Publisher() as publisher:
        for subject, message in events:
            publisher.publish(subject, message)


def test_listen_lines_escape_newlines_and_control_characters_and_show_values_as_json(es, cluster):
    plain = listen(cluster, es, "shown", "--count", "4")
    stamped = listen(cluster, es, "shown", "--count", "4", "--timestamps")
    raw = listen(cluster, es, "shown", "--count", "4", "--raw")
    publish(("shown", "two\nlines"), ("shown", "bell\x07 and \x1b[31mred\x1b[0m \x9b"), ("shown", {"price": 22.44}),
            ("shown", [1, None, True]))
    for proc in (plain, stamped, raw):
        assert proc.wait_exit(20) == 0, proc.output()
    expected = ["two\\nlines", "bell\\x07 and \\x1b[31mred\\x1b[0m \\x9b", '{"price": 22.44}', "[1, null, true]"]
    assert plain.stdout == [f"shown {text}" for text in expected]
    assert raw.stdout == expected
    numbers = []
    for line, text in zip(stamped.stdout, expected):
        match = re.fullmatch(STAMP + "shown (.*)", line)
        assert match and match.group(2) == text, line
        numbers.append(int(match.group(1)))
    assert numbers == [1, 2, 3, 4]


def test_listen_json_is_valid_json_lines_with_iso_time_and_explicit_nan_and_bytes(es, cluster):
    proc = listen(cluster, es, "--json", "--count", "1", "odd")
    publish(("odd", {"nan": math.nan, "inf": -math.inf, "raw": b"\x00\xff", "n": 1.5}))
    assert proc.wait_exit(20) == 0, proc.output()
    [line] = proc.stdout
    assert "NaN" not in line and "Infinity" not in line
    record = json.loads(line, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    assert record["msg"] == {"nan": {"$float": "nan"}, "inf": {"$float": "-inf"},
                             "raw": {"$bytes": base64.b64encode(b"\x00\xff").decode()}, "n": 1.5}
    assert record["seq"] == 1 and record["subject"] == "odd"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", record["time"]), record


@pytest.mark.parametrize("no_color", [None, "1"])
def test_listen_on_a_terminal_stamps_lines_and_colours_them_unless_no_color(es, cluster, no_color):
    before = subscribers(es.uri)
    terminal = Terminal(cluster, ["listen", "coloured", "--count", "1"], streams=("stdout",),
                        env={"NO_COLOR": no_color})
    wait_for(lambda: subscribers(es.uri) > before, 30, "es listen to subscribe")
    publish(("coloured", "hello"))
    code, screen, _ = terminal.finish()
    assert code == 0, screen
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)
    assert re.fullmatch(STAMP + r"coloured hello\r\n", plain), repr(screen)
    assert ("\x1b[" in screen) == (no_color is None), repr(screen)


def test_listen_count_must_be_positive(cluster):
    for result in run_all(cluster, [["listen", "-c", "0", "x"], ["listen", "-c", "-1", "x"], ["listen"]]):
        assert result.returncode == 2 and "usage: es listen" in result.stderr, result.stderr


@pytest.mark.parametrize("subject,advice", [("stockquotes.*", r"--match 'stockquotes\\.[^.]+$'"),
                                            ("stockquotes.>", r"--match 'stockquotes\\..+$'"),
                                            (r"stock(quotes)?\.sun", "add --match")])
def test_listen_warns_when_a_subject_looks_like_a_pattern(es, cluster, subject, advice):
    proc = listen(cluster, es, subject)
    proc.wait_line("listening on", stream="stderr")
    [warning] = [line for line in proc.stderr if "warning" in line]
    assert "looks like" in warning and advice in warning, warning
    exact = listen(cluster, es, "stockquotes.sun")
    assert not any("warning" in line for line in exact.stderr)


def test_listen_group_shares_the_events_and_filter_passes_only_some(es, cluster):
    members = [listen(cluster, es, "jobs", "--group", "workers") for _ in range(2)]
    filtered = listen(cluster, es, "quotes", "--filter", '[">", "price", 20]')
    publish(*[("jobs", n) for n in range(10)], ("quotes", {"price": 10}), ("quotes", {"price": 30}))
    wait_for(lambda: sum(len(m.stdout) for m in members) == 10, 20, "the group to get the jobs")
    filtered.wait_line(r'^quotes \{"price": 30\}$')
    assert all(len(m.stdout) == 5 for m in members), [m.stdout for m in members]  # round robin
    assert filtered.stdout == ['quotes {"price": 30}']
    bad = ok(cluster.cli("stats", "--json"))
    assert json.loads(bad.stdout)["subscribers"] == 3
    wrong = cluster.cli("listen", "x", "--filter", "[not json")
    assert wrong.returncode == 2 and "--filter" in wrong.stderr


def test_listen_presence_shows_others_joining_and_leaving(es, cluster, make_subscriber):
    watcher = listen(cluster, es, "--presence")
    other = make_subscriber()
    other.subscribe("somewhere")
    watcher.wait_line(r"^es\.presence\.subscriber\.joined .*\"subjects\": \[\"somewhere\"\]")
    other.unsubscribe("somewhere")
    watcher.wait_line(r"^es\.presence\.subscriber\.left ")


def test_tap_shows_every_event_and_presence_and_leaves_when_done(es, cluster, make_subscriber):
    tap = listen(cluster, es, "--count", "3", command="tap")
    other = make_subscriber()
    other.subscribe("news")  # a presence event
    publish(("news", "one"), ("weather", "two"))
    assert tap.wait_exit(20) == 0, tap.output()
    assert [line.split()[0] for line in tap.stdout] == ["es.presence.subscriber.joined", "news", "weather"]
    wait_for(lambda: subscribers(es.uri) == 1, 10, "es tap to unsubscribe")
    narrow = listen(cluster, es, r"weather\.", "--count", "1", command="tap")
    publish(("news", "no"), ("weather.today", "yes"))
    assert narrow.wait_exit(20) == 0 and narrow.stdout == ["weather.today yes"], narrow.output()
