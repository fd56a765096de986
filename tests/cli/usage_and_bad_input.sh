#!/usr/bin/env bash
# Bad input gets a clear error that names what was wrong, the documented exit status, and
# loses nothing: 64 usage, 65 bad data, 74 I/O error.
source "$(dirname "$0")/lib.sh"

names() { grep -q -- "$1" "$T/err" || fail "the error does not name '$1': $(cat "$T/err")"; }

expect_rc 0 ku --help
grep -q enqueue "$T/out" || fail "--help lists no commands"
for c in enqueue start daemon status wait cancel logs events reap; do expect_rc 0 ku "$c" --help; done
expect_rc 64 ku                                   # no command
expect_rc 64 ku frobnicate
expect_rc 64 ku start                             # no command to run
expect_rc 64 ku start --timeout abc -- true; names --timeout
expect_rc 64 ku start --timeout 0 -- true; names --timeout
expect_rc 64 ku start --timeout -1 -- true
expect_rc 64 ku start --role boss -- true; names --role
expect_rc 64 env MAX_CONCURRENT_AGENTS=0 "$KUGETSU" status; names MAX_CONCURRENT_AGENTS
expect_rc 64 env MAX_CONCURRENT_AGENTS=3x "$KUGETSU" status; names MAX_CONCURRENT_AGENTS
expect_rc 64 env KUGETSU_MAX_ATTEMPTS=1000 "$KUGETSU" status; names KUGETSU_MAX_ATTEMPTS
for v in 0 -1 abc 1e20 '' ' 3' 99999999999999999999 0x3; do
    [ -z "$v" ] && continue   # empty means unset: the default
    expect_rc 64 env MAX_CONCURRENT_AGENTS="$v" "$KUGETSU" status; names MAX_CONCURRENT_AGENTS
    expect_rc 64 env KUGETSU_MAX_ATTEMPTS="$v" "$KUGETSU" status; names KUGETSU_MAX_ATTEMPTS
done
for v in -1 abc 1e20 nan inf; do
    expect_rc 64 env KUGETSU_KILL_GRACE="$v" "$KUGETSU" status; names KUGETSU_KILL_GRACE
    expect_rc 64 ku enqueue --timeout "$v" -- true; names --timeout
done

# Hostile ids: refused before anything touches the disk.
# (A NUL cannot reach a program through argv; ids with one are refused by the library, see
# tests/unit. One argument is at most 128 KiB on Linux, so "megabytes long" is tested there too.)
for id in ../escape .. .hidden 'a/b' 'a b' '' "$(printf 'x%.0s' {1..200})" "$(head -c 100000 /dev/zero | tr '\0' x)" \
          $'a\tb' $'a\nb' $'a\x1bb' $'\xff\xfe' 'é' pm-agent; do
    expect_rc 65 ku enqueue --id "$id" -- true; names -- '--id'
done
[ -z "$(ls -A "$KUGETSU_HOME/queue" 2>/dev/null)" ] || fail "a refused id left a file"
[ ! -e "$T/escape.json" ] || fail "an id escaped the queue directory"

expect_rc 0 ku enqueue --id twice -- true
expect_rc 65 ku enqueue --id twice -- false; names 'already exists'
expect_rc 65 ku start --id twice -- false
[ "$(json_get "next(t['argv'] for t in j['tasks'] if t['id']=='twice')")" = "['true']" ] || fail "the duplicate replaced the task"
expect_rc 65 ku cancel nosuch; names nosuch
expect_rc 65 ku logs nosuch
expect_rc 65 ku wait nosuch

# Corrupt state files: each is named, moved to quarantine/ (never deleted), and every other
# task keeps working.
expect_rc 0 ku enqueue --id good -- true
expect_rc 0 ku enqueue --id other -- true
expect_rc 0 ku enqueue --id empty -- true
body='{"version": 1, "kind": "queue_item", "id": "good", "argv": 5}'
printf '%s' "$body" >"$KUGETSU_HOME/queue/good.json"
: >"$KUGETSU_HOME/queue/empty.json"
printf '{"version": 1' >"$KUGETSU_HOME/sessions/stray.json"
expect_rc 0 ku status; names queue/good.json; names quarantine/queue.good.json; names sessions/stray.json
names queue/empty.json
[ ! -e "$KUGETSU_HOME/queue/good.json" ] || fail "the corrupt record was left in queue/"
[ "$(cat "$KUGETSU_HOME"/quarantine/queue.good.json.*)" = "$body" ] || fail "the quarantined file lost its bytes"
ls "$KUGETSU_HOME"/quarantine/sessions.stray.json.* >/dev/null || fail "the corrupt session was not quarantined"
expect_rc 0 ku daemon --once
expect_rc 0 ku wait other
expect_rc 65 ku wait good; names good
expect_rc 0 ku status
[ ! -s "$T/err" ] || fail "a second status reported the quarantine again: $(cat "$T/err")"

# A home that others may write, or a lock file another user could hold: 77, naming it.
expect_rc 0 ku status
chmod 0777 "$KUGETSU_HOME"
expect_rc 77 ku status; names "$KUGETSU_HOME"
chmod 0700 "$KUGETSU_HOME"
chmod 0666 "$KUGETSU_HOME/lock"
expect_rc 77 ku status
chmod 0600 "$KUGETSU_HOME/lock"
expect_rc 0 ku status

# An unusable home is an I/O error naming the path.
expect_rc 74 ku --home /proc/kugetsu-cannot-be-here status; names /proc/kugetsu-cannot-be-here
touch "$T/file"
expect_rc 74 ku --home "$T/file/home" enqueue -- true
echo ok
