// kugetsu/detail/proc.hpp: process identity from /proc: the start time of a pid and the
// boot id, so that a process_ref survives PID reuse and reboots. One parser of
// /proc/PID/stat serves both the allocating reader and the supervisor's async-signal-safe one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include "posix.hpp"
#include "signal_safe.hpp"

namespace kugetsu::detail {

struct proc_stat {
    char state = '?';              ///< R, S, D, Z (zombie), T, ...
    int ppid = 0;                  ///< the parent's pid (field 4); 0: outside our pid namespace
    std::uint64_t start_time = 0;  ///< clock ticks after boot (field 22)
};

/// The one parser of /proc/PID/stat ("pid (comm) S ppid ... starttime ..."): comm may hold
/// spaces and ')', so fields are counted after the last ')'. nullopt unless the text has the
/// state, the parent and field 22. Never allocates (async-signal-safe).
inline std::optional<proc_stat> parse_proc_stat(std::string_view text) noexcept {
    const auto close = text.rfind(')');
    if (close == std::string_view::npos || close + 2 >= text.size()) return std::nullopt;
    std::string_view rest = text.substr(close + 2);
    proc_stat st;
    st.state = rest.front();
    auto number = [](std::string_view s) {
        std::uint64_t v = 0;
        for (char c : s) {
            if (c < '0' || c > '9') break;
            v = v * 10 + static_cast<std::uint64_t>(c - '0');
        }
        return v;
    };
    // Field 3 is the state, field 4 the parent; the start time is field 22, i.e. the 20th
    // field of `rest`.
    for (int field = 3; field < 22; ++field) {
        const auto sp = rest.find(' ');
        if (sp == std::string_view::npos) return std::nullopt;
        rest.remove_prefix(sp + 1);
        if (field == 3) st.ppid = static_cast<int>(std::min<std::uint64_t>(number(rest), 0x7fffffff));
    }
    st.start_time = number(rest);
    return st;
}

/// Reads /proc/PID/stat. nullopt if there is no such process (ec clear) or on error (ec set;
/// errc::protocol_error if its text does not parse).
inline std::optional<proc_stat> read_proc_stat(int pid, std::error_code& ec) {
    ec.clear();
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    auto fd = open_path(path, O_RDONLY, 0, ec);
    if (ec) {
        if (ec == std::errc::no_such_file_or_directory || ec == std::errc::no_such_process) ec.clear();
        return std::nullopt;
    }
    const std::string text = read_all(fd.get(), ec, 4096);
    if (ec) {
        if (ec == std::errc::no_such_process) ec.clear();   // it died while we read
        return std::nullopt;
    }
    auto st = parse_proc_stat(text);
    if (!st) ec = std::make_error_code(std::errc::protocol_error);
    return st;
}

/// The start time (field 22) of `pid`, as read_proc_stat() reads it, without allocating
/// (async-signal-safe: the supervisor asks it of its agent); 0 on any failure.
inline std::uint64_t start_time_of(int pid) noexcept {
    char path[64];
    char* e = put_str(path, "/proc/");
    e = put_uint(e, static_cast<std::uint64_t>(pid));
    e = put_str(e, "/stat");
    *e = '\0';
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[4096];
    std::size_t got = 0;
    for (;;) {
        const ssize_t n = ::read(fd, buf + got, sizeof buf - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
        if (got == sizeof buf) break;
    }
    ::close(fd);
    const auto st = parse_proc_stat(std::string_view(buf, got));
    return st ? st->start_time : 0;
}

/// The kernel's boot id (/proc/sys/kernel/random/boot_id), read once.
inline const std::string& boot_id() {
    static const std::string id = [] {
        std::error_code ec;
        auto fd = open_path("/proc/sys/kernel/random/boot_id", O_RDONLY, 0, ec);
        if (ec) return std::string("unknown");
        std::string s = read_all(fd.get(), ec, 128);
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
        return ec || s.empty() ? std::string("unknown") : s;
    }();
    return id;
}

} // namespace kugetsu::detail
