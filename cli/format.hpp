// cli/format.hpp: how `kugetsu status` writes for people: durations in human units, a
// command with its quoting, text cut to a width with an ellipsis, the terminal's width and
// whether to colour. Pure functions (the terminal is asked only by terminal_width() and
// use_colour()), so the fuzzer and the tests can call them.
#pragma once

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <sys/ioctl.h>
#include <unistd.h>

#include <kugetsu/types.hpp>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/join.hpp>
#include <range/v3/view/transform.hpp>

namespace kugetsu::cli {

/// A value from the command line as a message may quote it: at most 160 bytes, control
/// characters, quotes, backslashes and bytes past ASCII as \xHH, so a message stays on one line.
inline std::string shown(std::string_view v) {
    std::string out;
    for (unsigned char c : v.substr(0, 160)) {
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else {
            out += static_cast<char>(c);
        }
    }
    return v.size() > 160 ? out + "..." : out;
}

/// "0s", "42s", "3m05s", "2h07m", "3d04h": two units at most, rounded down; "-" if negative.
inline std::string human_duration(duration d) {
    using namespace std::chrono;
    if (d.count() < 0) return "-";
    const auto s = duration_cast<seconds>(d).count();
    char buf[32];
    if (s < 60) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
    else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
    else if (s < 86400) std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
    else std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s % 86400 / 3600));
    return buf;
}

/// One argument as a POSIX shell would need it: as it is if it holds only safe characters,
/// else in single quotes (a ' as '\''). Control characters are shown as \xHH outside the
/// quotes' meaning, so that a line stays one line.
inline std::string shell_quote(std::string_view a) {
    bool safe = !a.empty();
    for (unsigned char c : a)
        if (!(std::isalnum(c) || std::string_view("@%+=:,./_-").find(static_cast<char>(c)) != std::string_view::npos))
            safe = false;
    std::string out;
    for (unsigned char c : a) {
        if (c < 0x20 || c == 0x7f) {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else if (c == '\'') {
            out += "'\\''";
        } else {
            out += static_cast<char>(c);
        }
    }
    return safe ? out : "'" + out + "'";
}

/// The strings of `r` (any range of strings), separated by `sep`.
template <class R>
std::string joined(R&& r, std::string_view sep) {
    return std::forward<R>(r) | ranges::views::join(sep) | ranges::to<std::string>();
}

inline std::string shell_join(const std::vector<std::string>& argv) {
    return joined(argv | ranges::views::transform(shell_quote), " ");
}

/// Columns `s` takes on a terminal: its UTF-8 code points (wide characters count one).
inline std::size_t text_width(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

/// `s` cut to `width` columns, its last one an ellipsis ("…") if it was longer; never cuts a
/// UTF-8 sequence. width 0: no limit.
inline std::string fit(std::string_view s, std::size_t width) {
    if (width == 0 || text_width(s) <= width) return std::string(s);
    std::string out;
    std::size_t cols = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if ((c & 0xC0) != 0x80) {
            if (cols + 1 == width) break;
            ++cols;
        }
        out += s[i];
    }
    return out + "\u2026";
}

/// `s` padded with spaces to `width` columns (not cut).
inline std::string pad(std::string_view s, std::size_t width) {
    std::string out(s);
    for (std::size_t w = text_width(s); w < width; ++w) out += ' ';
    return out;
}

/// The width to fit: the terminal's, if stdout is one; else $COLUMNS if it is a number;
/// else 0 (no limit: piped output is never cut).
inline std::size_t terminal_width(const char* columns_env) {
    struct winsize ws{};
    if (::isatty(STDOUT_FILENO) && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    if (columns_env && *columns_env) {
        char* end = nullptr;
        const long n = std::strtol(columns_env, &end, 10);
        if (*end == '\0' && n >= 20 && n <= 10000) return static_cast<std::size_t>(n);
    }
    return 0;
}

/// Colours: on a terminal, unless NO_COLOR is set and not empty (no-color.org).
inline bool use_colour(const char* no_color_env) {
    return ::isatty(STDOUT_FILENO) && !(no_color_env && *no_color_env);
}

/// The SGR colour of a state ("" for none).
inline const char* state_colour(task_state s) {
    switch (s) {
    case task_state::running: return "\033[36m";     // cyan
    case task_state::completed: return "\033[32m";   // green
    case task_state::error: return "\033[31m";       // red
    case task_state::cancelled: return "\033[33m";   // yellow
    default: return "";
    }
}

} // namespace kugetsu::cli
