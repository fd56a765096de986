// kugetsu/concepts.hpp: the policy concepts the dispatcher is a template over.
//
// One concept per role: lock, spawner, notifier, store, clock, workspace. Each comment says
// what the compiler checks and, in prose, what it cannot: scope, behaviour across fork(),
// and behaviour when the holder dies. docs/policies/<role>.md has one page per role with a
// table of the models. All operations use the std::error_code& form: policies never need
// to throw, so the simulator, fuzzers and property tests run without exceptions.
//
// No concept mentions a file path: a PostgreSQL-backed lock and store pair, whose lock scope
// is a transaction and whose liveness is a lease, models the same concepts.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "types.hpp"

namespace kugetsu {

/// Lock: the critical section around "count live sessions, write state, spawn".
///
/// Checked: `l.lock(ec)` blocks until held or fails (ec set, not held);
/// `l.unlock()` is noexcept and releases a lock this object holds.
/// Not checked: the lock excludes every other dispatcher sharing the same state (other
/// objects, threads, processes, or hosts, as the model documents); a model says whether a
/// forked child holds it and whether it is released when its holder dies. A model that can
/// stay held after its holder dies must document a recovery. Not recursive.
template <class L>
concept lock = requires(L& l, std::error_code& ec) {
    { l.lock(ec) } -> std::same_as<void>;
    { l.unlock() } noexcept;
};

/// A lock that can also be tried without blocking: returns true when taken.
template <class L>
concept try_lock = lock<L> && requires(L& l, std::error_code& ec) {
    { l.try_lock(ec) } -> std::same_as<bool>;
};

/// Optional, for any policy: what its last failed operation was about, beyond the error code
/// (a file and a step, a record). Each operation clears it first, so it never describes an
/// earlier one; empty when there is nothing to add. The dispatcher puts it in its own
/// last_error_detail() and in the task's last_error.
template <class P>
concept with_error_detail = requires(const P& p) {
    { p.last_error_detail() } -> std::convertible_to<std::string_view>;
};

/// The standard library's BasicLockable: `lock()` that throws (std::system_error) and
/// `unlock()`, so that a host can write `std::scoped_lock guard(l);` or
/// `std::unique_lock guard(l);`. Every lock model of kugetsu is one (through
/// lock_or_throw()); the dispatcher itself uses only the error-code form.
template <class L>
concept basic_lockable = requires(L& l) {
    l.lock();
    { l.unlock() } noexcept;
};

/// The standard library's Lockable: BasicLockable and `try_lock()` (true when taken; throws
/// on an error other than "held elsewhere"), for `std::unique_lock(l, std::try_to_lock)`
/// and `std::scoped_lock` over several locks.
template <class L>
concept lockable = basic_lockable<L> && requires(L& l) {
    { l.try_lock() } -> std::same_as<bool>;
};

namespace detail {
/// What a lock model's failure says in an exception: its last_error_detail() if it has one
/// (the file and the step), else what it is.
template <class L>
std::string lock_failure(const L& l, const char* what) {
    if constexpr (with_error_detail<L>) {
        const std::string_view d = l.last_error_detail();
        if (!d.empty()) return std::string(d);
    }
    return what;
}
} // namespace detail

/// BasicLockable's lock() for a model of `lock`: lock(ec), throwing std::system_error (with
/// the model's error code, and the detail it gives) when it fails; not held then.
template <lock L>
void lock_or_throw(L& l) {
    std::error_code ec;
    l.lock(ec);
    if (ec) throw std::system_error(ec, detail::lock_failure(l, "lock"));
}

/// Lockable's try_lock() for a model of `try_lock`: true if taken, false if held elsewhere;
/// throws std::system_error on any other failure.
template <try_lock L>
bool try_lock_or_throw(L& l) {
    std::error_code ec;
    const bool taken = l.try_lock(ec);
    if (ec) throw std::system_error(ec, detail::lock_failure(l, "try_lock"));
    return taken;
}

/// What the dispatcher asks a spawner to run.
struct spawn_request {
    std::string task_id;
    std::vector<std::string> argv;    ///< run by exec, never through a shell
    std::string working_dir;          ///< "" = inherit
    std::optional<duration> timeout{};  ///< a spawner that supervises may enforce it itself
    duration kill_grace{};            ///< SIGTERM -> SIGKILL delay for that enforcement
};

enum class process_state {
    running,    ///< alive, or dead but not yet reaped: it still holds its slot
    exited,     ///< ended after running the program; exit_code is known
    gone,       ///< ended (or never was this process); whether and how it ran is unknown
    never_ran,  ///< ended without running the program: held, and never released (its
                ///< starter died or abandoned it, or its supervisor died), or its exec failed
};

struct process_status {
    process_state state = process_state::gone;
    int exit_code = -1;               ///< exited: 0-255, or 128+signal if killed by a signal
    bool timed_out = false;           ///< exited: the spawner stopped it at its timeout
    std::optional<timestamp> ended_at{};  ///< exited: when it ended, if the spawner knows
    /// running: alive but held before exec, never released (its starter died an instant ago,
    /// and it is about to exit without running the program): it still holds its slot, but its
    /// attempt has not started and must not be adopted as started.
    bool held = false;
    /// gone: its program is known to have run (exec'd) although its exit code is not (its
    /// supervisor died, then it ended); its start is then recorded before its end.
    bool ran = false;
};

enum class stop_signal { terminate, kill };

/// Spawner: starts agent processes and answers for their liveness.
///
/// Starting is two-phase so that no agent can run without a session recording it:
/// `s.spawn(req, ec)` creates the process but holds it before exec and returns its identity;
/// the dispatcher writes the session, then `s.release(p, ec)` lets it exec (ec: the program
/// could not be executed; the child is reaped) or `s.abandon(p)` discards it without running
/// the program. If the caller dies while a child is held, the child exits without running it.
/// `s.poll(p, ec)` never blocks; an agent counts as running until it has been reaped by the
/// spawner's side (a zombie whose reaper is gone may count as ended). `never_ran` is only
/// answered when the spawner knows the program never ran (it was never released, or its
/// exec failed): a doubt is `gone`, never `never_ran`, since the dispatcher runs a task again
/// after `never_ran`.
/// `s.signal(p, sig, ec)` signals the agent's whole process group, and nothing at all if p no
/// longer denotes the same process (PID reuse). `s.self()` names the calling process, so
/// that work it claims can be recovered when it dies.
/// Optional: `s.forget(p)` (noexcept), called once an agent's end is recorded or its start
/// failed (after the unit of work that records it has committed), drops whatever the
/// spawner keeps per agent; `s.sweep(refs)` (noexcept), called by every reap with the lock
/// held and the processes of every session `refs`, removes what the spawner keeps for agents
/// no session names that are known to be over (a starter or a supervisor killed during setup).
template <class S>
concept spawner = requires(S& s, const spawn_request& r, const process_ref& p, std::error_code& ec) {
    { s.spawn(r, ec) } -> std::same_as<process_ref>;
    { s.release(p, ec) } -> std::same_as<void>;
    { s.abandon(p) } noexcept;
    { s.poll(p, ec) } -> std::same_as<process_status>;
    { s.signal(p, stop_signal::terminate, ec) } -> std::same_as<void>;
    { s.self() } -> std::same_as<process_ref>;
};

/// Optional: a spawner that keeps a record per agent drops it once the agent's end is
/// recorded (see `spawner` above).
template <class S>
concept spawner_with_forget = spawner<S> && requires(S& s, const process_ref& p) {
    { s.forget(p) } noexcept;
};

/// Optional: removes what the spawner keeps for agents no session names (see `spawner`).
template <class S>
concept spawner_with_sweep = spawner<S> && requires(S& s, const std::vector<process_ref>& refs) {
    { s.sweep(refs) } noexcept;
};

/// Optional: a pass's spawns at once (`spawn_many`, one error code per request, and
/// `detail_of(i)`: why request i failed), and its releases at once (`release_many`), where
/// the spawner can do them faster together (fork_spawner: one fsync of the run directory).
template <class S>
concept spawner_with_batches = spawner<S> && requires(S& s, const std::vector<spawn_request>& reqs,
                                                      const std::vector<process_ref>& refs, std::vector<std::error_code>& ecs) {
    { s.spawn_many(reqs, ecs) } -> std::same_as<std::vector<process_ref>>;
    { s.detail_of(std::size_t{0}) } -> std::convertible_to<std::string_view>;
    { s.release_many(refs, ecs) } -> std::same_as<void>;
};

/// Notifier: receives events. Checked: `n.notify(e)` is noexcept.
/// Not checked: it returns promptly and never stops dispatching; failures are counted or
/// reported by the model, never thrown. The dispatcher gives it the events its own units of
/// work committed, after the commit and after the lock is released, each with its `seq`.
template <class N>
concept notifier = requires(N& n, const event& e) {
    { n.notify(e) } noexcept;
};

/// Where a durable notifier takes events from: the committed events after sequence number
/// `after`, oldest first, at most a batch (empty: none left). A store's events_after().
using event_source = std::function<std::vector<event>(std::uint64_t after, std::error_code& ec)>;

/// A notifier that keeps what it was given (jsonl_notifier: the events file), and so can be
/// given every event a store commits, from every process, at least once.
///
/// Checked: `n.relay(source, ec)` returns the highest sequence number it holds. Not checked:
/// under an exclusion of its own (so concurrent relays never deliver an event twice), it finds
/// the highest sequence number it holds, takes `source(that)` until it is empty, and keeps
/// each event in order. An event it was given but lost to a crash before keeping it is given
/// again by the next relay of any process; one kept is never given again. On failure (the
/// events file cannot be written) ec says why and the events stay in the store's outbox for
/// the next relay: nothing is dropped. `n.notify(e)` of an event with a sequence number may
/// do nothing: such events come through relay().
template <class N>
concept durable_notifier = notifier<N> && requires(N& n, const event_source& src, std::error_code& ec) {
    { n.relay(src, ec) } -> std::same_as<std::uint64_t>;
};

/// How much a unit of work must survive. Every commit is atomic and seen at once by every
/// process, so the death of any process loses nothing committed; `durable` also survives a
/// power loss or a kernel crash once commit() returns (SQLite: synchronous=FULL, one
/// fdatasync of the WAL). The dispatcher asks for `visible` only where a power loss cannot
/// matter, because every agent dies with the machine and the first reap after it re-derives
/// the state: that an agent is running (its session, committed durably before exec, says the
/// attempt ran), a signal sent, a claim given back, the cursor of a relay. Attempts counted,
/// sessions written and final states are always in a durable commit.
enum class durability { durable, visible };

/// Store: the durable state: queue items, sessions, the events outbox, the queue's limits and
/// its schedule (pause, group caps).
///
/// A UNIT OF WORK. `s.begin(ec)` opens one; every write until `s.commit(d, ec)` is invisible
/// to every other store object and process, and becomes visible, all of it at once, when the
/// commit returns without error. On a commit error, `s.rollback()`, the destruction of the
/// object, or the death of the process, none of it happens. Reads through the object see its
/// own writes. One unit is open at a time in a store (all objects and processes sharing it):
/// begin() waits for another to end (SQLite: BEGIN IMMEDIATE with a busy timeout; a timeout
/// is an error naming the database), so the reads of a unit are not changed by others while
/// it is open. Not nested. An operation called outside a unit is a unit of its own, committed
/// durably (readers do not wait). The dispatcher opens units only with its lock held, except
/// enqueue(), whose unit creates one task and its event.
///
/// Checked: the operations below. Not checked:
/// - create_item fails with errc::duplicate_task if the id exists (in the store or the unit);
/// - items_in_state returns at most `limit` items of that state, oldest first (enqueued_at,
///   then id), and costs O(limit) whatever the number of tasks in other states: a pass
///   never reads finished tasks;
/// - runnable(limit, skip) returns at most `limit` pending items whose group is not in
///   `skip`, higher priority first, then oldest (enqueued_at, then id); it costs O(limit)
///   plus the pending items of skipped groups it passes over;
/// - get_schedule returns the schedule last put (a default one, nothing paused, if none);
/// - append_event adds the event to the outbox in the unit and returns its sequence number
///   (the event's own seq is ignored): committed events have distinct numbers, growing in
///   commit order, never reused; events_after(seq, limit) returns up to `limit` committed
///   events with greater numbers, in order;
/// - get_limits is empty until put_limits has been committed once;
/// - a record that cannot be read (fails validation) is never skipped silently: it is moved
///   aside (quarantined: kept, named, and reported with a task_error event, reason
///   "quarantined", in the unit that moved it) or is an error (errc::store_corrupt) naming it.
template <class S>
concept store = requires(S& s, const S& cs, const queue_item& it, const session& se, const event& e,
                         const limits& lim, const queue_schedule& sched, const std::vector<std::string>& skip,
                         std::string_view id, task_state st, std::size_t limit,
                         std::uint64_t seq, durability d, std::error_code& ec) {
    { s.begin(ec) } -> std::same_as<void>;
    { s.commit(d, ec) } -> std::same_as<void>;
    { s.rollback() } noexcept;
    { cs.in_unit() } noexcept -> std::same_as<bool>;
    { s.create_item(it, ec) } -> std::same_as<void>;
    { s.put_item(it, ec) } -> std::same_as<void>;
    { s.get_item(id, ec) } -> std::same_as<std::optional<queue_item>>;
    { s.list_items(ec) } -> std::same_as<std::vector<queue_item>>;
    { s.items_in_state(st, limit, ec) } -> std::same_as<std::vector<queue_item>>;
    { s.put_session(se, ec) } -> std::same_as<void>;
    { s.remove_session(id, ec) } -> std::same_as<void>;
    { s.list_sessions(ec) } -> std::same_as<std::vector<session>>;
    { s.append_event(e, ec) } -> std::same_as<std::uint64_t>;
    { s.events_after(seq, limit, ec) } -> std::same_as<std::vector<event>>;
    { s.get_limits(ec) } -> std::same_as<std::optional<limits>>;
    { s.put_limits(lim, ec) } -> std::same_as<void>;
    { s.runnable(limit, skip, ec) } -> std::same_as<std::vector<queue_item>>;
    { s.get_schedule(ec) } -> std::same_as<queue_schedule>;
    { s.put_schedule(sched, ec) } -> std::same_as<void>;
};

/// A store that can delete a task: `s.remove_item(id, ec)` deletes it in the unit (or in a
/// unit of its own), and does nothing if there is none. Its events stay in the outbox until
/// `s.prune_events(ec)`, which deletes (at the unit's commit) the events of every task that
/// no longer exists, except the last event of all, so that the highest number given stays in
/// the outbox (a relay that finds its position by it never appends an event twice). Needed by
/// dispatcher::remove() and clean() only.
template <class S>
concept store_with_removal = store<S> && requires(S& s, std::string_view id, std::error_code& ec) {
    { s.remove_item(id, ec) } -> std::same_as<void>;
    { s.prune_events(ec) } -> std::same_as<void>;
};

/// A record a store moved aside because it failed validation (see the store concept).
struct quarantined_record {
    std::string task_id;      ///< the task it was about, if its key says ("" if not)
    std::string source;       ///< where it was (a table and key, a file)
    std::string moved_to;     ///< where it is kept now
    std::string why;          ///< what was wrong with it
    std::uint64_t event_seq = 0;  ///< the task_error event written for it (0: none)
};

/// A store that moves unreadable records aside lists them: each record moved by a unit that
/// committed, since the object was created, in order.
template <class S>
concept store_with_quarantine = store<S> && requires(const S& s) {
    { s.quarantined() } -> std::same_as<const std::vector<quarantined_record>&>;
};

/// Clock: an object, never a static: two simulations in one process never share time.
template <class C>
concept clock = requires(C& c) {
    { c.now() } -> std::same_as<timestamp>;
};

/// Workspace: where an agent runs. `w.prepare(item, ec)` returns the working directory for
/// the agent ("" = inherit); `w.remove(item, ec)` undoes it after a failed attempt or once
/// the agent has ended. A model never deletes work silently: a worktree with uncommitted
/// changes is kept and reported through ec.
template <class W>
concept workspace = requires(W& w, const queue_item& it, std::error_code& ec) {
    { w.prepare(it, ec) } -> std::same_as<std::string>;
    { w.remove(it, ec) } -> std::same_as<void>;
};

/// A workspace that says whether prepare(it) leaves something behind that outlives the
/// process (a git worktree, a directory). The dispatcher commits a task's claim and attempt
/// count durably before such a prepare, so that an attempt whose prepare kills the process
/// every time is still counted; for the others (null_workspace) the claim is committed with
/// the session, in the pass's one commit. A workspace without has_effects() is assumed to
/// have them.
template <class W>
concept workspace_with_effects = workspace<W> && requires(const W& w, const queue_item& it) {
    { w.has_effects(it) } noexcept -> std::same_as<bool>;
};

} // namespace kugetsu
