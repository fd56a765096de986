// kugetsu/timeline.hpp: a HOME's history drawn as an SVG timeline: one lane per slot, the
// cap line, each run of each task a bar labelled with its task, failures and timeouts marked.
//
//   auto runs = kugetsu::timeline_runs(items, now, since);   // every run of every task
//   kugetsu::write_timeline_svg(os, runs, cap, "HOME /x");
//   kugetsu::replace_file("t.svg", text);                    // a reader never sees half of it
//
// Lanes are slots: the dev runs, by start time, each take the lowest lane free at its start
// (interval partitioning), so the number of lanes is the most runs that were live at once
// as recorded (a run is live from its start, when its session was written, to the end of its
// agent). Under the cap the lanes never exceed it; the cap line is drawn under lane `cap`,
// and a lane past it is a breach that the picture shows. The PM's runs have a lane of their
// own above (it takes no slot). A run still running ends at `now`.
//
// Every bar is an SVG <rect class="run STATE"> with data-task, data-run, data-lane, data-start
// and data-end (RFC 3339) attributes and a <title>, so that a test (or a script) can read the
// picture back: STATE is completed, error, timeout, cancelled or running. The document is
// plain SVG 1.1: no script, no external resource; text is XML-escaped.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "detail/posix.hpp"
#include "json.hpp"
#include "types.hpp"

namespace kugetsu {

/// One run of a task, as drawn.
struct timeline_run {
    std::string task_id;
    int run = 1;                 ///< 1 for the first run; one more per restart or retry
    kugetsu::role role = role::dev;
    timestamp start{}, end{};
    std::string outcome;         ///< completed, error, timeout, cancelled, running
    std::optional<int> exit_code;
    std::string detail;          ///< last_error, if any
    int lane = 0;                ///< set by assign_lanes(): 0-based slot (dev), -1 (pm)
};

namespace detail {
inline std::string outcome_of(task_state st, const std::string& last_error, bool timed_out) {
    if (st == task_state::completed) return "completed";
    if (st == task_state::cancelled) return "cancelled";
    if (timed_out || last_error == "timeout") return "timeout";
    return "error";
}
} // namespace detail

/// Every run of `items` that started (the current one and those kept in `runs`), ending at
/// or after `since` if given (a running one counts as ending at `now`), oldest start first.
inline std::vector<timeline_run> timeline_runs(const std::vector<queue_item>& items, timestamp now,
                                               std::optional<timestamp> since = {}) {
    std::vector<timeline_run> out;
    for (const auto& it : items) {
        const int first = it.restarts + 1 - static_cast<int>(it.runs.size());
        for (std::size_t k = 0; k < it.runs.size(); ++k) {
            const auto& r = it.runs[k];
            if (!r.started_at) continue;
            timeline_run t{it.id, first + static_cast<int>(k), it.role, *r.started_at,
                           std::max(*r.started_at, r.finished_at.value_or(*r.started_at)),
                           detail::outcome_of(r.state, r.last_error, false), r.exit_code, r.last_error, 0};
            out.push_back(std::move(t));
        }
        if (it.started_at && (it.state == task_state::running || is_final(it.state))) {
            const bool running = it.state == task_state::running;
            timeline_run t{it.id, it.restarts + 1, it.role, *it.started_at,
                           std::max(*it.started_at, running ? now : it.finished_at.value_or(*it.started_at)),
                           running ? "running" : detail::outcome_of(it.state, it.last_error, it.stop_reason == stop_reason::timeout),
                           it.exit_code, it.last_error, 0};
            out.push_back(std::move(t));
        }
    }
    if (since) std::erase_if(out, [&](const timeline_run& r) { return r.end < *since; });
    std::sort(out.begin(), out.end(), [](const timeline_run& a, const timeline_run& b) {
        return a.start != b.start ? a.start < b.start : a.task_id < b.task_id;
    });
    return out;
}

/// Gives each dev run the lowest lane free at its start (a lane is free once its last run
/// ended, at or before the start); PM runs get lane -1. Returns the number of dev lanes.
inline int assign_lanes(std::vector<timeline_run>& runs) {
    std::vector<timestamp> busy_until;   // per lane
    for (auto& r : runs) {
        if (r.role == role::pm) {
            r.lane = -1;
            continue;
        }
        std::size_t lane = 0;
        while (lane < busy_until.size() && busy_until[lane] > r.start) ++lane;
        if (lane == busy_until.size()) busy_until.push_back(r.end);
        else busy_until[lane] = r.end;
        r.lane = static_cast<int>(lane);
    }
    return static_cast<int>(busy_until.size());
}

namespace detail {
/// Text for XML (content or an attribute): the five special characters escaped, control
/// characters (not allowed in XML 1.0) as spaces, but newline and tab.
inline std::string xml_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&apos;"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') out += ' ';
            else out += c;
        }
    }
    return out;
}
inline std::string svg_num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}
inline std::string span_text(duration d) {
    const auto s = std::chrono::duration_cast<std::chrono::milliseconds>(d).count() / 1000.0;
    char buf[32];
    if (s < 120) std::snprintf(buf, sizeof buf, "%.3g s", s);
    else if (s < 7200) std::snprintf(buf, sizeof buf, "%.3g min", s / 60);
    else std::snprintf(buf, sizeof buf, "%.3g h", s / 3600);
    return buf;
}
} // namespace detail

/// Writes the SVG (assigning lanes first). `cap`: HOME's cap, drawn as a line.
inline void write_timeline_svg(std::ostream& os, std::vector<timeline_run> runs, int cap, const std::string& title) {
    const int lanes = assign_lanes(runs);
    const bool pm = std::any_of(runs.begin(), runs.end(), [](auto& r) { return r.lane < 0; });
    const int rows = std::max(lanes, cap) + (pm ? 1 : 0);
    const double left = 90, right = 20, top = 46, lane_h = 22, width = 1100;
    const double plot_w = width - left - right;
    const double height = top + rows * lane_h + 60;
    timestamp t0 = runs.empty() ? timestamp{} : runs.front().start, t1 = t0;
    for (const auto& r : runs) {
        t0 = std::min(t0, r.start);
        t1 = std::max(t1, r.end);
    }
    const double span = std::max<double>(1.0, static_cast<double>((t1 - t0).count()));
    auto x = [&](timestamp t) { return left + plot_w * static_cast<double>((t - t0).count()) / span; };
    // Row of a lane: the PM's first (if any), then the slots 0, 1, ...
    auto y = [&](int lane) { return top + ((pm ? 1 : 0) + (lane < 0 ? -1 : lane)) * lane_h; };
    auto fill = [](const std::string& o) {
        return o == "completed" ? "#2ca02c" : o == "error" ? "#d62728" : o == "timeout" ? "#ff7f0e"
             : o == "cancelled" ? "#999999" : "#3b7dd8";
    };
    using detail::svg_num;
    using detail::xml_escape;
    os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
       << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << svg_num(width) << "\" height=\"" << svg_num(height)
       << "\" viewBox=\"0 0 " << svg_num(width) << " " << svg_num(height) << "\" font-family=\"sans-serif\" font-size=\"11\""
       << " data-cap=\"" << cap << "\" data-lanes=\"" << lanes << "\" data-runs=\"" << runs.size() << "\">\n"
       << "<rect x=\"0\" y=\"0\" width=\"" << svg_num(width) << "\" height=\"" << svg_num(height) << "\" fill=\"#ffffff\"/>\n"
       << "<text x=\"" << svg_num(left) << "\" y=\"18\" font-size=\"13\">" << xml_escape(title) << ": " << runs.size()
       << " runs, " << lanes << " slot" << (lanes == 1 ? "" : "s") << " used at most, cap " << cap << "</text>\n";
    // The legend.
    double lx = left;
    for (const char* o : {"completed", "error", "timeout", "cancelled", "running"}) {
        os << "<rect x=\"" << svg_num(lx) << "\" y=\"27\" width=\"10\" height=\"10\" fill=\"" << fill(o) << "\"/>"
           << "<text x=\"" << svg_num(lx + 14) << "\" y=\"36\">" << o << "</text>\n";
        lx += 90;
    }
    // Lane labels and guides.
    if (pm) os << "<text x=\"8\" y=\"" << svg_num(y(-1) + 15) << "\">pm</text>\n";
    for (int l = 0; l < std::max(lanes, cap); ++l)
        os << "<text x=\"8\" y=\"" << svg_num(y(l) + 15) << "\">slot " << l + 1 << "</text>"
           << "<line x1=\"" << svg_num(left) << "\" y1=\"" << svg_num(y(l) + lane_h) << "\" x2=\"" << svg_num(left + plot_w)
           << "\" y2=\"" << svg_num(y(l) + lane_h) << "\" stroke=\"#eeeeee\"/>\n";
    // The runs.
    for (const auto& r : runs) {
        const double rx = x(r.start), w = std::max(1.0, x(r.end) - rx), ry = y(r.lane) + 3, h = lane_h - 6;
        std::string tip = r.task_id + " run " + std::to_string(r.run) + ": " + r.outcome;
        if (r.exit_code) tip += ", exit " + std::to_string(*r.exit_code);
        tip += ", " + format_rfc3339(r.start) + " to " + format_rfc3339(r.end) + " (" + detail::span_text(r.end - r.start) + ")";
        if (!r.detail.empty()) tip += ": " + r.detail;
        os << "<rect class=\"run " << r.outcome << "\" data-task=\"" << xml_escape(r.task_id) << "\" data-run=\"" << r.run
           << "\" data-lane=\"" << r.lane << "\" data-start=\"" << format_rfc3339(r.start) << "\" data-end=\""
           << format_rfc3339(r.end) << "\" x=\"" << svg_num(rx) << "\" y=\"" << svg_num(ry) << "\" width=\"" << svg_num(w)
           << "\" height=\"" << svg_num(h) << "\" fill=\"" << fill(r.outcome) << "\""
           << (r.outcome == "timeout" || r.outcome == "error" ? " stroke=\"#000000\" stroke-width=\"1\"" : "") << "><title>"
           << xml_escape(tip) << "</title></rect>\n";
        if (w > 7.0 * static_cast<double>(r.task_id.size()) + 6)
            os << "<text x=\"" << svg_num(rx + 3) << "\" y=\"" << svg_num(ry + h - 4) << "\" fill=\"#ffffff\">"
               << xml_escape(r.task_id) << "</text>\n";
        if (r.outcome == "timeout" || r.outcome == "error")   // a mark at the end: a failure is seen however narrow
            os << "<text class=\"mark\" x=\"" << svg_num(rx + w + 1) << "\" y=\"" << svg_num(ry + h - 3) << "\" fill=\""
               << fill(r.outcome) << "\">" << (r.outcome == "timeout" ? "⏱" : "✗") << "</text>\n";
    }
    // The cap line: under lane `cap` (slots past it would be a breach).
    const double cy = y(cap - 1) + lane_h;
    os << "<line class=\"cap\" x1=\"" << svg_num(left - 4) << "\" y1=\"" << svg_num(cy) << "\" x2=\"" << svg_num(left + plot_w)
       << "\" y2=\"" << svg_num(cy) << "\" stroke=\"#d62728\" stroke-dasharray=\"6 3\"/>"
       << "<text x=\"" << svg_num(left + plot_w - 40) << "\" y=\"" << svg_num(cy + 12) << "\" fill=\"#d62728\">cap " << cap
       << "</text>\n";
    // The time axis.
    const double ay = top + rows * lane_h + 14;
    os << "<line x1=\"" << svg_num(left) << "\" y1=\"" << svg_num(ay) << "\" x2=\"" << svg_num(left + plot_w) << "\" y2=\""
       << svg_num(ay) << "\" stroke=\"#333333\"/>\n";
    for (int k = 0; k <= 5; ++k) {
        const auto t = t0 + duration(static_cast<duration::rep>(span * k / 5));
        os << "<text x=\"" << svg_num(x(t) - (k == 5 ? 60 : 0)) << "\" y=\"" << svg_num(ay + 14) << "\">"
           << (k == 0 ? format_rfc3339(t).substr(0, 19) + "Z" : "+" + detail::span_text(t - t0)) << "</text>\n";
    }
    os << "</svg>\n";
}

/// Writes `text` to `path` as a whole: written beside it (PATH.tmp, never following a link)
/// and renamed over it, so that a reader never sees half a picture; on failure PATH.tmp is
/// removed and PATH is left as it was. Handles EINTR and short writes; ENOSPC is an error.
inline std::error_code replace_file(const std::string& path, std::string_view text, mode_t mode = 0644) {
    const std::string tmp = path + ".tmp";
    std::error_code ec;
    {
        auto fd = detail::open_path(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode, ec);
        if (!ec) ec = detail::write_all(fd.get(), text);
        if (!ec) ec = fd.close();
    }
    if (!ec && ::rename(tmp.c_str(), path.c_str()) != 0) ec = detail::last_error();
    if (ec) ::unlink(tmp.c_str());
    return ec;
}

} // namespace kugetsu
