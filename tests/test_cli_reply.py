"""``es reply`` answers requests from the shell (a message, a command's output, or an echo);
``es request`` sends them (--count, --raw, --json); and shell completion for bash and zsh,
generated from the parser. Real ``es`` processes throughout."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from cli_kit import ES, listen, ok, one_line_error, run_all, subscribers
from conftest import wait_for


def test_reply_with_a_message_and_request_count_raw_and_json(es, cluster):
    replier = listen(cluster, es, "greet", "n={count} you said {request}", "--count", "4", command="reply")
    counted, raw, as_json = run_all(cluster, [["request", "greet", "hi {count}", "--count", "2"],
                                              ["request", "greet", "--raw"],
                                              ["request", "greet", "--json", '{"a": 1}']])
    answers = ok(counted).stdout.splitlines()
    assert [re.sub(r"^\[#(\d)\] [\d.]+ ms ", r"\1 ", line) for line in answers] in (
        [f"1 n={a} you said hi 1", f"2 n={b} you said hi 2"] for a, b in ((1, 2), (2, 3), (3, 4), (1, 3), (1, 4),
                                                                           (2, 4))), answers
    assert re.fullmatch(r"n=\d you said \n", ok(raw).stdout), raw.stdout
    assert re.fullmatch(r'"n=\d you said \{\\"a\\": 1\}"\n', ok(as_json).stdout), as_json.stdout
    assert replier.wait_exit(20) == 0, replier.output()
    assert len(replier.stdout) == 4 and all(line.startswith("greet ") for line in replier.stdout)
    wait_for(lambda: subscribers(es.uri) == 0, 10, "es reply to unsubscribe")


def test_reply_with_a_command_and_by_echo(es, cluster):
    listen(cluster, es, "upper", "--command", "tr a-z A-Z; printf ' on %s' \"$ES_SUBJECT\"", "--quiet",
           command="reply")
    listen(cluster, es, "echo", "--json", command="reply")
    upper, echoed = run_all(cluster, [["request", "upper", "shout", "--raw"],
                                      ["request", "echo", "--json", '{"x": [1, 2]}']])
    assert ok(upper).stdout == "SHOUT on upper\n"
    assert json.loads(ok(echoed).stdout) == {"x": [1, 2]}


def test_a_request_nobody_answers_is_a_one_line_error_with_a_hint(es, cluster):
    line = one_line_error(cluster.cli("request", "-t", "0.5", "nobody.here"))
    assert "nobody.here" in line and "es reply" in line, line


def test_a_failing_reply_command_tells_the_requester_and_says_why(es, cluster):
    replier = listen(cluster, es, "broken", "--command", "echo oops >&2; exit 3", command="reply")
    line = one_line_error(cluster.cli("request", "-t", "1", "broken"))
    assert "RuntimeError" in line and "exit 3" in line and "oops" in line, line
    replier.wait_line(r"--command failed \(exit 3\).*oops", stream="stderr")


# -- completion --------------------------------------------------------------------------------

def complete(words: str) -> list:
    """What the bash completion of es offers for the command line ``words`` (cursor at the end)."""
    script = subprocess.run([*ES, "completion", "bash"], capture_output=True, text=True, timeout=30, check=True).stdout
    line = words.split(" ")
    probe = (f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in line)}); COMP_CWORD={len(line) - 1}; _es; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_offers_commands_aliases_options_and_choices():
    assert complete("es p") == ["publish", "pub", "ping"]
    assert complete("es s") == ["serve", "sub", "stats", "subjects"]
    assert "--presence" in complete("es listen --p") and "--group" in complete("es sub --g")
    assert complete("es serve --overflow ") == ["block", "drop"]
    assert complete("es --overf") == ["--overflow"]  # es alone is es serve
    assert complete("es completion ") == ["bash", "zsh"]
    assert "--watch" in complete("es stats --")


def test_zsh_completion_names_every_command_and_option():
    script = subprocess.run([*ES, "completion", "zsh"], capture_output=True, text=True, timeout=30,
                            check=True).stdout
    assert script.startswith("#compdef es\n") and "compdef _es es" in script
    for word in ("'publish:publish events'", "'pub:publish events'", "'--presence[", "'--overflow[",
                 ":(block drop)", "'--file[", ":_files", ":word:(bash zsh)"):
        assert word in script, word
    if shutil.which("zsh") is None:
        pytest.skip("no zsh here to load the script")
    loaded = subprocess.run(["zsh", "-c", f"autoload -U compinit && compinit -u && {script}\n"
                                          "print -r -- ${_comps[es]}"], capture_output=True, text=True, timeout=30)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "_es", loaded.stderr
