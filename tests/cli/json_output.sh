#!/usr/bin/env bash
# --json on every command that prints something: one JSON object on one line of stdout, with
# the fields docs/cli.md gives for that command, and nothing else on stdout.
source "$(dirname "$0")/lib.sh"

# keys CMD...: runs `ku CMD --json`-style commands (the caller puts --json), checks that stdout
# is one line of one JSON object and prints its sorted keys.
keys() {
    local rc=0
    "$KUGETSU" "$@" >"$T/out" 2>"$T/err" 3>&- 4>&- || rc=$?
    [ "$(wc -l <"$T/out")" -eq 1 ] || fail "$* printed $(wc -l <"$T/out") lines: $(cat "$T/out")"
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert isinstance(j, dict); print(" ".join(sorted(j)))' "$T/out" \
        || fail "$* printed no JSON object: $(cat "$T/out")"
    return "$rc"
}
expect_keys() {   # expect_keys "KEYS" CMD...
    local want=$1; shift
    local got
    got=$(keys "$@") || true
    [ "$got" = "$want" ] || fail "$* --json keys: '$got', expected '$want'"
}
task_keys="after argv attempts enqueued_at exit_code finished_at group id last_error max_attempts not_before pid priority retried retries role run runs started_at state"

expect_keys "$task_keys" enqueue --json --id j1 -- true
[ "$(python3 -c 'import json; print(json.load(open("'"$T/out"'"))["state"])')" = pending ] || fail "enqueue --json state"
expect_keys "$task_keys" start --json --id j2 -- sleep 30
expect_keys "adopted ended interrupted live pm_live recovered signalled" reap --json
expect_keys "cap groups kill_grace_ms max_attempts paused" config --json
expect_keys "cap group paused" config --json group gpu cap 2
expect_keys "groups paused" pause --json --group gpu
expect_keys "groups paused" resume --json --group gpu
expect_keys "$task_keys" cancel --json j2
expect_keys "$task_keys" cancel --json j1
expect_keys "tasks" restart --json j1
expect_keys "tasks" retry --json --failed
expect_keys "removed" remove --json j1
expect_keys "database events integrity invalid_rows ok quarantine quarantined sessions tasks" check --json
expect_keys "status tasks" wait --json j2
expect_keys "event_lines_pruned logs_deleted removed" clean --json
expect_keys "output runs" timeline --json -o "$T/t.svg"
expect_keys "cap counts groups kill_grace_ms live max_attempts paused pm_live quarantined sessions tasks" status --json
# events: one JSON object per line (its schema in docs/cli.md); logs: the agent's own bytes.
ku events >"$T/ev"
python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$T/ev" || fail "events is not JSON lines"
# An error with --json: nothing on stdout, the message on stderr, the same status.
expect_rc 0 ku enqueue --id j3 -- true
expect_rc 65 ku enqueue --json --id j3 -- true
[ ! -s "$T/out" ] && grep -q 'already exists' "$T/err" || fail "an error with --json: out '$(cat "$T/out")', err '$(cat "$T/err")'"
echo "json: ok"
