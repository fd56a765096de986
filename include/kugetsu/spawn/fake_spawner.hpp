// kugetsu/spawn/fake_spawner.hpp: a spawner of pretend processes, for unit tests.
//
// Nothing is forked. Each spawn() creates a fake process (pid 1000, 1001, ...) that "runs"
// from release() until the test ends it with exit() (with the time it ended, if given),
// vanish() (its end and exit code unknown: `gone`) or never_ran() (it ended without running the
// program, as when its starter dies while it is held: `never_ran`). Tests can make the next
// spawns or releases fail, and see every request, signal and the peak of running agents.
// Copies share one state, so a test keeps a copy of the spawner it gives the dispatcher.
// A terminate or kill signal ends the process with 128+signal unless it was told to ignore
// SIGTERM. Like a real child, an exited (or never_ran) process reports its end to one poll()
// and is gone after that. (The simulator in sim/ has its own, scheduled spawner.)
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "../concepts.hpp"

namespace kugetsu {

class fake_spawner {
public:
    struct process {
        spawn_request request;
        bool held = true;
        bool ran = false;               ///< released: the program "ran"
        process_state state = process_state::running;
        int exit_code = -1;
        std::optional<timestamp> ended_at{};   ///< exited: when, if the test said
        bool ignore_term = false;
        bool reaped = false;            ///< its exit was reported by poll(): gone from now on
        std::vector<stop_signal> signals;
    };

    fake_spawner() : s_(std::make_shared<state>()) {}

    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        s_->requests.push_back(r);
        if (s_->fail_spawns > 0) {
            --s_->fail_spawns;
            ec = errc::spawn_failed;
            return {};
        }
        const int pid = s_->next_pid++;
        process pr;
        pr.request = r;
        s_->procs[pid] = std::move(pr);
        return ref(pid);
    }

    void release(const process_ref& p, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        auto it = s_->procs.find(p.pid);
        if (it == s_->procs.end() || !it->second.held) {
            ec = errc::not_held;
            return;
        }
        it->second.held = false;
        if (s_->fail_releases > 0) {
            --s_->fail_releases;
            it->second.state = process_state::gone;
            ec = std::make_error_code(std::errc::no_such_file_or_directory);
            return;
        }
        it->second.ran = true;
        s_->peak = std::max(s_->peak, running_locked());
    }

    void abandon(const process_ref& p) noexcept {
        std::lock_guard g(s_->m);
        if (auto it = s_->procs.find(p.pid); it != s_->procs.end() && it->second.held) {
            it->second.held = false;
            it->second.state = process_state::never_ran;   // as fork_spawner: it never ran
            ++s_->abandoned;
        }
    }

    process_status poll(const process_ref& p, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        if (p == s_->self) return {s_->self_alive ? process_state::running : process_state::gone, -1};
        auto it = s_->procs.find(p.pid);
        if (it == s_->procs.end() || ref(p.pid) != p || it->second.reaped) return {process_state::gone, -1};
        auto& pr = it->second;
        if (pr.state == process_state::exited || pr.state == process_state::never_ran) pr.reaped = true;   // reported once
        return {pr.state, pr.exit_code, false, pr.state == process_state::exited ? pr.ended_at : std::nullopt};
    }

    void signal(const process_ref& p, stop_signal sig, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        auto it = s_->procs.find(p.pid);
        if (it == s_->procs.end() || it->second.state != process_state::running) return;
        it->second.signals.push_back(sig);
        if (sig == stop_signal::kill || !it->second.ignore_term) {
            it->second.state = process_state::exited;
            it->second.exit_code = sig == stop_signal::kill ? 128 + 9 : 128 + 15;
        }
    }

    process_ref self() {
        std::lock_guard g(s_->m);
        return s_->self;
    }

    // ---- test controls ------------------------------------------------------------------
    /// Ends the process with `code`; poll() reports `ended_at` as the time it ended.
    void exit(int pid, int code, std::optional<timestamp> ended_at = {}) {
        set_state(pid, process_state::exited, code, ended_at);
    }
    /// Ends the process with its end and exit code unknown: poll() answers `gone`.
    void vanish(int pid) { set_state(pid, process_state::gone, -1); }
    /// Ends the process, held or released, as one that never ran the program (its starter
    /// died while it was held, or its supervisor died before the exec): poll() answers
    /// `never_ran`, and it no longer counts as running.
    void never_ran(int pid) {
        std::lock_guard g(s_->m);
        auto& pr = s_->procs.at(pid);
        pr.held = false;
        pr.ran = false;
        pr.state = process_state::never_ran;
        pr.exit_code = -1;
    }
    void fail_next_spawns(int n) { std::lock_guard g(s_->m); s_->fail_spawns = n; }
    void fail_next_releases(int n) { std::lock_guard g(s_->m); s_->fail_releases = n; }
    void ignore_term(int pid) { std::lock_guard g(s_->m); s_->procs.at(pid).ignore_term = true; }
    /// Makes self() another process, alive or dead: to test recovery from a dead dispatcher.
    void set_self(process_ref p, bool alive) {
        std::lock_guard g(s_->m);
        s_->self = std::move(p);
        s_->self_alive = alive;
    }
    process get(int pid) const { std::lock_guard g(s_->m); return s_->procs.at(pid); }
    /// Released processes that are still running.
    int running() const { std::lock_guard g(s_->m); return running_locked(); }
    int peak() const { std::lock_guard g(s_->m); return s_->peak; }
    int abandoned() const { std::lock_guard g(s_->m); return s_->abandoned; }
    std::vector<spawn_request> requests() const { std::lock_guard g(s_->m); return s_->requests; }
    /// The pid of the running process for a task, or 0.
    int pid_of(const std::string& task_id) const {
        std::lock_guard g(s_->m);
        for (auto& [pid, pr] : s_->procs)
            if (pr.request.task_id == task_id && pr.ran && pr.state == process_state::running) return pid;
        return 0;
    }

private:
    struct state {
        mutable std::mutex m;
        std::map<int, process> procs;
        std::vector<spawn_request> requests;
        int next_pid = 1000;
        int fail_spawns = 0;
        int fail_releases = 0;
        int peak = 0;
        int abandoned = 0;
        process_ref self{1, 1, "fake-boot"};
        bool self_alive = true;
    };

    static process_ref ref(int pid) { return {pid, static_cast<std::uint64_t>(pid) * 10, "fake-boot"}; }

    int running_locked() const {
        int n = 0;
        for (auto& [pid, pr] : s_->procs) n += pr.ran && pr.state == process_state::running;
        return n;
    }
    void set_state(int pid, process_state st, int code, std::optional<timestamp> ended_at = {}) {
        std::lock_guard g(s_->m);
        auto& pr = s_->procs.at(pid);
        pr.state = st;
        pr.exit_code = code;
        pr.ended_at = ended_at;
    }

    std::shared_ptr<state> s_;
};

static_assert(kugetsu::spawner<fake_spawner>);

} // namespace kugetsu
