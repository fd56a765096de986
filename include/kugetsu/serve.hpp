// kugetsu/serve.hpp: the daemon loop, once, for every host: `kugetsu daemon`, the waits of
// the command (wait, start --wait, cancel, logs -f), the simulator and host programs.
//
//   kugetsu::home_waiter w(layout);          // home.hpp: inotify, pidfds, signalfd
//   auto end = kugetsu::serve(d, w);         // until a caught signal
//
// A WAITER is what a loop sleeps on (the concept `waiter`): drain() forgets every change seen
// so far; wait(plan, ec) blocks until a change after the last drain(), plan.deadline (in the
// dispatcher's clock), the death of one of plan.owners or plan.agents, or a request to stop,
// and says which (`wake`). It must be level-triggered: a change between drain() and wait()
// ends the wait at once. The real one is home_waiter; the simulator has its own.
//
// THE LOOP. serve() does, until the waiter says stop:
//   drain; pass (process_queue); next_wake; wait.
// The drain comes before the pass, so a change during the pass is seen by the wait that
// follows (one pass too many, never one too few), and only before a pass: a wake-up that
// leads to no pass drains nothing, so nothing that happened after it is forgotten. Woken by
// the store alone (wake::store), a store that can tell (data_version()) is asked whether
// another process committed since the pass began: if not, the wake-up was this process's own
// commit and no pass is needed. A store that checkpoints (checkpoint_due(), checkpoint()) is
// checkpointed once the loop has been idle for `idle_checkpoint_after`, outside any pass.
//
// serve_until() is the loop of a process that waits for something (a task's end, a free
// slot): while no daemon runs it records ends and enforces deadlines itself (reap, then
// next_wake); while one runs it only reads, waking for the store's changes.
#pragma once

#include <chrono>
#include <concepts>
#include <optional>
#include <system_error>
#include <utility>

#include "dispatcher.hpp"
#include "types.hpp"

namespace kugetsu {

/// Why a waiter's wait() returned.
enum class wake {
    store,      ///< only the store's change signal (a commit: maybe this process's own)
    changed,    ///< something else that may change a decision (an agent's slot released, ...)
    deadline,   ///< the plan's deadline passed
    process,    ///< a watched process (an owner, an agent) ended, or should be looked at again
    stop,       ///< asked to stop (a caught signal; the simulator's end of the run)
};

template <class W>
concept waiter = requires(W& w, const wake_plan& plan, std::error_code& ec) {
    w.drain();
    { w.wait(plan, ec) } -> std::same_as<wake>;
};

struct serve_options {
    bool once = false;   ///< one pass, then return
    /// A store that checkpoints is checkpointed after this long without a pass.
    std::chrono::milliseconds idle_checkpoint_after{100};
};

/// How serve() ended.
struct serve_end {
    enum class reason { once, stop, host } why = reason::stop;
    std::error_code ec;   ///< reason::host or once: the last pass's error
};

/// What serve() tells its host: any of these members, each optional (serve_quiet has none).
///   void before_pass()                                      a pass is about to begin
///   bool pass(const pass_report&, const std::error_code&)   after each pass: false ends
///                                                           serve() (reason::host): an
///                                                           error it will not go on after,
///                                                           or work it has seen done
///   void plan_failed(const std::error_code&)                next_wake() failed (the loop
///                                                           goes on, waking for changes only)
///   void idle(const wake_plan&)                             about to wait
struct serve_quiet {};

namespace detail {
template <class S>
concept knows_data_version = requires(S& s, std::error_code& ec) {
    { s.data_version(ec) } -> std::convertible_to<std::int64_t>;
};
template <class S>
concept checkpoints = requires(S& s, std::error_code& ec) {
    { s.checkpoint_due() } -> std::convertible_to<bool>;
    s.checkpoint(ec);
};
} // namespace detail

/// The daemon loop (see the banner) over dispatcher `d` and waiter `w`, until `w` says stop,
/// `host.pass()` returns false, or after one pass with `o.once`.
template <class Dispatcher, waiter Waiter, class Host = serve_quiet>
serve_end serve(Dispatcher& d, Waiter& w, const serve_options& o = {}, Host&& host = {}) {
    auto& store = d.store();
    using store_t = std::remove_reference_t<decltype(store)>;
    std::int64_t seen_version = -1;
    bool pass = true;
    bool checkpoint_wanted = false;
    for (;;) {
        if (pass) {
            w.drain();
            if constexpr (requires { host.before_pass(); }) host.before_pass();
            if constexpr (detail::knows_data_version<store_t>) {
                // Read before the pass: a commit of another process after this read is seen
                // as a change at the next wake-up, even if the pass saw it too.
                std::error_code vec;
                seen_version = store.data_version(vec);
            }
            std::error_code ec;
            const auto rep = d.process_queue(ec);
            if constexpr (requires { host.pass(rep, ec); })
                if (!host.pass(rep, ec)) return {serve_end::reason::host, ec};
            if (o.once) return {serve_end::reason::once, ec};
        }
        std::error_code ec;
        wake_plan plan = d.next_wake(ec);
        if constexpr (requires { host.plan_failed(ec); })
            if (ec) host.plan_failed(ec);
        bool idle_probe = false;
        if constexpr (detail::checkpoints<store_t>) {
            // Not after every pass: in a busy drain that was two more fdatasyncs every few
            // passes. Under load that never pauses, the store checkpoints inline by itself.
            if (pass && store.checkpoint_due()) checkpoint_wanted = true;
            if (checkpoint_wanted) {
                const auto probe = d.clock().now() + std::chrono::duration_cast<duration>(o.idle_checkpoint_after);
                if (!plan.deadline || probe < *plan.deadline) plan.deadline = probe, idle_probe = true;
            }
        }
        if constexpr (requires { host.idle(plan); }) host.idle(plan);
        const wake why = w.wait(plan, ec);
        if (why == wake::stop) return {serve_end::reason::stop, {}};
        if constexpr (detail::checkpoints<store_t>) {
            if (why == wake::deadline && idle_probe) {
                std::error_code cec;
                store.checkpoint(cec);
                checkpoint_wanted = false;
                pass = false;   // nothing changed: the plan stands
                continue;
            }
        }
        pass = true;
        if constexpr (detail::knows_data_version<store_t>) {
            // Woken by the store alone, and no other process has committed since the pass
            // read the version: that was this process's own commit.
            if (why == wake::store) {
                std::error_code vec;
                const auto v = store.data_version(vec);
                pass = vec || v != seen_version;
            }
        }
    }
}

/// How serve_until() ended.
template <class R>
struct until_end {
    enum class reason { done, stop, timed_out, failed } why = reason::done;
    R value{};            ///< reason::done: what `done` returned
    std::error_code ec;   ///< reason::failed: reap() or next_wake() failed (d.last_error_detail())
};

/// What serve_until() tells its host (optional, as serve()'s): void reaped(const
/// reap_report&), after each reap pass it ran itself (no daemon was running).
struct until_quiet {};

/// Waits until `done()` returns a value (std::optional<R>), `w` says stop, or `give_up` (in
/// the dispatcher's clock) passes. Each round: drain; if `serving()` is false (no daemon
/// runs) a reap pass; done(); the wait, for next_wake()'s plan when it reaped, else for
/// changes only (a daemon that ends must wake `w`: home_waiter watches daemon.lock).
template <class R, class Dispatcher, waiter Waiter, class Done, class Serving, class Host = until_quiet>
until_end<R> serve_until(Dispatcher& d, Waiter& w, Done&& done, Serving&& serving,
                         std::optional<timestamp> give_up = std::nullopt, Host&& host = {}) {
    for (;;) {
        w.drain();
        std::error_code ec;
        const bool daemon = serving();
        if (!daemon) {
            const auto rep = d.reap(ec);
            if (ec) return {until_end<R>::reason::failed, R{}, ec};
            if constexpr (requires { host.reaped(rep); }) host.reaped(rep);
        }
        if (std::optional<R> r = done()) return {until_end<R>::reason::done, std::move(*r), {}};
        wake_plan plan;
        if (!daemon) {
            plan = d.next_wake(ec);
            if (ec) return {until_end<R>::reason::failed, R{}, ec};
        }
        if (give_up && (!plan.deadline || *give_up < *plan.deadline)) plan.deadline = give_up;
        const wake why = w.wait(plan, ec);
        if (why == wake::stop) return {until_end<R>::reason::stop, R{}, {}};
        if (give_up && why == wake::deadline && d.clock().now() >= *give_up) {
            if (std::optional<R> r = done()) return {until_end<R>::reason::done, std::move(*r), {}};
            return {until_end<R>::reason::timed_out, R{}, {}};
        }
    }
}

} // namespace kugetsu
