// kugetsu/watcher.hpp: watcher, what a daemon sleeps on: no polling interval, level-triggered.
//
// A watcher blocks until something that may change a dispatcher's decisions happens:
//   - a change in a watched directory (inotify): a task enqueued in HOME/queue, a session
//     removed from HOME/sessions (a slot freed by another process), a slot file released in
//     HOME/run (an agent's end, written by its supervisor);
//   - the death of a watched process (pidfd): a running agent (whose supervisor may be gone),
//     or the owner of a claimed task;
//   - a deadline (a timeout, or the end of a kill grace);
//   - a signal the watcher was asked to catch (signalfd): SIGTERM, SIGINT, SIGHUP.
//
// Use it level-triggered, so that no wake-up is lost:
//
//   for (;;) {
//       w.drain();                       // forget what happened so far: the pass sees it all
//       d.process_queue(ec);             // a change during the pass is queued for wait()
//       auto plan = d.next_wake(ec);
//       if (w.wait(plan.deadline, plan.owners, plan.agents, ec) == watcher::wake::signal) break;
//   }
//
// Names starting with '.' (the stores' temporary files) never wake a waiter. Not
// thread-safe; the descriptors are O_CLOEXEC.
#pragma once

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <poll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock/system_clock.hpp"
#include "detail/posix.hpp"
#include "detail/proc.hpp"
#include "types.hpp"

namespace kugetsu {

class watcher {
public:
    enum class wake {
        changed,     ///< a watched directory changed
        deadline,    ///< the deadline passed
        process,     ///< a watched process died
        signal,      ///< a caught signal arrived (last_signal())
    };

    /// Throws std::system_error if inotify is unavailable.
    watcher() : inotify_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
        if (!inotify_) throw std::system_error(detail::last_error(), "inotify_init1");
    }

    /// Watches DIR (created 0700 if missing) for the inotify events in `mask`; with `names`,
    /// only for those names in it (a name ending in '*' is a prefix). Returns the watch's
    /// index (0, 1, ...): bit i of changes() says it fired. A directory may be watched more
    /// than once, for other names or events: each watch has its own bit.
    int add(const std::string& dir, std::uint32_t mask, std::error_code& ec, std::vector<std::string> names = {}) {
        ec.clear();
        if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
            ec = detail::last_error();
            return -1;
        }
        // IN_MASK_ADD: a second watch of the same directory (the kernel gives it the same
        // descriptor) adds its events to the first one's instead of replacing them.
        const int wd = ::inotify_add_watch(inotify_.get(), dir.c_str(), mask | IN_ONLYDIR | IN_DONT_FOLLOW | IN_MASK_ADD);
        if (wd < 0) {
            ec = detail::last_error();
            return -1;
        }
        watches_.push_back({wd, mask, std::move(names)});
        return static_cast<int>(watches_.size()) - 1;
    }

    /// The watches that fired since the last drain() (bit i: watch i; all bits after an
    /// overflow of the kernel's queue).
    std::uint64_t changes() const noexcept { return changes_; }

    /// Blocks `signals` in the calling thread and delivers them to wait() instead. SIGCHLD
    /// among them ends a wait with wake::process (a child ended), never wake::signal.
    void catch_signals(const std::vector<int>& signals, std::error_code& ec) {
        ec.clear();
        sigset_t set;
        ::sigemptyset(&set);
        for (int s : signals) ::sigaddset(&set, s);
        if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) {
            ec = detail::last_error();
            return;
        }
        signals_ = detail::unique_fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
        if (!signals_) ec = detail::last_error();
    }

    /// Discards every change seen so far. Call it before a pass.
    void drain() noexcept {
        read_events();
        changes_ = 0;
    }

    /// Blocks until a change, the deadline, the death of one of `owners` or `agents`, or a
    /// caught signal. An owner that is already gone (or whose pid names another process
    /// now) wakes at once: its claim is to be recovered. An agent that cannot be watched
    /// (already gone, its pid reused, or a zombie that another process has to reap) is
    /// looked at again after 20 ms, then 40, 80, ... up to 1 s while that lasts: its end may
    /// already have happened without any event to come (an orphan that no longer holds its
    /// slot and exits between the pass that saw it alive and pidfd_open: a lost wake-up),
    /// and its slot may also stay held by its descendants, which would make waking at once a
    /// spin. ec: poll failed (the result is then `changed`, so the caller
    /// re-checks).
    wake wait(std::optional<timestamp> deadline, const std::vector<process_ref>& owners,
              const std::vector<process_ref>& agents, std::error_code& ec) {
        ec.clear();
        std::vector<detail::unique_fd> pidfds;
        bool unwatched = false;   // an agent that no pidfd can announce: look again (see above)
        auto watch = [&](const process_ref& p, bool wake_if_gone) {
            if (!p) return false;
            detail::unique_fd fd(static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)));
            if (!fd) {
                if (errno != ESRCH) return false;   // cannot watch it: a change or the deadline will do
                if (!wake_if_gone) unwatched = true;
                return wake_if_gone;
            }
            std::error_code pec;
            auto st = detail::read_proc_stat(p.pid, pec);
            if (pec) return false;
            const bool same = st && st->start_time == p.start_time && p.boot_id == detail::boot_id();
            // Gone, or a zombie that another process has to reap: nothing announces that reap
            // (a subreaper daemon records its exit, an init just reaps it).
            if (!same || st->state == 'Z') {
                if (!wake_if_gone) unwatched = true;
                return wake_if_gone;
            }
            pidfds.push_back(std::move(fd));
            return false;
        };
        for (const auto& p : owners)
            if (watch(p, true)) return wake::process;
        for (const auto& p : agents) watch(p, false);
        for (;;) {
            std::vector<pollfd> fds;
            fds.push_back({inotify_.get(), POLLIN, 0});
            if (signals_) fds.push_back({signals_.get(), POLLIN, 0});
            for (auto& f : pidfds) fds.push_back({f.get(), POLLIN, 0});
            int timeout = unwatched ? recheck_ms_ : -1;
            if (deadline) {
                const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - clock_.now());
                if (left.count() <= 0) return woke(wake::deadline);
                const int until = static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30));
                timeout = timeout < 0 ? until : std::min(timeout, until);
            }
            const int r = ::poll(fds.data(), fds.size(), timeout);
            if (r < 0) {
                if (errno == EINTR) continue;
                ec = detail::last_error();
                return wake::changed;
            }
            if (r == 0) {
                if (deadline && clock_.now() >= *deadline) return woke(wake::deadline);
                if (unwatched) {
                    recheck_ms_ = std::min(recheck_ms_ * 2, max_recheck_ms);
                    return wake::process;
                }
                continue;
            }
            std::size_t i = 1;
            if (signals_) {
                if (fds[1].revents & POLLIN) {
                    signalfd_siginfo si{};
                    bool child = false;
                    while (::read(signals_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
                        if (si.ssi_signo == SIGCHLD) {   // a child (an adopted orphan) ended
                            child = true;
                            continue;
                        }
                        last_signal_ = static_cast<int>(si.ssi_signo);
                        return woke(wake::signal);
                    }
                    if (child) return woke(wake::process);
                }
                ++i;
            }
            for (; i < fds.size(); ++i)
                if (fds[i].revents) return woke(wake::process);
            if ((fds[0].revents & POLLIN) && read_events()) return woke(wake::changed);
        }
    }

    /// The signal that ended the last wait() with wake::signal.
    int last_signal() const noexcept { return last_signal_; }

    /// changes(), then forgets them (the queued events stay for the next wait()).
    std::uint64_t take_changes() noexcept { return std::exchange(changes_, 0); }

private:
    /// A wake-up by an event: the next unwatched agent is looked at again soon.
    wake woke(wake w) noexcept {
        recheck_ms_ = min_recheck_ms;
        return w;
    }

    /// Reads every queued event; true if one of them concerns a name not starting with '.'
    /// (and one of its watch's names, if it has any). Records which watches fired.
    bool read_events() noexcept {
        bool relevant = false;
        alignas(inotify_event) char buf[16384];
        for (;;) {
            const ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            for (char* p = buf; p < buf + n;) {
                auto* e = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + e->len;
                // IN_Q_OVERFLOW: events were lost; treat as a change of everything.
                if (e->mask & IN_Q_OVERFLOW) {
                    relevant = true;
                    changes_ = ~std::uint64_t{0};
                    continue;
                }
                if (e->len > 0 && e->name[0] == '.') continue;
                for (std::size_t i = 0; i < watches_.size(); ++i) {
                    if (watches_[i].wd != e->wd || !(watches_[i].mask & e->mask)) continue;
                    if (!matches(watches_[i].names, e->len ? std::string_view(e->name) : std::string_view())) continue;
                    relevant = true;
                    if (i < 64) changes_ |= std::uint64_t{1} << i;
                }
            }
        }
        return relevant;
    }

    static bool matches(const std::vector<std::string>& names, std::string_view name) noexcept {
        if (names.empty()) return true;
        for (const auto& n : names) {
            if (!n.empty() && n.back() == '*' ? name.substr(0, n.size() - 1) == std::string_view(n).substr(0, n.size() - 1)
                                              : name == n)
                return true;
        }
        return false;
    }

    struct watch {
        int wd;
        std::uint32_t mask;
        std::vector<std::string> names;
    };
    std::vector<watch> watches_;
    std::uint64_t changes_ = 0;
    detail::unique_fd inotify_;
    detail::unique_fd signals_;
    system_clock clock_;   // deadlines are wall-clock timestamps, as the dispatcher's
    int last_signal_ = 0;
    static constexpr int min_recheck_ms = 20, max_recheck_ms = 1000;
    int recheck_ms_ = min_recheck_ms;
};

} // namespace kugetsu
