// kugetsu/spawn/slot_file.hpp: an agent's slot file, RUN_DIR/<pid>-<start time>.slot: its
// name, the one record it holds, and both the writer (async-signal-safe: the supervisor and
// the held agent write it) and the strict parser of that record, in one place.
//
// THE SLOT FILE. The supervisor creates RUN_DIR/<agent pid>-<agent start time>.slot and takes
// an exclusive flock on it before the agent is forked; the agent inherits that open file (as
// descriptor 5, KUGETSU_SLOT_FD=5), so the lock is held exactly while the supervisor or the
// agent (or a descendant that keeps the descriptor) is alive, and the kernel releases it when
// the last of them dies, however it dies. The file holds one record: a line at offset 0 that
// replaces the one before (bytes after the first newline are left-overs, and ignored):
//   kugetsu-held 2\n            by the supervisor, before it forks the agent (never empty)
//   kugetsu-exec 2 US\n         by the agent, once it has the go-ahead, just before execve
//   kugetsu-noexec 2\n          by the agent, as it exits without running the program
//   kugetsu-exit 2 CODE T US\n  by the supervisor, once the agent has ended and before it
//                               reaps it (killed in between, it leaves a zombie whose code a
//                               subreaper records: ORPHANS in fork_spawner.hpp): CODE, T = timed
//                               out (0|1), US = when the end was seen (realtime microseconds)
//   kugetsu-exit 1 CODE T\n     by a kugetsu 0.1 supervisor (whose slot is empty before it)
// So fork_spawner::poll() from ANY process answers:
//   lock held                            -> running (also: a zombie not yet reaped); with a
//                                           held or noexec record, running with `held` set
//                                           (not released: not to be adopted as started)
//   lock free, exit record               -> exited, with the code, timed_out and (v2) end time
//   lock free, held or noexec            -> never_ran (the agent is dead: alive, it holds the lock)
//   lock free, exec (supervisor killed)  -> running while the agent's identity (pid, start time,
//                                           boot id) is alive, or while it is a zombie whose
//                                           parent is a live process other than init (a
//                                           subreaper that records it); else gone
//   lock free, empty (0.1), or no file   -> running while the identity is alive, else gone
// The slot file's last close is an inotify IN_CLOSE_WRITE on RUN_DIR: a daemon wakes on it.
// The file stays after the end (the caller may have committed a session naming the agent)
// until forget(), which the dispatcher calls once it has committed what happened (or for an
// agent it abandoned). sweep() removes the free ones no session names, and
// the temporary ones (.slot.<pid>.<n>) that supervisors killed during setup left behind.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <unistd.h>

#include "../detail/signal_safe.hpp"
#include "../types.hpp"

namespace kugetsu::detail {

/// Writes a slot record at offset 0, EINTR retried; false unless all of it was written.
inline bool put_record(int fd, const char* rec, std::size_t len) noexcept {
    ssize_t w;
    while ((w = ::pwrite(fd, rec, len, 0)) < 0 && errno == EINTR) {}
    return w == static_cast<ssize_t>(len);
}

inline constexpr char held_record[] = "kugetsu-held 2\n";
inline constexpr char noexec_record[] = "kugetsu-noexec 2\n";

/// "kugetsu-exec 2 US\n" into buf (at least 64 bytes); returns its length.
inline std::size_t exec_record(char* buf, std::int64_t us) noexcept {
    char* q = put_str(buf, "kugetsu-exec 2 ");
    q = put_uint(q, static_cast<std::uint64_t>(std::max<std::int64_t>(0, us)));
    q = put_str(q, "\n");
    return static_cast<std::size_t>(q - buf);
}

/// "kugetsu-exit 2 CODE T US\n" into buf (at least 64 bytes); returns its length.
inline std::size_t exit_record(char* buf, int code, bool timed_out, std::int64_t us) noexcept {
    char* q = put_str(buf, "kugetsu-exit 2 ");
    q = put_uint(q, static_cast<std::uint64_t>(std::clamp(code, 0, 255)));
    q = put_str(q, timed_out ? " 1 " : " 0 ");
    q = put_uint(q, static_cast<std::uint64_t>(std::max<std::int64_t>(0, us)));
    q = put_str(q, "\n");
    return static_cast<std::size_t>(q - buf);
}

/// A slot file's record (its first line), as parse_slot_record reads it.
struct slot_record {
    enum class kind {
        none,     ///< empty (a kugetsu 0.1 slot before its end), incomplete, or not a record
        held,     ///< "kugetsu-held 2": the agent was forked and held
        exec,     ///< "kugetsu-exec 2 US": the agent had the go-ahead and was about to exec
        noexec,   ///< "kugetsu-noexec 2": the agent exited without running the program
        exited,   ///< "kugetsu-exit 2 CODE T US" or (0.1) "kugetsu-exit 1 CODE T"
    };
    kind what = kind::none;
    int version = 0;
    int exit_code = -1;                ///< exited: 0-255
    bool timed_out = false;            ///< exited: the supervisor stopped it at its timeout
    std::optional<timestamp> at{};     ///< exec: when; exited (version 2): when it ended
};

/// Reads the record on the first line of `s` (up to its newline: what follows is ignored).
/// Strict: anything else, including a line without its newline, is kind::none. Never
/// allocates, never throws, whatever the bytes.
inline slot_record parse_slot_record(std::string_view s) noexcept {
    slot_record r;
    const auto nl = s.find('\n');
    if (nl == std::string_view::npos) return r;
    std::string_view line = s.substr(0, nl);
    auto eat = [&](std::string_view w) {
        if (line.substr(0, w.size()) != w) return false;
        line.remove_prefix(w.size());
        return true;
    };
    // Decimal digits, at most `max_digits` of them and then no other digit.
    auto number = [&](int max_digits, std::uint64_t& v) {
        v = 0;
        int digits = 0;
        while (!line.empty() && line.front() >= '0' && line.front() <= '9') {
            if (++digits > max_digits) return false;
            v = v * 10 + static_cast<std::uint64_t>(line.front() - '0');
            line.remove_prefix(1);
        }
        return digits > 0;
    };
    std::uint64_t v = 0;
    if (line == "kugetsu-held 2") {
        r.what = slot_record::kind::held;
        r.version = 2;
    } else if (line == "kugetsu-noexec 2") {
        r.what = slot_record::kind::noexec;
        r.version = 2;
    } else if (eat("kugetsu-exec 2 ")) {
        if (!number(18, v) || !line.empty()) return r;
        r.what = slot_record::kind::exec;
        r.version = 2;
        r.at = timestamp(duration(static_cast<std::int64_t>(v)));
    } else if (eat("kugetsu-exit ")) {
        const int version = eat("1 ") ? 1 : eat("2 ") ? 2 : 0;
        if (version == 0 || !number(3, v) || v > 255 || !eat(" ") || line.empty() ||
            (line.front() != '0' && line.front() != '1'))
            return r;
        const int code = static_cast<int>(v);
        const bool timed_out = line.front() == '1';
        line.remove_prefix(1);
        std::optional<timestamp> at;
        if (version == 2) {
            if (!eat(" ") || !number(18, v)) return r;
            at = timestamp(duration(static_cast<std::int64_t>(v)));
        }
        if (!line.empty()) return r;
        r.what = slot_record::kind::exited;
        r.version = version;
        r.exit_code = code;
        r.timed_out = timed_out;
        r.at = at;
    }
    return r;
}

/// Reads the record of the slot file open as `fd` (pread at offset 0, EINTR retried).
inline slot_record read_slot_record(int fd) noexcept {
    char buf[64];
    ssize_t n;
    while ((n = ::pread(fd, buf, sizeof buf, 0)) < 0 && errno == EINTR) {}
    return n > 0 ? parse_slot_record(std::string_view(buf, static_cast<std::size_t>(n))) : slot_record{};
}

/// An open slot file (not owned: the supervisor and the agent hold the descriptor for the
/// lock, and the agent across exec). Its record is written at offset 0 and replaces the one
/// before; every write is async-signal-safe and says whether all of it was written.
class slot_file {
public:
    /// The descriptor through which an agent holds its slot (KUGETSU_SLOT_FD).
    static constexpr int agent_fd = 5;

    explicit slot_file(int fd) noexcept : fd_(fd) {}
    int fd() const noexcept { return fd_; }

    /// "kugetsu-held 2": forked, waiting for the go-ahead (the supervisor, before the fork).
    bool write_held() const noexcept { return put_record(fd_, held_record, sizeof held_record - 1); }
    /// "kugetsu-exec 2 US": about to exec (the agent, with the go-ahead).
    bool write_exec(std::int64_t us) const noexcept {
        char rec[64];
        return put_record(fd_, rec, exec_record(rec, us));
    }
    /// "kugetsu-noexec 2": the agent exits without running the program.
    bool write_noexec() const noexcept { return put_record(fd_, noexec_record, sizeof noexec_record - 1); }
    /// "kugetsu-exit 2 CODE T US": the agent ended (its supervisor, or a subreaper).
    bool write_exit(int code, bool timed_out, std::int64_t us) const noexcept {
        char rec[64];
        return put_record(fd_, rec, exit_record(rec, code, timed_out, us));
    }
    slot_record read() const noexcept { return read_slot_record(fd_); }

    /// RUN_DIR/<pid>-<start>.slot.
    static std::string path(const std::string& run_dir, int pid, std::uint64_t start) {
        return run_dir + "/" + std::to_string(pid) + "-" + std::to_string(start) + ".slot";
    }
    /// The same path into `out` (room for run_dir and 48 more bytes), NUL-terminated, without
    /// allocating (the supervisor names its agent's slot once the agent exists).
    static void put_path(char* out, const char* run_dir, int pid, std::uint64_t start) noexcept {
        char* e = put_str(out, run_dir);
        e = put_str(e, "/");
        e = put_uint(e, static_cast<std::uint64_t>(pid));
        e = put_str(e, "-");
        e = put_uint(e, start);
        e = put_str(e, ".slot");
        *e = '\0';
    }
    /// RUN_DIR/.slot.<pid>.<n>: where a supervisor creates the slot before it knows its agent.
    static std::string temp_path(const std::string& run_dir, int pid, std::uint64_t n) {
        return run_dir + "/.slot." + std::to_string(pid) + "." + std::to_string(n);
    }

    /// "<pid>-<start time>.slot", both decimal.
    static bool parse_name(std::string_view name, int& pid, std::uint64_t& start) noexcept {
        constexpr std::string_view ext = ".slot";
        if (name.size() <= ext.size() || name.substr(name.size() - ext.size()) != ext) return false;
        name.remove_suffix(ext.size());
        const auto dash = name.find('-');
        if (dash == std::string_view::npos) return false;
        std::uint64_t p = 0;
        if (!digits(name.substr(0, dash), 10, p) || p == 0 || p > 0x7fffffff) return false;
        if (!digits(name.substr(dash + 1), 20, start)) return false;
        pid = static_cast<int>(p);
        return true;
    }

    /// ".slot.<pid>.<n>", as spawn() names a slot before its supervisor renames it.
    static bool is_temp_name(std::string_view name) noexcept {
        constexpr std::string_view head = ".slot.";
        if (name.substr(0, head.size()) != head) return false;
        name.remove_prefix(head.size());
        const auto dot = name.find('.');
        std::uint64_t v = 0;
        return dot != std::string_view::npos && digits(name.substr(0, dot), 10, v) && digits(name.substr(dot + 1), 20, v);
    }

private:
    static bool digits(std::string_view s, std::size_t max, std::uint64_t& v) noexcept {
        if (s.empty() || s.size() > max) return false;
        v = 0;
        for (char c : s) {
            if (c < '0' || c > '9') return false;
            const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
            if (v > (~std::uint64_t{0} - d) / 10) return false;
            v = v * 10 + d;
        }
        return true;
    }

    int fd_;
};

} // namespace kugetsu::detail
