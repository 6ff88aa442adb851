"""``es publish`` (and ``es request``'s message options): stdin, files, lines, counts and
placeholders, what it reached, progress on a terminal only. Real ``es`` processes, stdin fed."""

from __future__ import annotations

import datetime
import json
import re

from cli_kit import Terminal, feed, ok, run_all

BIG = "x" * (300 * 1024)  # over the 128 KiB a single argument may have on Linux


def test_publish_reads_stdin_whole_or_by_line_and_files(es, cluster, make_subscriber, tmp_path):
    sub = make_subscriber()
    sub.subscribe(["dash", "flag", "lines", "file", "binary", "big", "json.lines"])
    ok(feed(cluster, ["publish", "dash", "-"], b"hi\n"))  # echo hi | es publish dash -
    ok(feed(cluster, ["publish", "flag", "--stdin"], "multi\nline\n".encode()))
    ok(feed(cluster, ["publish", "lines", "--lines", "-q"], b"one\ntwo\r\n\nthree"))
    ok(feed(cluster, ["publish", "big", "-"], BIG.encode()))
    ok(feed(cluster, ["publish", "json.lines", "--lines", "--json", "-"], b'{"n": 1}\n[2]\n'))
    text = tmp_path / "message.txt"
    text.write_text("from a file\n")
    binary = tmp_path / "message.bin"
    binary.write_bytes(b"\xff\x00\xfe")
    for result in run_all(cluster, [["publish", "file", "--file", str(text)],
                                    ["publish", "binary", "--file", str(binary)]]):
        ok(result)
    events = sub.recorder.wait_count(10)
    got = {}
    for event in events:
        got.setdefault(event.subject, []).append(event.msg)
    assert got["dash"] == ["hi"] and got["flag"] == ["multi\nline"]
    assert got["lines"] == ["one", "two", "", "three"]
    assert got["big"] == [BIG]
    assert got["json.lines"] == [{"n": 1}, [2]]
    assert got["file"] == ["from a file"] and got["binary"] == [b"\xff\x00\xfe"]


def test_publish_count_sleep_and_placeholders_and_what_it_reached(es, cluster, make_subscriber):
    subs = [make_subscriber() for _ in range(2)]
    for sub in subs:
        sub.subscribe("counted")
    many, one, quiet, nobody = run_all(cluster, [
        ["publish", "counted", "--json", '{"n": {count}, "at": "{time}"}', "--count", "3", "--sleep", "0.01"],
        ["publish", "counted", "single"], ["publish", "counted", "-q", "hush"], ["publish", "nobody", "x"]])
    assert ok(many).stdout == "published 3 events; they reached 6 subscribers in all\n"
    assert ok(one).stdout == "reached 2 subscribers\n"
    assert ok(quiet).stdout == ""
    assert ok(nobody).stdout == "reached 0 subscribers\n"
    events = subs[0].recorder.wait_count(5)
    numbered = [e.msg for e in events if isinstance(e.msg, dict)]
    assert [m["n"] for m in numbered] == [1, 2, 3]
    for message in numbered:
        assert abs(datetime.datetime.fromisoformat(message["at"]).timestamp() - events[0].time) < 60


def test_publish_without_message_from_a_pipe_sends_none_and_says_how_to_send_stdin(es, cluster, make_subscriber):
    sub = make_subscriber()
    sub.subscribe("none")
    done = ok(feed(cluster, ["publish", "none"], b"hi\n"))  # echo hi | es publish none
    assert "give '-' or --stdin" in done.stderr
    [event] = sub.recorder.wait_count(1)
    assert event.msg is None


def test_publish_message_options_that_contradict_are_usage_errors(es, cluster):
    results = run_all(cluster, [["publish", "s", "text", "--stdin"], ["publish", "s", "text", "--lines"],
                                ["publish", "s", "-", "--lines", "--count", "2"], ["publish", "s", "--count", "0"],
                                ["publish", "s", "--sleep", "-1"], ["publish", "s", "--file", "/nonexistent"]])
    for result in results[:5]:
        assert result.returncode == 2 and result.stderr.startswith("usage: es publish"), result.stderr
    assert results[5].returncode == 1 and "/nonexistent" in results[5].stderr
    assert json.loads(ok(cluster.cli("stats", "--json")).stdout)["published"] == 0


def test_publish_shows_progress_on_a_terminal_only(es, cluster):
    args = ["publish", "slow", "tick {count}", "--count", "30", "--sleep", "0.05"]
    code, screen, piped = Terminal(cluster, args, streams=("stderr",)).finish()
    assert code == 0, screen
    assert re.search(r"\r\x1b\[Kpublished \d+/30 \(", screen), repr(screen)
    assert screen.endswith("\r\x1b[K"), repr(screen[-40:])  # cleared at the end
    assert piped == "published 30 events; they reached 0 subscribers in all\n"
    done = ok(cluster.cli(*args))
    assert done.stderr == "" and done.stdout == piped
