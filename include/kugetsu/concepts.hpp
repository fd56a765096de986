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

/// What the dispatcher asks a spawner to run.
struct spawn_request {
    std::string task_id;
    std::vector<std::string> argv;    ///< run by exec, never through a shell
    std::string working_dir;          ///< "" = inherit
    std::optional<duration> timeout{};  ///< a spawner that supervises may enforce it itself
    duration kill_grace{};            ///< SIGTERM -> SIGKILL delay for that enforcement
};

enum class process_state {
    running,  ///< alive, or dead but not yet reaped: it still holds its slot
    exited,   ///< ended; exit_code is known
    gone,     ///< ended (or never was this process); exit code unknown
};

struct process_status {
    process_state state = process_state::gone;
    int exit_code = -1;               ///< exited: 0-255, or 128+signal if killed by a signal
    bool timed_out = false;           ///< exited: the spawner stopped it at its timeout
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
/// spawner's side (a zombie whose reaper is gone may count as ended).
/// `s.signal(p, sig, ec)` signals the agent's whole process group, and nothing at all if p no
/// longer denotes the same process (PID reuse). `s.self()` names the calling process, so
/// that work it claims can be recovered when it dies.
/// Optional: `s.forget(p)` (noexcept), called once an agent's end is recorded or its start
/// failed, drops whatever the spawner keeps per agent.
template <class S>
concept spawner = requires(S& s, const spawn_request& r, const process_ref& p, std::error_code& ec) {
    { s.spawn(r, ec) } -> std::same_as<process_ref>;
    { s.release(p, ec) } -> std::same_as<void>;
    { s.abandon(p) } noexcept;
    { s.poll(p, ec) } -> std::same_as<process_status>;
    { s.signal(p, stop_signal::terminate, ec) } -> std::same_as<void>;
    { s.self() } -> std::same_as<process_ref>;
};

/// Notifier: receives every event. Checked: `n.notify(e)` is noexcept.
/// Not checked: it returns promptly and never stops dispatching; failures are counted or
/// reported by the model, never thrown. Events are sent after the lock is released.
template <class N>
concept notifier = requires(N& n, const event& e) {
    { n.notify(e) } noexcept;
};

/// How much a store write must survive. Every write is atomic and seen at once by every
/// process, so the death of any process loses nothing; `durable` also survives a power loss
/// or a kernel crash once the call returns. The dispatcher asks for `visible` only where a
/// power loss cannot matter, because every agent dies with the machine and the first reap
/// after it re-derives the state: the mark that an agent is running (its session, durable
/// before exec, says the attempt ran), a signal sent, a claim given back, a session removed.
/// The attempt count, every session and every final state are durable.
enum class durability { durable, visible };

/// A store that can make a write merely `visible` (cheaper: no fsync of its directory).
template <class S>
concept store_with_durability = requires(S& s, const queue_item& it, std::string_view id, std::error_code& ec) {
    { s.put_item(it, ec, durability::visible) } -> std::same_as<void>;
    { s.remove_session(id, ec, durability::visible) } -> std::same_as<void>;
};

/// Store: the durable state: queue items and sessions.
///
/// Checked: the operations below. Not checked: every operation is atomic (a reader sees the
/// old or the new record, never a mix) and durable when it returns; create_item fails with
/// errc::duplicate_task if the id exists; items_in_state returns at most `limit` items of
/// that state, oldest first (enqueued_at, then id); a record that cannot be read is an error
/// (errc::store_corrupt) that names it, never silently skipped. The dispatcher calls every
/// operation but create_item with its lock held; create_item is atomic on its own (enqueue
/// takes no lock).
template <class S>
concept store = requires(S& s, const queue_item& it, const session& se, std::string_view id,
                         task_state st, std::size_t limit, std::error_code& ec) {
    { s.create_item(it, ec) } -> std::same_as<void>;
    { s.put_item(it, ec) } -> std::same_as<void>;
    { s.get_item(id, ec) } -> std::same_as<std::optional<queue_item>>;
    { s.list_items(ec) } -> std::same_as<std::vector<queue_item>>;
    { s.items_in_state(st, limit, ec) } -> std::same_as<std::vector<queue_item>>;
    { s.put_session(se, ec) } -> std::same_as<void>;
    { s.remove_session(id, ec) } -> std::same_as<void>;
    { s.list_sessions(ec) } -> std::same_as<std::vector<session>>;
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

} // namespace kugetsu
