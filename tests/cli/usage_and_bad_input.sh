#!/usr/bin/env bash
# Bad input gets a clear error that names what was wrong, the documented exit status, and
# loses nothing: 64 usage, 65 bad data, 74 I/O error.
source "$(dirname "$0")/lib.sh"

names() { grep -q -- "$1" "$T/err" || fail "the error does not name '$1': $(cat "$T/err")"; }

expect_rc 0 ku --help
grep -q enqueue "$T/out" || fail "--help lists no commands"
for c in enqueue start daemon status wait cancel logs events reap config check; do expect_rc 0 ku "$c" --help; done
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
[ ! -e "$KUGETSU_HOME/state.db" ] || [ "$(json_get "len(j['tasks'])")" -eq 0 ] || fail "a refused id left a task"
[ ! -e "$T/escape.json" ] && [ ! -e "$T/escape.log" ] || fail "an id escaped the state directory"

expect_rc 0 ku enqueue --id twice -- true
expect_rc 65 ku enqueue --id twice -- false; names 'already exists'
expect_rc 65 ku start --id twice -- false
[ "$(json_get "next(t['argv'] for t in j['tasks'] if t['id']=='twice')")" = "['true']" ] || fail "the duplicate replaced the task"
expect_rc 65 ku cancel nosuch; names nosuch
expect_rc 65 ku logs nosuch
expect_rc 65 ku wait nosuch

# Limits: HOME keeps its own; an environment that disagrees is refused (64) naming both
# values, and `config` changes them for every process. Nonsense values are usage errors.
expect_rc 64 env MAX_CONCURRENT_AGENTS=2 "$KUGETSU" start --id tooloose -- true
names MAX_CONCURRENT_AGENTS=2; names "cap is 3"
expect_rc 64 env KUGETSU_MAX_ATTEMPTS=5 "$KUGETSU" enqueue --id tooloose -- true; names KUGETSU_MAX_ATTEMPTS=5
expect_rc 64 env KUGETSU_KILL_GRACE=1.5 "$KUGETSU" status; names KUGETSU_KILL_GRACE=1.5
[ "$(json_get "sum(t['id']=='tooloose' for t in j['tasks'])")" -eq 0 ] || fail "a refused process wrote a task"
expect_rc 0 env MAX_CONCURRENT_AGENTS=3 "$KUGETSU" status
for bad in "cap 0" "cap abc" "cap -1" "cap 5000" "max-attempts 0" "kill-grace -1" "kill-grace x" "frob 1" "cap"; do
    # shellcheck disable=SC2086
    expect_rc 64 ku config $bad
done
expect_rc 0 ku config cap 5
expect_rc 0 env MAX_CONCURRENT_AGENTS=5 "$KUGETSU" status
grep -q '^cap 5 ' "$T/out" || fail "status does not show HOME's cap: $(cat "$T/out")"
expect_rc 0 ku config cap 3

# Corrupt rows: each is named, moved to the quarantine table with its bytes (never deleted),
# and every other task keeps working. (The rows are damaged through Python's sqlite3.)
expect_rc 0 ku enqueue --id good -- true
expect_rc 0 ku enqueue --id other -- true
expect_rc 0 ku enqueue --id empty -- true
body='{"version": 1, "kind": "queue_item", "id": "good", "argv": 5}'
python3 - "$KUGETSU_HOME/state.db" "$body" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE tasks SET record = ? WHERE id = 'good'", (sys.argv[2],))
db.execute("UPDATE tasks SET record = '' WHERE id = 'empty'")
db.execute("INSERT INTO sessions(id, task_id, record) VALUES('stray', 'stray', '{\"version\": 1')")
db.commit()
PY
expect_rc 65 ku check   # reads and moves nothing: names each bad row
grep -q 'tasks "good"' "$T/out" && grep -q 'sessions "stray"' "$T/out" || fail "check did not name the bad rows: $(cat "$T/out")"
expect_rc 0 ku status; names 'tasks "good"'; names 'tasks "empty"'; names 'sessions "stray"'; names quarantine
python3 - "$KUGETSU_HOME/state.db" "$body" <<'PY' || fail "the quarantine table does not keep the rows as they were"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = {r[0]: r[1] for r in db.execute("SELECT source, raw FROM quarantine")}
good = [v for k, v in rows.items() if k.endswith('tasks "good"')]
assert good and bytes(good[0]).decode() == sys.argv[2], rows
assert any(k.endswith('sessions "stray"') for k in rows), rows
assert db.execute("SELECT count(*) FROM tasks WHERE id IN ('good', 'empty')").fetchone()[0] == 0
PY
[ "$(events_of task_error good)" -eq 1 ] || fail "no task_error event for the quarantined task"
expect_rc 0 ku check; grep -q '^quarantined .*tasks "good"' "$T/out" || fail "check does not list the quarantine: $(cat "$T/out")"
expect_rc 0 ku daemon --once
expect_rc 0 ku wait other
expect_rc 65 ku wait good; names good; names quarantine
expect_rc 0 ku status
[ ! -s "$T/err" ] || fail "a second status reported the quarantine again: $(cat "$T/err")"

# An events file that cannot be written (a planted link: ELOOP; a directory: EISDIR) is
# reported on stderr and loses nothing: the events stay in the store, and the next command
# that can write the file appends them, in order, without a gap.
mv "$KUGETSU_HOME/events.jsonl" "$T/events.saved"
ln -s "$T/victim" "$KUGETSU_HOME/events.jsonl"
expect_rc 0 ku enqueue --id unheard -- true
names events.jsonl; names "kept in the database"
[ ! -e "$T/victim" ] || fail "an event was written through a planted link"
ku events | grep -q '"task_id":"unheard"' || fail "the event is not in the store"
rm "$KUGETSU_HOME/events.jsonl"
mkdir "$KUGETSU_HOME/events.jsonl"
expect_rc 0 ku enqueue --id unheard2 -- true; names events.jsonl
rmdir "$KUGETSU_HOME/events.jsonl"
mv "$T/events.saved" "$KUGETSU_HOME/events.jsonl"
expect_rc 0 ku enqueue --id heard -- true
[ ! -s "$T/err" ] || fail "a working events file was reported: $(cat "$T/err")"
[ "$(events_of task_queued unheard)" -eq 1 ] && [ "$(events_of task_queued unheard2)" -eq 1 ] ||
    fail "the events kept in the store were not appended once each"

# A database that is not one, or damaged: a clear error naming the file; nothing is lost.
cp "$KUGETSU_HOME/state.db" "$T/state.db.saved"
printf 'this is not a database, but it is precious' >"$T/notdb"
cp "$T/notdb" "$T/other-home-db"
mkdir -m 0700 "$T/other"; cp "$T/notdb" "$T/other/state.db"; chmod 0600 "$T/other/state.db"
expect_rc 65 ku --home "$T/other" status; names "$T/other/state.db"
cmp -s "$T/notdb" "$T/other/state.db" || fail "kugetsu changed a file that is not its database"

# A home that others may write, or a lock file another user could hold: 77, naming it.
expect_rc 0 ku status
chmod 0777 "$KUGETSU_HOME"
expect_rc 77 ku status; names "$KUGETSU_HOME"
chmod 0700 "$KUGETSU_HOME"
chmod 0666 "$KUGETSU_HOME/lock"
expect_rc 77 ku status
chmod 0600 "$KUGETSU_HOME/lock"
chmod 0644 "$KUGETSU_HOME/state.db"
expect_rc 0 ku status   # readable by others is private enough (only writable is refused)
chmod 0666 "$KUGETSU_HOME/state.db"
expect_rc 77 ku status; names state.db
chmod 0600 "$KUGETSU_HOME/state.db"
expect_rc 0 ku status
# A log or run directory that others may write is refused up front (77, naming it and the test
# it failed), before the task is recorded: no task, no attempt.
tasks_in_db() { sqlite3 "$KUGETSU_HOME/state.db" "select count(*) from tasks"; }
n=$(tasks_in_db)
for d in logs run; do
    chmod 0770 "$KUGETSU_HOME/$d"
    expect_rc 77 ku enqueue --id unsafe-$d -- true
    grep -q "$KUGETSU_HOME/$d: mode 0770: writable by its group" "$T/err" || fail "unsafe $d said: $(cat "$T/err")"
    [ "$(grep -c . "$T/err")" -eq 1 ] || fail "unsafe $d: more than one line: $(cat "$T/err")"
    expect_rc 77 ku start --id unsafe-$d -- true
    chmod 0702 "$KUGETSU_HOME/$d"
    expect_rc 77 ku daemon --once
    grep -q "mode 0702: writable by others" "$T/err" || fail "unsafe $d (others) said: $(cat "$T/err")"
    chmod 0700 "$KUGETSU_HOME/$d"
    if [ "$(id -u)" = 0 ]; then   # root can give it away: another user's directory
        chown 65534 "$KUGETSU_HOME/$d"
        expect_rc 77 ku enqueue --id unsafe-$d -- true
        grep -q "$KUGETSU_HOME/$d: owned by uid 65534, not by this user (uid 0)" "$T/err" || fail "foreign $d said: $(cat "$T/err")"
        chown 0 "$KUGETSU_HOME/$d"
    fi
    [ "$(tasks_in_db)" = "$n" ] || fail "a task was recorded with an unsafe $d"
done
# A HOME that is a symbolic link: refused, naming the link.
ln -s "$KUGETSU_HOME" "$T/link"
expect_rc 77 ku --home "$T/link" status; names "$T/link"

# An unusable home is an I/O error naming the path (for status, which never creates one, it
# does not exist: 66).
expect_rc 74 ku --home /proc/kugetsu-cannot-be-here enqueue -- true; names /proc/kugetsu-cannot-be-here
expect_rc 66 ku --home /proc/kugetsu-cannot-be-here status; names /proc/kugetsu-cannot-be-here
touch "$T/file"
expect_rc 74 ku --home "$T/file/home" enqueue -- true

# Values with a newline stay on one line of the message; a lock path taken by a directory is
# refused naming it and what it is.
expect_rc 65 ku enqueue --after "$(printf 'x\ny')" -- true
[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q -- '--after "x\\x0ay"' "$T/err" || fail "--after with a newline said: $(cat "$T/err")"
expect_rc 65 ku enqueue --group "$(printf 'g\nh')" -- true
[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q -- '--group "g\\x0ah"' "$T/err" || fail "--group with a newline said: $(cat "$T/err")"
expect_rc 64 ku enqueue --priority "$(printf '1\n2')" -- true
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "--priority with a newline said: $(cat "$T/err")"
lockhome="$T/lockhome"
expect_rc 0 ku --home "$lockhome" enqueue --id a -- true
rm -f "$lockhome/lock" && mkdir "$lockhome/lock"
expect_rc 77 ku --home "$lockhome" start --id b -- true
grep -q "$lockhome/lock: a directory, not a regular file: refused" "$T/err" || fail "a directory at the lock said: $(cat "$T/err")"
[ "$(sqlite3 "$lockhome/state.db" "select count(*) from tasks where id = 'b'")" = 0 ] || fail "b was recorded without the lock"
echo ok
