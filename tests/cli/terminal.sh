#!/usr/bin/env bash
# --version, an unknown command, read-only commands on a HOME that does not exist, the bash
# and zsh completions, and the man page. Needs COMPLETIONS (the directory of the completion
# scripts) and MANPAGE (the generated kugetsu.1) in the environment besides lib.sh's.
source "$(dirname "$0")/lib.sh"
: "${COMPLETIONS:?directory of kugetsu.bash and _kugetsu}" "${MANPAGE:?path of the generated kugetsu.1}"
src=$(cd "$(dirname "$0")/../.." && pwd)

# --version: the version of include/kugetsu/version.hpp.
want=$(sed -n 's/^#define KUGETSU_VERSION_STRING "\(.*\)"$/\1/p' "$src/include/kugetsu/version.hpp")
expect_rc 0 ku --version
[ "$(cat "$T/out")" = "kugetsu $want" ] || fail "--version printed '$(cat "$T/out")', expected 'kugetsu $want'"

# An unknown command is named as such, with the commands there are, wherever it comes.
for args in "foo" "--home $T/h foo" "--home=$T/h foo bar"; do
    # shellcheck disable=SC2086
    expect_rc 64 ku $args
    grep -q '^kugetsu: "foo" is not a command (commands: enqueue, start, ' "$T/err" || fail "kugetsu $args said: $(cat "$T/err")"
done
expect_rc 64 ku "$(printf 'a\nb')"
[ "$(grep -c . "$T/err")" -eq 2 ] || fail "an unknown command with a newline broke the message: $(cat "$T/err")"
expect_rc 64 ku
grep -q 'subcommand is required' "$T/err" || fail "no command said: $(cat "$T/err")"

# Read-only commands never create HOME: one that does not exist is exit 66, naming it.
missing="$T/never-made"
for cmd in status "wait" "logs x" events check config; do
    # shellcheck disable=SC2086
    expect_rc 66 ku --home "$missing" $cmd
    grep -q "$missing: no such state directory" "$T/err" || fail "$cmd said: $(cat "$T/err")"
    [ ! -e "$missing" ] || fail "$cmd created $missing"
done
# A HOME directory without its database: the same (66), and no database is made.
empty="$T/empty-home"
mkdir -m 700 "$empty"
for cmd in status "wait" "logs x" events check config; do
    # shellcheck disable=SC2086
    expect_rc 66 ku --home "$empty" $cmd
    grep -q "$empty: no state database (state.db) in this directory" "$T/err" || fail "$cmd said: $(cat "$T/err")"
    [ ! -e "$empty/state.db" ] || fail "$cmd created $empty/state.db"
done
# An unsafe or replaced database: 77, one line naming the file and the test it failed, once.
unsafe="$T/unsafe-home"
expect_rc 0 ku --home "$unsafe" enqueue --id u -- true
chmod 664 "$unsafe/state.db"
for cmd in events "events --follow" status; do
    # shellcheck disable=SC2086
    expect_rc 77 ku --home "$unsafe" $cmd
    [ "$(cat "$T/err")" = "kugetsu: $unsafe/state.db: mode 0664: writable by its group: refused" ] || fail "$cmd said: $(cat "$T/err")"
done
chmod 600 "$unsafe/state.db"
mv "$unsafe/state.db" "$unsafe/state.db.kept"
ln -s state.db.kept "$unsafe/state.db"
expect_rc 77 ku --home "$unsafe" events
[ "$(cat "$T/err")" = "kugetsu: $unsafe/state.db: a symbolic link, not followed: refused" ] || fail "a linked database said: $(cat "$T/err")"
rm "$unsafe/state.db" && mkdir "$unsafe/state.db"
expect_rc 77 ku --home "$unsafe" events --follow
[ "$(cat "$T/err")" = "kugetsu: $unsafe/state.db: a directory, not a regular file: refused" ] || fail "a directory said: $(cat "$T/err")"

mkdir -m 700 "$T/real-home" && ln -s real-home "$T/home-link"
expect_rc 77 ku --home "$T/home-link" status
[ "$(cat "$T/err")" = "kugetsu: $T/home-link: a symbolic link, not followed (HOME must be a real directory; give its target instead): refused" ] \
    || fail "a HOME that is a link said: $(cat "$T/err")"

expect_rc 0 ku --home "$missing" config cap 2   # a setting is a write: it creates HOME
[ -d "$missing" ] || fail "config cap 2 did not create HOME"

# bash completion: commands, options, and the ids of the HOME named on the line.
expect_rc 0 ku enqueue --id alpha -- true
expect_rc 0 ku enqueue --id beta -- true
expect_rc 0 ku --home "$missing" enqueue --id other -- true
complete_line() {   # complete_line WORD...: the completions of the last word
    bash -c '
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _kugetsu
        printf "%s\n" "${COMPREPLY[@]}" | sort' _ "$COMPLETIONS/kugetsu.bash" "$KUGETSU" "$@"
}
[ "$(complete_line re | tr "\n" " ")" = "reap remove restart resume retry " ] || fail "commands for 're': $(complete_line re)"
got=$(complete_line "" | tr '\n' ' ')
for c in enqueue start daemon status wait cancel logs events reap config check restart retry remove; do
    case " $got" in *" $c "*) ;; *) fail "completion lacks the command $c: $got" ;; esac
done
[ "$(complete_line enqueue --ti)" = "--timeout" ] || fail "options of enqueue for --ti: $(complete_line enqueue --ti)"
[ "$(complete_line remove "" | tr '\n' ' ')" = "alpha beta " ] || fail "ids for remove: $(complete_line remove "")"
[ "$(complete_line --home "$missing" restart "")" = "other" ] || fail "ids of --home: $(complete_line --home "$missing" restart "")"
[ "$(complete_line config "" | tr '\n' ' ')" = "cap group kill-grace max-attempts " ] || fail "config settings"
[ "$(complete_line enqueue --after "" | tr '\n' ' ')" = "alpha beta " ] || fail "ids for --after: $(complete_line enqueue --after "")"
[ -z "$(complete_line --home "$T/none" wait "")" ] || fail "ids of a HOME that does not exist"
[ ! -e "$T/none" ] || fail "completion created a HOME"

# zsh: the completion function parses (zsh -n), and is a #compdef file.
if command -v zsh >/dev/null; then
    zsh -n "$COMPLETIONS/_kugetsu" || fail "_kugetsu does not parse"
    head -1 "$COMPLETIONS/_kugetsu" | grep -qx '#compdef kugetsu' || fail "_kugetsu is not a #compdef file"
else
    echo "zsh is not installed: only the bash completion was run"
fi

# The man page: generated from the help text, with a section for every command.
[ -s "$MANPAGE" ] || fail "no man page at $MANPAGE"
grep -q "^\.TH KUGETSU \"1\"" "$MANPAGE" || fail "the man page has no .TH KUGETSU 1"
for c in $(ku --help | sed -n '/^Subcommands:/,/^$/{s/^  \([a-z][a-z-]*\) .*/\1/p}'); do
    grep -qx "\.SS $c" "$MANPAGE" || fail "the man page has no section for $c"
done
grep -q "kugetsu $want" "$MANPAGE" || fail "the man page does not give version $want"
# status: a summary line of every task, filters, columns that fit, the command with its quoting,
# colours only on a terminal and without NO_COLOR.
export KUGETSU_HOME="$T/st"
expect_rc 0 ku enqueue --id quoted -- echo 'fix the bug' "it's" "$(printf 'two\nlines')"
expect_rc 0 ku start --id failed -- sh -c 'exit 3'
expect_rc 3 ku wait failed
expect_rc 0 ku start --id "$(printf 'w%.0s' $(seq 1 40))" -- true
expect_rc 0 ku wait "$(printf 'w%.0s' $(seq 1 40))"
expect_rc 0 ku status
grep -qx 'tasks: 1 pending, 0 running, 1 completed, 1 error' "$T/out" || fail "summary line: $(cat "$T/out")"
cat >"$T/want-quoted" <<'TXT'
echo 'fix the bug' 'it'\''s' 'two\x0alines'
TXT
grep "^quoted " "$T/out" | grep -qF -- "$(cat "$T/want-quoted")" || fail "quoting: $(grep ^quoted "$T/out")"
grep -q "^failed .*error .* 3 " "$T/out" || fail "failed row: $(grep ^failed "$T/out")"
grep -q "^w\{31\}… " "$T/out" || fail "a long id is not cut to 32 columns: $(grep ^w "$T/out")"
! grep -q $'\033' "$T/out" || fail "colours in piped output"
COLUMNS=80 ku status >"$T/narrow" 3>&- 4>&-
python3 - "$T/narrow" <<'PY' || fail "lines wider than COLUMNS=80: $(cat "$T/narrow")"
import sys
rows = [l for l in open(sys.argv[1], encoding="utf-8").read().splitlines() if l.startswith(("quoted", "failed", "w"))]
assert len(rows) == 3 and all(len(l) <= 80 for l in rows), [len(l) for l in rows]
assert any(l.endswith("\u2026") for l in rows), rows
PY
expect_rc 0 ku status failed
[ "$(grep -c '^\(quoted\|failed\|w\)' "$T/out")" -eq 1 ] || fail "status failed listed: $(cat "$T/out")"
expect_rc 0 ku status --state pending,error
[ "$(grep -c '^\(quoted\|failed\|w\)' "$T/out")" -eq 2 ] || fail "--state pending,error listed: $(cat "$T/out")"
expect_rc 0 ku status --state cancelled
grep -qx 'no task matches' "$T/out" || fail "an empty filter said: $(cat "$T/out")"
expect_rc 64 ku status --state bogus
grep -q '"bogus" is not a state' "$T/err" || fail "--state bogus said: $(cat "$T/err")"
expect_rc 65 ku status nosuch
grep -q 'no task "nosuch"' "$T/err" || fail "status nosuch said: $(cat "$T/err")"
got=$(json_get "j['counts']['error'], j['counts']['pending'], len(j['tasks'])")
[ "$got" = "1 1 3" ] || fail "status --json counts: $got"
if command -v script >/dev/null; then
    script -qec "$KUGETSU status" /dev/null >"$T/tty" </dev/null
    grep -q $'\033\[31merror' "$T/tty" || fail "no colour on a terminal: $(cat -v "$T/tty")"
    NO_COLOR=1 script -qec "$KUGETSU status" /dev/null >"$T/tty" </dev/null
    ! grep -q $'\033' "$T/tty" || fail "colour with NO_COLOR: $(cat -v "$T/tty")"
fi
echo ok
