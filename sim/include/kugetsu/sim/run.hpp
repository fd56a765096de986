// kugetsu/sim/run.hpp: one simulated run of a scenario: the actors' bodies (the daemon,
// running the library's serve loop over sim_waiter; each agent's supervisor; the enqueuer,
// starters and PM starter) and run(), which builds the world, runs it under a chooser, checks
// the invariants (invariants.hpp) and returns the run_result.
#pragma once

#include <array>
#include <climits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "invariants.hpp"
#include "legacy.hpp"
#include "scenario.hpp"

namespace kugetsu::sim {

namespace detail {

/// The owners of the plan's claims, watched as through pidfds: each one's death wakes the
/// current actor from wait_event. False if one is already gone (wake at once).
inline bool watch_owners(world& w, const wake_plan& plan) {
    w.me().watch_deaths.clear();
    for (const auto& o : plan.owners)
        if (const actor* a = w.find_actor(o)) {
            if (!w.actor_alive(a->id)) return false;
            w.me().watch_deaths.push_back(a->id);
        }
    return true;
}

/// The plan's deadline, as the watcher keeps it: an agent that no pidfd can watch (already
/// ended: a zombie whose parent has not reaped it, or gone) is looked at again after 20 ms,
/// since nothing may announce its reaping; `recheck` says that deadline is the earlier one.
/// (The watcher doubles the 20 ms up to 1 s; the simulated one keeps no state between waits,
/// so that its future depends on the shared state only.)
inline std::optional<timestamp> plan_deadline(world& w, const wake_plan& plan, bool& recheck) {
    std::optional<timestamp> deadline = plan.deadline;
    recheck = false;
    for (const auto& a : plan.agents) {
        const proc* p = w.find_proc(a);
        if (p && (p->status == proc_status::running || p->status == proc_status::held)) continue;
        const timestamp t = w.now() + std::chrono::milliseconds(20);
        if (!deadline || t < *deadline) deadline = t, recheck = true;
        break;
    }
    return deadline;
}

/// The daemon's waiter in the simulated world: level-triggered as home_waiter (an event since
/// the last drain ends the wait at once), waking for events (an agent's end, an enqueue, a
/// commit), the plan's deadline (virtual time), and stop at the end of the run. With
/// `edge_triggered` (a deliberately wrong design, "+edge-triggered-wait"), drain() does
/// nothing and wait() forgets what happened before it: the lost wake-up of a loop that
/// drains after its pass instead of before.
struct sim_waiter {
    shared& s;
    bool edge_triggered = false;
    void drain() {
        if (!edge_triggered) s.w.consume_events();
    }
    wake wait(const wake_plan& plan, std::error_code& ec) {
        ec.clear();
        world& w = s.w;
        // The end of the run: every client done, every dev task final, and a pass since the
        // last client ended (it may have left a claim to recover, or an agent to adopt).
        if (s.clients_done() && unfinished(s.store) == 0 && s.passed_after_clients) return wake::stop;
        w.choice("daemon.wait", /*observes_agents=*/true);   // an agent may end just before it looks
        if (!watch_owners(w, plan)) return wake::process;
        if (edge_triggered) w.consume_events();
        if (w.has_unseen_event()) return wake::changed;   // something happened during the pass
        bool recheck = false;
        const std::optional<timestamp> deadline = plan_deadline(w, plan, recheck);
        // A slot left free while tasks are runnable is a lost wake-up unless the daemon is to
        // look again soon (an agent it cannot watch may have freed it: found by PCT, a zombie
        // counted live by the pass and reaped by init just after it).
        if (!recheck) check_idle_slot(s);
        w.wait_event(deadline);
        if (deadline && w.now() >= *deadline) return recheck ? wake::process : wake::deadline;
        return wake::changed;
    }
};

/// A client's waiter (`kugetsu wait`'s home_waiter): wakes for the store's commits (its change
/// signal), agents' ends and enqueues, the death of the daemon it leaves the reaping to (the
/// last close of daemon.lock), the death of a claim's owner, and the plan's deadline (the plan
/// is empty while a daemon runs: serve_until then only reads). With `deaf` (a deliberately
/// wrong design, "+deaf-wait") commits do not wake it.
struct client_waiter {
    shared& s;
    bool deaf = false;
    void drain() {
        s.w.consume_events();
        if (!deaf) s.w.consume_commits();
    }
    wake wait(const wake_plan& plan, std::error_code& ec) {
        ec.clear();
        world& w = s.w;
        w.choice("wait.sleep", /*observes_agents=*/true);
        if (!watch_owners(w, plan)) return wake::process;
        if (s.daemon_present()) w.me().watch_deaths.push_back(s.daemon_lock);
        if (!deaf && w.has_unseen_commit()) return wake::store;
        if (w.has_unseen_event()) return wake::changed;
        bool recheck = false;
        const std::optional<timestamp> deadline = plan_deadline(w, plan, recheck);
        w.wait_event(deadline);
        if (deadline && w.now() >= *deadline) return recheck ? wake::process : wake::deadline;
        return wake::changed;
    }
};

/// `kugetsu wait ID`: the library's serve_until over client_waiter, until the task is final
/// (or unknown: a wait that raced its enqueue returns, as the command does with exit 66).
inline void waiter_body(shared& s, const std::string& id) {
    world& w = s.w;
    w.me().wants_commits = !s.sc.deaf_wait;
    auto d = make_fixed(s);
    client_waiter cw{s, s.sc.deaf_wait};
    serve_until<bool>(
        d, cw,
        [&]() -> std::optional<bool> {
            std::error_code ec;
            const auto it = d.store().get_item(id, ec);
            if (ec || !it) return false;
            return is_final(it->state) ? std::optional<bool>(true) : std::nullopt;
        },
        [&] {   // daemon_running(): F_OFD_GETLK on daemon.lock
            w.choice("wait.daemon_lock");
            const bool daemon = s.daemon_present();
            w.observe(daemon ? 1 : 2);
            return daemon;
        });
    w.die_if_killed();
}

/// An agent's supervisor (fork_spawner's), from the moment spawn() forked it: it waits for
/// its agent's fate; if the agent ran and ended, it writes the exit record (the slot's lock is
/// held until then, so every poll sees the agent running) and, as `kugetsu reap` does on
/// exit, records the end in the store unless a daemon holds daemon.lock. Killed, it leaves
/// a held agent to exit without running, and a running one to the daemon that spawned it
/// (a subreaper, which records its code when it polls it) or else to init (its code lost).
/// Not simulated: its own timeout signals (the dispatcher's, which it duplicates, are).
///
/// Its steps. With kills left in the run's budget: a first step while its agent is held and
/// one once it runs (kill points), one when the agent has ended (the exit record), then the
/// on-exit check of daemon.lock. Without kills the first step is the record itself (it waits
/// from its fork: nothing shared changes before), and the check is made in the same step: the
/// daemon's presence can then change only at the daemon's stop, at the end of the run, once
/// every dev task is final. With atomic critical sections (the exhaustive search), kills or
/// not, the record is its only step (and lazy: offered where agents are looked at). Its agent
/// is held only inside its spawner's critical section, where no other actor moves; a kill
/// while the agent runs is seen as a kill at the record (the agent goes to the same new
/// parent, and polls see it running until then); and a daemon killed between the record and
/// the check is seen as killed just after it (its successor records the end). Each holds but
/// for a second kill in between, which random and PCT exploration reach.
inline void supervisor_body(shared& s, process_ref agent, bool watching) {
    world& w = s.w;
    if (watching) {   // this was the first step, a kill point while it is held: now its run
        w.wait_agent(agent, /*released=*/true);
        if (const proc* p = w.find_proc(agent); p && p->status == proc_status::running)
            w.lazy_choice({"sup.watch", agent.pid});   // a kill point while it runs
        w.wait_agent(agent);
        const proc* p = w.find_proc(agent);
        if (!p || p->status != proc_status::exited) return;   // never ran: its slot says so
        w.lazy_choice({"sup.record", agent.pid});
    }
    proc* q = w.find_proc(agent);
    if (!q || q->status != proc_status::exited || q->parent != w.current()) return;
    if (s.sc.supervisor_records) q->recorded = true;
    w.reaped(*q);
    w.notify_event();   // the slot's last close: IN_CLOSE_WRITE on run/
    if (w.tracing()) w.trace(w.current(), "exit record", q->task_id + " pid " + std::to_string(agent.pid) + " code " +
                                                       std::to_string(q->exit_code));
    // The on-exit command, `kugetsu reap`, unless a daemon holds daemon.lock.
    if (w.can_kill() && !w.atomic()) w.choice({"sup.on_exit", agent.pid});   // (see above)
    const bool daemon = s.daemon_present();
    w.observe(daemon ? 1 : 2);
    if (daemon) return;
    auto d = make_fixed(s);
    std::error_code ec;
    d.reap(ec);
    w.die_if_killed();
}

inline void daemon_body(shared& s) {
    world& w = s.w;
    if (s.sc.all_fixed()) {
        // daemon.lock, for its whole life (the kernel releases it when it dies).
        w.choice("daemon.lock");
        s.daemon_lock = w.current();
        // The real daemon loop (serve.hpp) over the real dispatcher.
        auto d = make_fixed(s);
        sim_waiter waiter{s, s.sc.edge_triggered_wait};
        struct host {
            world& w;
            shared& s;
            fixed_dispatcher& d;
            // Here the daemon's future depends on the shared state only: nothing it saw in
            // an earlier pass is kept (the dispatcher holds no state between calls).
            void before_pass() {
                w.reset_history();
                s.passed_after_clients = s.clients_done();
                w.observe(s.passed_after_clients ? 3 : 4);
            }
            bool pass(const pass_report&, const std::error_code& ec) {
                w.die_if_killed();   // killed during its relay (which cannot throw)
                if (ec && w.tracing()) w.trace(w.current(), "pass failed", ec.message() + ": " + d.last_error_detail());
                return true;
            }
            void plan_failed(const std::error_code& ec) {
                if (w.tracing()) w.trace(w.current(), "next_wake failed", ec.message() + ": " + d.last_error_detail());
            }
            // And here, before its wait, on the plan only: serve() keeps nothing else of the
            // pass (the simulated store has no data version and no checkpoints).
            void idle(const wake_plan& plan) {
                static_assert(!kugetsu::detail::knows_data_version<sim_store> && !kugetsu::detail::checkpoints<sim_store>,
                              "serve() would keep the store's data version or a checkpoint wish across the wait");
                if (!w.hashing() || w.fine_states()) return;   // (random exploration hashes nothing)
                w.reset_history();
                w.observe(plan.deadline ? static_cast<std::uint64_t>(plan.deadline->time_since_epoch().count()) : 1);
                for (const auto& o : plan.owners) w.observe(mix(static_cast<std::uint64_t>(o.pid), o.start_time));
                w.observe(2);
                for (const auto& a : plan.agents) w.observe(mix(static_cast<std::uint64_t>(a.pid), a.start_time));
            }
        };
        serve(d, waiter, {}, host{w, s, d});
        return;
    }
    legacy_kugetsu legacy(s);
    for (;;) {
        w.reset_history();
        legacy.daemon_pass();
        if (s.clients_done() && unfinished(s.store) == 0) break;
        if (w.has_unseen_event()) {   // something happened during the pass: pass again
            w.consume_events();
            continue;
        }
        check_idle_slot(s);
        w.wait_event(std::nullopt);   // the old design had no timeouts
    }
}

/// A later process's relay (the next `kugetsu` command to run): after the run, the events
/// the store committed that the notifier does not hold yet. Returns how many it brought.
inline int final_relay(world& w, event_log& log, memory_store& store) {
    int n = 0;
    std::error_code ec;
    for (;;) {
        auto batch = store.events_after(log.last_seq, 512, ec);
        if (ec || batch.empty()) return n;
        for (const auto& e : batch) {
            sim_notifier::keep(w, log, e);
            ++n;
        }
    }
}

} // namespace detail

struct run_options {
    bool keep_trace = true;
    /// Keep what each step did (run_result::ops), formatted at the end of the run.
    bool keep_ops = true;
    std::uint64_t max_steps = 200000;
    bool state_hash = false;
    /// The finer state hash (world::set_fine_states): to check the coarser one against.
    bool fine_states = false;
    bool atomic_critical_sections = false;
    /// With atomic critical sections: kill points inside them (world::set_kill_points).
    bool kill_points = false;
    /// How many agents may end by a choice, before their drawn end (world::set_max_early_ends).
    int max_early_ends = INT_MAX;
    /// Stop at the first violation of this kind found during the run ("any": of any kind;
    /// world::stop_at); the run is then aborted, without the checks at its end. Empty: run
    /// to the end.
    std::string stop_at = {};
};

/// One run of the scenario under the chooser's schedule.
inline run_result run(const scenario& sc, std::uint64_t seed, chooser& ch, const run_options& opt = {}) {
    world w(seed, sc.faults);
    w.want_state_hash(opt.state_hash);
    w.set_fine_states(opt.fine_states);
    w.set_recording(opt.keep_trace, opt.keep_trace || opt.keep_ops);
    w.set_atomic(opt.atomic_critical_sections);
    w.set_kill_points(opt.kill_points);
    w.set_max_early_ends(opt.max_early_ends);
    w.stop_at(opt.stop_at);
    detail::shared s(w, sc);
    s.pm_task = "pm-1";
    s.log->outbox = sc.outbox;
    s.hashes->release_before_commit = sc.release_before_commit;
    s.hashes->ignore_group_caps = sc.ignore_group_caps;
    s.hashes->ignore_pause = sc.ignore_pause;
    s.hashes->wrong_priority = sc.wrong_priority;
    s.hashes->ignore_dependencies = sc.ignore_dependencies;
    s.hashes->unheard_restarts = sc.unheard_restarts;
    s.hashes->check_transitions = sc.all_fixed();
    if (sc.scheduling) {
        s.hashes->before_commit = [&s](memory_store& unit) { detail::check_priorities(s, unit); };
        queue_schedule groups;   // HOME's group caps, set before anything runs
        groups.set_group("a", {sc.group_a_cap, false});
        groups.set_group("b", {sc.group_b_cap, false});
        std::error_code ec;
        s.store.put_schedule(groups, ec);
    }
    run_result r;
    r.design = sc.design();
    r.cap = sc.cap;
    r.begin = w.now();

    const bool fixed = sc.all_fixed();
    // The PM starter, the daemon and the K starters.
    auto start_others = [&s, fixed] {
        world& w = s.w;
        if (s.sc.pm)
            w.add_actor("pm", [&s, fixed] {
                if (fixed) {
                    auto d = detail::make_fixed(s);
                    std::error_code ec;
                    d.start(s.pm_spec(), ec);
                    s.w.die_if_killed();
                } else {
                    detail::legacy_kugetsu(s).start_new(s.pm_spec());
                }
            });
        w.add_actor("daemon", [&s] { detail::daemon_body(s); }, actor_kind::daemon);
        if (s.sc.scheduling && fixed)
            w.add_actor("pauser", [&s] {
                auto d = detail::make_fixed(s);
                std::error_code ec;
                d.pause({}, ec);
                d.resume({}, ec);
                d.pause("a", ec);
                d.resume("a", ec);
                s.w.die_if_killed();
            });
        if (fixed) {
            for (int k = 1; k <= s.sc.waiters && k <= s.sc.tasks; ++k)
                w.add_actor("wait-" + std::to_string(k), [&s, k] { detail::waiter_body(s, "t" + std::to_string(k)); });
            for (int k = 1; k <= s.sc.reapers; ++k)
                w.add_actor("reap-" + std::to_string(k), [&s] {
                    auto d = detail::make_fixed(s);
                    std::error_code ec;
                    d.reap(ec);
                    s.w.die_if_killed();
                });
            // `kugetsu wait t<k> && kugetsu restart t<k>`: the task run again once final.
            for (int k = 1; k <= s.sc.restarts && k <= s.sc.tasks; ++k)
                w.add_actor("restart-" + std::to_string(k), [&s, k] {
                    const std::string id = "t" + std::to_string(k);
                    detail::waiter_body(s, id);
                    auto d = detail::make_fixed(s);
                    std::error_code ec;
                    d.restart(id, ec);
                    s.w.die_if_killed();
                });
            for (int k = 1; k <= s.sc.cancels && k <= s.sc.tasks; ++k)
                w.add_actor("cancel-" + std::to_string(k), [&s, k] {
                    auto d = detail::make_fixed(s);
                    std::error_code ec;
                    d.cancel("t" + std::to_string(s.sc.tasks + 1 - k), ec);
                    s.w.die_if_killed();
                });
        }
        for (int k = 1; k <= s.sc.starters; ++k)
            w.add_actor("starter-" + std::to_string(k), [&s, fixed, k] {
                const auto spec = s.task("s" + std::to_string(k));
                if (fixed) {
                    auto d = detail::make_fixed(s);
                    std::error_code ec;
                    d.start(spec, ec);
                    s.w.die_if_killed();
                } else {
                    detail::legacy_kugetsu(s).start_new(spec);
                }
            });
    };
    // The enqueuer: the queued tasks. In the six-task race they are queued before anything
    // else runs; with enqueue_first off, enqueues race with everything else.
    w.add_actor("enqueuer", [&s, fixed, start_others] {
        for (int i = 1; i <= s.sc.tasks; ++i) {
            const auto spec = s.task("t" + std::to_string(i));
            s.queued.insert(spec.id);
            if (fixed) {
                auto d = detail::make_fixed(s);
                std::error_code ec;
                d.enqueue(spec, ec);
                s.w.die_if_killed();   // killed during its relay (which cannot throw)
            } else {
                detail::legacy_kugetsu(s).enqueue(spec);
            }
        }
        if (s.sc.enqueue_first) start_others();
    });
    if (!sc.enqueue_first) start_others();
    w.on_killed = [&s, start_others](const actor& a) {
        if (a.name == "enqueuer" && s.sc.enqueue_first) start_others();   // the rest still runs
        // A pauser killed while the queue is paused: someone resumes it (as a user would).
        if ((a.name == "pauser" || a.name.rfind("resumer", 0) == 0) && s.resumers < 8) {
            ++s.resumers;
            s.w.add_actor("resumer-" + std::to_string(s.resumers), [&s] {
                auto d = detail::make_fixed(s);
                std::error_code ec;
                d.resume({}, ec);
                d.resume("a", ec);
                s.w.die_if_killed();
            });
        }
        if (a.kind == actor_kind::daemon) {
            if (s.daemon_restarts < s.sc.max_daemon_restarts) {   // a supervisor restarts it
                ++s.daemon_restarts;
                s.w.add_actor("daemon-" + std::to_string(s.daemon_restarts + 1), [&s] { detail::daemon_body(s); },
                              actor_kind::daemon);
            } else {
                s.no_daemon_left = true;
            }
        }
    };
    if (fixed && sc.supervisors)
        w.on_spawn = [&s](proc& p) {
            const process_ref agent = p.ref;
            const bool watching = s.w.can_kill() && !s.w.atomic();
            p.sup = p.parent = s.w.add_actor("sup-" + p.task_id + "#" + std::to_string(p.attempt),
                                             [&s, agent, watching] { detail::supervisor_body(s, agent, watching); },
                                             actor_kind::supervisor);
            if (watching) s.w.set_first_op(p.sup, {"sup.watch", agent.pid}, /*lazy=*/true);
            else s.w.start_waiting_for(p.sup, agent, {"sup.record", agent.pid}, /*lazy=*/true);
        };
    w.check_step = [&s] { detail::check_step(s); };
    w.run(ch, opt.max_steps);

    r.aborted = w.stopped();
    r.steps = w.steps();
    r.kills = w.kills();
    r.peak_live = s.peak;
    r.schedule = w.schedule();
    r.ops = w.step_ops();
    for (std::size_t i = 0; i < w.actor_count(); ++i) {
        r.actor_names.push_back(w.get(static_cast<int>(i)).name);
        r.actor_creators.push_back(w.get(static_cast<int>(i)).creator);
    }
    r.violations = w.violations();
    std::error_code ec;
    r.items = s.store.list_items(ec);
    if (!r.aborted) {
        // Every client returns (a `kugetsu wait` that never wakes is a hang), unless no daemon
        // is left to run what it waits for.
        if (!s.no_daemon_left)
            for (const int id : w.blocked_at_end())
                if (w.get(id).client)
                    w.add_violation("hang", w.get(id).name + " never returned: blocked for ever at the end of the run");
        // The next process to relay (any kugetsu command) brings what no process relayed.
        if (fixed && sc.outbox) r.late_events = detail::final_relay(w, *s.log, s.store);
        std::map<std::string, int> ran;
        for (auto& [k, p] : w.procs())
            if (p.ran) ++ran[p.task_id];
        for (const auto& it : r.items)   // more agents ran than the task had runs
            if (const auto n = ran.find(it.id); n != ran.end()) r.duplicates += n->second > 1 + it.restarts;
        static const std::vector<event> none;
        for (auto& it : r.items) {
            const auto held = s.log->by_task.find(it.id);
            const auto& evs = held == s.log->by_task.end() ? none : held->second;
            // A run left without a daemon (killed past its restart budget): its unfinished
            // tasks are stranded, with no process left to record them.
            if (fixed && !(s.no_daemon_left && !is_final(it.state))) {   // every task, the PM's too
                const auto n = ran.find(it.id);
                if (auto why = detail::check_events_exact(evs, it, s.queued.count(it.id) > 0, n == ran.end() ? 0 : n->second);
                    !why.empty())
                    w.add_violation("events", "task " + it.id + ": " + why);
            }
            if (it.role != role::dev) continue;
            if (!is_final(it.state)) {
                if (s.no_daemon_left) {
                    ++r.stranded;
                } else {
                    ++r.lost;
                    w.add_violation("lost_task", "task " + it.id + " ended " + std::string(to_string(it.state)));
                }
            }
            if (it.attempts > it.max_attempts)
                w.add_violation("attempts", "task " + it.id + " made " + std::to_string(it.attempts) + " attempts");
            if (!fixed)
                if (auto why = detail::check_events(evs, it, w.kills() > 0); !why.empty())
                    w.add_violation("events", "task " + it.id + ": " + why);
            if (auto why = detail::check_exit_code(w, it); !why.empty()) w.add_violation("exit_code", "task " + it.id + ": " + why);
        }
        if (fixed && sc.outbox) {
            // Nothing committed is lost: the events file holds the whole outbox. And without
            // kills, the processes relayed it all themselves.
            std::set<std::uint64_t> held;
            for (const auto& e : s.log->events) held.insert(e.seq);
            for (const auto& e : s.store.events_after(0, static_cast<std::size_t>(-1), ec))
                if (!held.count(e.seq)) {
                    w.add_violation("events", "event #" + std::to_string(e.seq) + " (" + std::string(to_string(e.type)) +
                                                  " " + e.task_id + ") was committed and never delivered");
                    break;
                }
            if (w.kills() == 0 && r.late_events > 0)
                w.add_violation("events", std::to_string(r.late_events) +
                                              " committed events were relayed by no process of the run (without kills)");
        }
        r.violations = w.violations();
    }
    r.no_daemon_left = s.no_daemon_left;
    r.events = s.log->events;
    for (auto& [k, p] : w.procs())
        if (p.ran) r.agents.push_back(p);
    r.end = w.now();
    if (opt.keep_trace) r.trace = w.trace_log();
    return r;
}

} // namespace kugetsu::sim
