#!/usr/bin/env bash
# cancel (pending and running), logs, events --follow, status output, the working directory
# and environment an agent gets.
source "$(dirname "$0")/lib.sh"

# An agent runs where enqueue/start was called, with KUGETSU_TASK_ID and its slot on fd 5.
mkdir "$T/work"
(cd "$T/work" && expect_rc 0 ku start --id env -- sh -c 'pwd; echo "id=$KUGETSU_TASK_ID fd=$KUGETSU_SLOT_FD"; ls /proc/self/fd')
expect_rc 0 ku wait env
expect_rc 0 ku logs env
grep -qx "$T/work" "$T/out" || fail "agent ran in the wrong directory: $(cat "$T/out")"
grep -qx 'id=env fd=5' "$T/out" || fail "environment: $(cat "$T/out")"
# Exactly descriptors 0, 1, 2 and the slot (plus the one ls opened to list them).
[ "$(sed -n '/^[0-9]*$/p' "$T/out" | sort -n | tr '\n' ' ')" = "0 1 2 3 5 " ] || fail "descriptors: $(cat "$T/out")"

# The command is exec'd with its argv: no shell sees it, so nothing in it is expanded or run.
(cd "$T/work" && expect_rc 0 ku start --id noshell -- echo '$(touch pwned1)' '`touch pwned2`' '; touch pwned3' '*')
expect_rc 0 ku wait noshell
expect_rc 0 ku logs noshell
[ "$(cat "$T/out")" = '$(touch pwned1) `touch pwned2` ; touch pwned3 *' ] || fail "argv was changed: $(cat "$T/out")"
[ -z "$(ls "$T/work")" ] || fail "a shell ran the command: $(ls "$T/work")"

# --worktree: the agent runs in a new git worktree of the repository, on branch kugetsu/<id>;
# a relative REPO is resolved where `start` was called.
git init -q "$T/repo"
git -C "$T/repo" -c user.email=k@example.invalid -c user.name=k commit -q --allow-empty -m init
(cd "$T" && expect_rc 0 ku start --id wt --worktree repo -- sh -c 'pwd; git rev-parse --abbrev-ref HEAD')
expect_rc 0 ku wait wt
expect_rc 0 ku logs wt
grep -qx "$KUGETSU_HOME/worktrees/wt" "$T/out" || fail "worktree agent ran in: $(cat "$T/out")"
grep -qx 'kugetsu/wt' "$T/out" || fail "worktree agent's branch: $(cat "$T/out")"
git -C "$T/repo" rev-parse --verify -q kugetsu/wt >/dev/null || fail "the task's branch was not kept"
[ ! -e "$KUGETSU_HOME/worktrees/wt" ] || fail "the clean worktree was not removed"

# cancel a pending task: cancelled, never runs.
expect_rc 0 ku enqueue --id later -- sh -c 'touch '"$T/ran"
expect_rc 0 ku cancel later
[ "$(state later)" = cancelled ] || fail "later is $(state later)"
expect_rc 0 ku daemon --once
[ ! -e "$T/ran" ] || fail "a cancelled task ran"
expect_rc 65 ku cancel later   # already cancelled

# cancel a running task: stopped, recorded as cancelled once its agent is gone.
expect_rc 0 ku config kill-grace 0.3
expect_rc 0 ku start --id busy -- sh -c 'trap "" TERM; echo started; sleep 60 & wait; sleep 60'
within 10 grep -q started "$KUGETSU_HOME/logs/busy.log"
expect_rc 0 ku cancel busy
[ "$(cat "$T/out")" = "busy cancelled" ] || fail "cancel printed '$(cat "$T/out")'"
[ "$(state busy)" = cancelled ] || fail "busy is $(state busy)"
[ "$(json_get "j['live']")" -eq 0 ] || fail "the slot was not freed"

# logs --follow ends with the task.
expect_rc 0 ku start --id chatty -- sh -c 'for i in 1 2 3; do echo line$i; sleep 0.1; done'
expect_rc 0 ku logs --follow chatty
[ "$(grep -c '^line' "$T/out")" -eq 3 ] || fail "logs --follow printed: $(cat "$T/out")"

# events --follow prints events as they happen.
ku_bg events --follow >"$T/follow"
follower=${BACKGROUND[-1]}
expect_rc 0 ku enqueue --id watched -- true
within 10 grep -q '"task_id":"watched"' "$T/follow"
kill -TERM "$follower"; wait "$follower" || fail "events --follow did not exit 0 on SIGTERM"
python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$T/follow" || fail "not JSON lines"

# status: the human table names every task; --json has the documented fields.
expect_rc 0 ku status
for id in env later busy chatty watched; do grep -q "^$id " "$T/out" || fail "status lacks $id"; done
json_get "sorted(j.keys())" | grep -q "'cap', 'counts', 'groups', 'kill_grace_ms', 'live', 'max_attempts', 'paused', 'pm_live', 'quarantined', 'sessions', 'tasks'" || fail "status --json keys: $(json_get "sorted(j.keys())")"
json_get "sorted(j['tasks'][0].keys())" | grep -q "'attempts'.*'id'.*'pid'.*'state'" || fail "task fields"
echo ok
