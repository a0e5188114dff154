#!/usr/bin/env bash
# Instructions per command of the command_path micro benchmarks, counted by
# callgrind: deterministic, so unlike the criterion timings they can be
# compared across commits on a busy machine (docs/performance.md).
#
#   bench/instructions.sh [case...]     (default: every command_path case)
#
# Needs valgrind (apt-get install valgrind). Prints "case instructions".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "bench/instructions.sh: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "bench/instructions.sh: python3 not found" >&2; exit 2; }

cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(read_4k_direct write_4k_direct read_4k_indirect8 inquiry test_unit_ready)

bin=$(cargo bench --bench command_path --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "command_path" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "bench/instructions.sh: could not build the command_path benchmark" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for c in "${cases[@]}"; do
    out=$tmp/$c.out
    # Count only inside criterion's iteration loop; one iteration = one
    # command = one call of Channel::handle_recv.
    valgrind --tool=callgrind --toggle-collect='*Bencher*iter*' --callgrind-out-file="$out" \
        "$bin" --bench --profile-time 2 "command_path/$c\$" >"$tmp/$c.log" 2>&1 ||
        { cat "$tmp/$c.log" >&2; echo "bench/instructions.sh: valgrind failed on $c" >&2; exit 1; }
    python3 - "$out" "$c" <<'PY'
import re, sys
path, case = sys.argv[1], sys.argv[2]
names, calls, total, cfn = {}, 0, None, None
for line in open(path):
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == "cfn":
            cfn = names.get(m.group(2), "")
        continue
    if line.startswith("calls=") and cfn and re.search(r"Channel::handle_recv$", cfn):
        calls += int(line.split("=")[1].split()[0])
    elif line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
if not calls or total is None:
    sys.exit(f"bench/instructions.sh: {case}: no iterations counted")
print(f"{case} {round(total / calls)}")
PY
done
