"""Every example runs as examples/README.md says, against a real ``es``, and shows what it
should; the front-page README begins with the commands a newcomer needs."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from typing import Dict, List

from conftest import ROOT, wait_for

EXAMPLES = ROOT / "examples"
QUOTE_LINE = re.compile(r"^\d\d:\d\d:\d\d (stockquotes\.\w+)\s+\d+\.\d\d$")


def example(cluster, path: str, *args: str):
    """An example script as a process in the cluster's environment."""
    return cluster.spawn([sys.executable, str(EXAMPLES / path), *args], path)


class Interactive:
    """An example process driven through its stdin; output lines collected by a thread."""

    def __init__(self, args: List[str], env: Dict[str, str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: List[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def say(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_line(self, text: str, timeout: float = 20) -> None:
        def seen() -> bool:
            if text in self.stdout:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited before printing {text!r}:\n"
                                     + "\n".join(self.stdout + self.stderr))
            return False
        wait_for(seen, timeout, f"{self.name} to print {text!r}")

    def end_input(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for reader in self.readers:
            reader.join(2)


def quotes(proc) -> List[str]:
    """The subjects of the quote lines ``proc`` printed; fails on any other line after the first."""
    subjects = []
    for line in proc.stdout[1:]:
        match = QUOTE_LINE.match(line)
        assert match, f"{proc.name} printed an unexpected line: {line!r}"
        subjects.append(match.group(1))
    return subjects


def test_stockquotes_publisher_subscriber_and_matcher(es, cluster):
    subscriber = example(cluster, "stockquotes/subscriber.py", "--count", "4")  # SUN and IBM
    matcher = example(cluster, "stockquotes/matcher.py", "--count", "4", r"stockquotes\.S")
    subscriber.wait_line("^subscribed to stockquotes.SUN, stockquotes.IBM$")
    matcher.wait_line(r"^subscribed to the patterns")
    publisher = example(cluster, "stockquotes/publisher.py", "--count", "12", "--interval", "0",
                        "--symbols", "SUN", "IBM", "SAP", "HP")
    assert publisher.wait_exit(30) == 0, publisher.output()
    assert len([line for line in publisher.stdout if line.startswith("published stockquotes.")]) == 12
    for proc in (subscriber, matcher):
        assert proc.wait_exit(20) == 0, proc.output()
    assert quotes(subscriber) == ["stockquotes.SUN", "stockquotes.IBM"] * 2
    assert quotes(matcher) == ["stockquotes.SUN", "stockquotes.SAP"] * 2


def test_chat_two_people_talk_in_a_room(es, cluster):
    env = cluster.env
    alice, bob = (Interactive([sys.executable, str(EXAMPLES / "chat" / "chat.py"), nick, "lobby"], env, nick)
                  for nick in ("alice", "bob"))
    cluster.procs += [alice, bob]
    alice.wait_line("joined lobby as alice (Ctrl-D or /quit leaves)")
    bob.wait_line("joined lobby as bob (Ctrl-D or /quit leaves)")
    alice.say("hello bob")
    bob.wait_line("<alice> hello bob")
    bob.say("hi alice")
    alice.wait_line("<bob> hi alice")
    assert alice.end_input() == 0
    bob.wait_line("* alice left")
    bob.say("/quit")
    assert bob.proc.wait(20) == 0
    assert "<alice> hello bob" not in alice.stdout, "a chatter saw its own line echoed"
    assert "<bob> hi alice" not in bob.stdout


def test_allinone_shows_events_and_exits_0(cluster):
    proc = example(cluster, "allinone.py")
    assert proc.wait_exit(60) == 0, proc.output()
    received = [line for line in proc.stdout if line.startswith("received <Event weather.city")]
    assert len(received) == 5, proc.output()
    assert not any("news.sport" in line for line in proc.stdout)


def test_examples_readme_has_a_line_for_each_example():
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.py")
                     if p.name != "__init__.py")
    assert scripts
    for script in scripts:
        assert f"python {script}" in readme, f"examples/README.md does not say how to run {script}"


def test_front_page_readme_begins_with_the_install_and_test_commands():
    text = (ROOT / "README.md").read_text()
    beginning = text.split("\n## ", 1)[0]
    assert "python -m pip install -e . && es" in beginning
    assert 'python -m pip install -e ".[test]" && python -m pytest' in beginning
    assert "## Performance" in text
