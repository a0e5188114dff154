#!/usr/bin/env python3
"""Fail on shell pipelines whose consumer may exit before its producer.

Under `set -o pipefail` a pipeline such as `producer | head -n1` fails at
random: the consumer exits after the first line it wants, the producer's
next write gets SIGPIPE (status 141), and the pipeline reports that. How
often depends on timing, so such a test passes on one machine and fails on
another. Consumers that stop early: `head`, `grep -q/-m/-l/-L`, `awk` with
`exit`, `sed` with `q`, `read`. Collect first and select afterwards, or use
a selection that reads all of its input (`sed -n 1p`, `grep -c ... >/dev/null`,
`awk 'NR == 1'`).

    scripts/lint-pipelines.py [FILE|DIR ...]   # default: .ci scripts tests bench
    scripts/lint-pipelines.py --self-test

A line may opt out with a trailing `# pipefail-ok: <why>` comment.

It also fails on `wait_until N cmd "$(...)"`: wait_until re-runs its
command, but the shell expands a command substitution in the arguments once,
before the first try, so the condition can never change. Put the condition
in a function.
"""

import os
import re
import sys

EARLY_EXIT_GREP = re.compile(
    r"^-[A-Za-z]*[qmlL]|^--(quiet|silent|max-count|files-with(out)?-match)"
)


def segments(line):
    """The commands of a (joined) line split at single `|` / `|&`, with
    quotes respected (a `$(...)` inside double quotes is code again). `||`
    is not a pipe."""
    out, cur, i = [], [], 0
    stack = []  # open contexts: "'", '"', or "$(" (code)
    while i < len(line):
        ch = line[i]
        top = stack[-1] if stack else None
        if top == "'":
            cur.append(ch)
            if ch == "'":
                stack.pop()
        elif top == '"':
            cur.append(ch)
            if ch == "\\" and i + 1 < len(line):
                cur.append(line[i + 1])
                i += 1
            elif ch == '"':
                stack.pop()
            elif line.startswith("$(", i):
                stack.append("$(")
                cur.append("(")
                i += 1
        else:
            if ch in "'\"":
                stack.append(ch)
                cur.append(ch)
            elif line.startswith("$(", i):
                stack.append("$(")
                cur.append("$(")
                i += 1
            elif ch == ")" and top == "$(":
                stack.pop()
                cur.append(ch)
            elif ch == "\\" and i + 1 < len(line):
                cur.append(line[i : i + 2])
                i += 1
            elif ch == "#" and (i == 0 or line[i - 1] in " \t;(|&"):
                break
            elif ch == "|":
                if i + 1 < len(line) and line[i + 1] == "|":
                    cur.append("||")
                    i += 1
                else:
                    out.append("".join(cur))
                    cur = []
                    if i + 1 < len(line) and line[i + 1] == "&":
                        i += 1
            else:
                cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def words(seg):
    # Good enough for command words and flags: split on blanks, drop the
    # grouping and substitution punctuation around them.
    return [w for w in re.split(r"[\s(){}]+", seg) if w and w not in ("!", "time", "command", "exec")]


def early_exit(seg):
    """Why this pipeline consumer can stop before reading all input, or None."""
    first = seg.split()
    if first and first[0].endswith(")") and "(" not in first[0]:
        return None  # a `case` pattern such as `a|b)`, not a command
    w = words(seg)
    if not w:
        return None
    cmd, args = os.path.basename(w[0]), w[1:]
    if cmd == "head":
        return "head stops reading after its lines"
    if cmd in ("grep", "egrep", "fgrep"):
        for a in args:
            if a == "--":
                break
            if EARLY_EXIT_GREP.search(a):
                return f"grep {a} stops at the first match"
    if cmd in ("awk", "gawk", "mawk") and re.search(r"\bexit\b", seg):
        return "awk exits early"
    if cmd == "sed" and re.search(r"(^|[;{}\s'])[qQ]([;}\s'0-9]|$)", " ".join(args)):
        return "sed quits early"
    if cmd == "read":
        return "read takes one line"
    return None


def logical_lines(text):
    """Physical lines joined where a command continues (`\\` or a trailing
    pipe), each with the number of its first line."""
    buf, start = "", None
    for n, raw in enumerate(text.splitlines(), 1):
        if start is None:
            start = n
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        stripped = re.sub(r"\s+#.*$", "", line) if "'" not in line and '"' not in line else line
        if stripped.rstrip().endswith("|") and not stripped.rstrip().endswith("||"):
            buf += line + " "
            continue
        yield start, buf + line
        buf, start = "", None
    if buf:
        yield start, buf


WAIT_UNTIL = re.compile(r"\bwait_until\s+([^|&;]*)")


def lint_text(text, name="<text>"):
    problems = []
    for n, line in logical_lines(text):
        if line.lstrip().startswith("#"):
            continue
        for m in WAIT_UNTIL.finditer(line):
            if "$(" in m.group(1) or "`" in m.group(1):
                problems.append(
                    f"{name}:{n}: wait_until's arguments are expanded once, a $(...) there "
                    f"is never re-run (use a function): `{line.strip()}`"
                )
        if "pipefail-ok" in line:
            continue
        segs = segments(line)
        for seg in segs[1:]:
            why = early_exit(seg)
            if why:
                problems.append(f"{name}:{n}: {why}: `{line.strip()}`")
    return problems


def is_shell(path):
    if path.endswith(".sh") or path.endswith("/.ci/run") or path == ".ci/run":
        return True
    try:
        with open(path, "rb") as f:
            head = f.readline()
    except OSError:
        return False
    return head.startswith(b"#!") and (b"bash" in head or b"/sh" in head)


def files(roots):
    for r in roots:
        if os.path.isfile(r):
            yield r
            continue
        for d, dirs, fs in os.walk(r):
            dirs[:] = [x for x in dirs if x not in ("target", ".git", "__pycache__")]
            for f in sorted(fs):
                p = os.path.join(d, f)
                if is_shell(p):
                    yield p


SELF_TEST_BAD = [
    "srp_disks | awk '$2 == v { print $1; exit }'",
    "x=$(readlink -f d | grep -o 'host[0-9]*' | head -n1)",
    "dmesg | grep -q 'ib_srp'",
    "strip log | grep -m1 pattern | cut -c1-20",
    "lsmod | grep -qw ib_srp && echo",
    "ls /sys/class/infiniband |\n    head -n 1",
    "cmd | sed -n '/x/{p;q}'",
    "cmd |& grep --quiet x",
    "producer | while read -r a; do :; done | read x",
    "cmd \\\n  | head -1",
    'vm_log "says: $("$bin" --version 2>&1 | head -n1)"',
    'wait_until 30 test -z "$(ls /sys/class/srp_remote_ports)" || vm_die x',
    'if ! wait_until 10 test "$(cat f)" -gt 0; then :; fi',
]
SELF_TEST_GOOD = [
    "dmesg | grep -c 'ib_srp' >/dev/null",
    "grep -q pattern file || true",
    "a || head -n1 file",
    "echo 'a|head' | wc -l",
    "cmd | sed -n 1p",
    "cmd | awk 'NR == 1'",
    "case $x in a|head) ;; esac",
    "cmd | grep -E 'x|y' | sort",
    "# comment | head",
    "cmd | head -n1  # pipefail-ok: cmd prints one line",
    "echo \"a | head\"",
    "echo \"$(a) | head\"",
    'wait_until 30 _no_srp_ports || { vm_die "left: $(srp_ports)"; return 1; }',
    'wait_until "$t" _srp_disk_with_vendor "$vendor"',
]


def self_test():
    failed = 0
    for t in SELF_TEST_BAD:
        if not lint_text(t):
            print(f"self-test: not flagged: {t!r}")
            failed += 1
    for t in SELF_TEST_GOOD:
        p = lint_text(t)
        if p:
            print(f"self-test: wrongly flagged: {p}")
            failed += 1
    print(f"lint-pipelines self-test: {len(SELF_TEST_BAD) + len(SELF_TEST_GOOD) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    roots = argv[1:] or [".ci", "scripts", "tests", "bench"]
    problems, n = [], 0
    for p in files(roots):
        n += 1
        with open(p, encoding="utf-8", errors="replace") as f:
            problems += lint_text(f.read(), p)
    for p in problems:
        print(p)
    if problems:
        print(
            f"lint-pipelines: {len(problems)} problem(s): pipelines whose consumer can exit early "
            "(SIGPIPE under pipefail) or wait_until conditions that cannot change (see this script's header)"
        )
        return 1
    print(f"lint-pipelines: {n} shell files, no early-exit pipeline consumers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
