// kugetsu/sim/report.hpp: what a simulation prints: a trace (JSON lines), a summary of an
// exploration (JSON), a timeline picture (SVG), and the operation behind each step of a
// schedule. Use it to show a run to a person or to keep it as an artefact of a CI job.
//
// Everything here is deterministic: the same run gives byte-identical output (virtual time
// only, no wall clock, no addresses), except the "seconds" of a summary, which is the time
// the exploration took.
//
//   write_trace_jsonl  one object per trace entry {"step","time","actor","op","detail"}, then
//                      one per violation {"violation","detail","step"}
//   summary_json       an exploration as one object (see the function for its fields)
//   write_svg          one lane per agent over virtual time, and the live dev agents under
//                      them with the cap drawn; the part above the cap in red
//   step_ops           what each step of a schedule did ("store.list_sessions", "lock", ...)
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/enumerate.hpp>
#include <range/v3/view/join.hpp>
#include <range/v3/view/transform.hpp>
#include <range/v3/view/zip.hpp>

#include <kugetsu/json.hpp>
#include <kugetsu/timeline.hpp>

#include "explore.hpp"
#include "scenario.hpp"

namespace kugetsu::sim {

namespace detail {

inline std::string dump_line(const nlohmann::ordered_json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// The name of a schedule entry: the actor, "kill <actor>" for -(id + 1), or "agent <pid>
/// ends" for world::agent_choice(pid).
inline std::string schedule_entry_name(int e, const std::vector<std::string>& actors) {
    if (world::is_agent_choice(e)) return "agent " + std::to_string(e - world::agent_choice_base) + " ends";
    const int id = e < 0 ? -e - 1 : e;
    std::string name = id >= 0 && static_cast<std::size_t>(id) < actors.size() ? actors[static_cast<std::size_t>(id)]
                                                                                : "actor-" + std::to_string(id);
    return e < 0 ? "kill " + name : name;
}

/// A schedule as --replay takes it: "0,0,2,-3,1".
inline std::string schedule_text(const std::vector<int>& schedule) {
    return schedule | ranges::views::transform([](int e) { return std::to_string(e); }) | ranges::views::join(',') |
           ranges::to<std::string>();
}

using kugetsu::detail::xml_escape;   // (timeline.hpp)

/// A coordinate or a length, with one decimal (the same text on every platform).
inline std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    std::string s = buf;
    if (s == "-0.0") s = "0.0";
    return s;
}

inline double seconds_between(timestamp a, timestamp b) {
    return std::chrono::duration<double>(b - a).count();
}

} // namespace detail

/// Writes the trace of a run: one JSON object per line and per trace entry, then one per
/// violation. Requires: the run kept its trace (run_options::keep_trace, the default).
inline void write_trace_jsonl(std::ostream& os, const run_result& r) {
    for (const auto& t : r.trace) {
        nlohmann::ordered_json j;
        j["step"] = t.step;
        j["time"] = format_rfc3339(t.time);
        j["actor"] = t.actor;
        j["op"] = t.op;
        j["detail"] = t.detail;
        os << detail::dump_line(j) << '\n';
    }
    for (const auto& v : r.violations) {
        nlohmann::ordered_json j;
        j["violation"] = v.kind;
        j["detail"] = v.detail;
        j["step"] = v.step;
        os << detail::dump_line(j) << '\n';
    }
}

/// A counterexample as JSON: {"steps", "kind", "detail", "step", "schedule" (actor names, a
/// kill as "kill <name>"), "replay" (the schedule as --replay takes it), "seed"}.
inline nlohmann::json counterexample_json(const counterexample& c) {
    nlohmann::json names = nlohmann::json::array();
    for (int e : c.schedule) names.push_back(detail::schedule_entry_name(e, c.actors));
    return {{"steps", c.schedule.size()},
            {"kind", c.first.kind},
            {"detail", c.first.detail},
            {"step", c.first.step},
            {"schedule", std::move(names)},
            {"replay", detail::schedule_text(c.schedule)},
            {"seed", c.seed},
            {"minimal", c.minimal},
            {"shortest_of_its_steps", c.shortest_of_its_steps}};
}

/// The summary of an exploration: "design", "scenario", "cap", "tasks", "starters", "pm",
/// "enqueue_first", "faults", "timeout_seconds", "seed", "explore" (the mode), "peak_live",
/// "violations" (schedules that broke an invariant), "violations_by_kind", "schedules_explored",
/// "states_explored", "complete", "reduced" (exhaustive: with partial-order reduction), "lost_tasks", "duplicate_starts", "kills" (all three summed
/// over the schedules), "runs_without_daemon" (runs whose last daemon was killed past the
/// restart budget) and "stranded_tasks" (their unfinished tasks, summed; not lost), "seconds",
/// "threads" (worker threads; nothing else depends on them), "counterexample" (the shortest,
/// or null; "minimal": true when no schedule is shorter, from exhaustive search;
/// "shortest_of_its_steps": shrunk, and no schedule made of at most its own steps is
/// shorter) and
/// "shortest_by_kind".
inline nlohmann::json summary_json(const scenario& sc, const exploration& ex, std::uint64_t seed) {
    nlohmann::json by_kind = nlohmann::json::object();
    for (const auto& [k, n] : ex.by_kind) by_kind[k] = n;
    nlohmann::json shortest_by_kind = nlohmann::json::object();
    for (const auto& [k, c] : ex.shortest_by_kind)
        shortest_by_kind[k] = {{"steps", c.schedule.size()}, {"replay", detail::schedule_text(c.schedule)}};
    const fault_plan& f = sc.faults;
    nlohmann::json faults = {{"kill", f.kill},          {"exec", f.exec_failure}, {"crash", f.agent_crash},
                             {"hang", f.agent_hang},    {"pid_reuse", f.pid_reuse}, {"max_kills", f.kill_budget()}};
    return {{"scenario", sc.name},
            {"design", sc.design()},
            {"cap", sc.cap},
            {"tasks", sc.tasks},
            {"starters", sc.starters},
            {"pm", sc.pm},
            {"enqueue_first", sc.enqueue_first},
            {"faults", std::move(faults)},
            {"timeout_seconds", sc.timeout ? nlohmann::json(std::chrono::duration<double>(*sc.timeout).count())
                                           : nlohmann::json(nullptr)},
            {"seed", seed},
            {"explore", ex.mode},
            {"peak_live", ex.peak_live},
            {"violations", ex.violating},
            {"violations_by_kind", std::move(by_kind)},
            {"schedules_explored", ex.schedules},
            {"states_explored", ex.states},
            {"complete", ex.complete},
            {"reduced", ex.reduced},
            {"lost_tasks", ex.lost_tasks},
            {"duplicate_starts", ex.duplicate_starts},
            {"kills", ex.kills},
            {"runs_without_daemon", ex.runs_without_daemon},
            {"stranded_tasks", ex.stranded_tasks},
            {"seconds", ex.seconds},
            {"threads", ex.threads},
            {"counterexample", ex.shortest ? counterexample_json(*ex.shortest) : nlohmann::json(nullptr)},
            {"shortest_by_kind", std::move(shortest_by_kind)}};
}

/// What each step of `schedule` did: the operation the chosen actor performed there, as its
/// choice point names it ("store.list_sessions", "lock", "spawn t3", "store.commit"; "first
/// step" when an actor first runs); a kill as "kill before <op>". One replay; the world
/// records each step's op.
inline std::vector<std::string> step_ops(const scenario& sc, std::uint64_t seed, const std::vector<int>& schedule,
                                         run_options options = {}) {
    options.keep_trace = false;
    options.state_hash = false;
    const run_result r = replay(sc, seed, schedule, options);
    std::vector<std::string> ops(r.ops.begin(),
                                 r.ops.begin() + static_cast<std::ptrdiff_t>(std::min(r.ops.size(), schedule.size())));
    for (auto [e, op] : ranges::views::zip(schedule, ops))
        if (e < 0) op = "kill before " + op;
    return ops;
}

/// What the timeline's horizontal axis counts.
enum class svg_axis {
    steps,   ///< the schedule's steps (choice points): where a race is, step by step
    time,    ///< virtual time: how long agents ran
};

/// Writes a self-contained SVG timeline of a run: one lane per agent (dev agents blue, the
/// PM purple; an agent still running at the end reaches the end), labelled with its task,
/// pid and the actor that started it, over the schedule's steps or virtual time; under the
/// lanes the number of live dev agents as a step chart with the cap as a dashed line and the
/// part above the cap in red; and a red line, named, at the step (or instant) where each
/// kind of violation was first seen. Deterministic: the same run gives the same bytes.
inline void write_svg(std::ostream& os, const run_result& r, const std::string& title, svg_axis axis = svg_axis::time) {
    using detail::num;
    using detail::xml_escape;
    const bool by_steps = axis == svg_axis::steps;

    // Positions: steps, or seconds since r.begin. An agent that never ended runs to the end.
    auto at = [&](timestamp t, std::uint64_t step) {
        return by_steps ? static_cast<double>(step) : std::max(detail::seconds_between(r.begin, t), 0.0);
    };
    double end_s = at(r.end, r.steps);
    struct lane {
        const proc* p;
        double from, to;
        bool open;   // still running at the end
    };
    std::vector<lane> lanes;
    for (const auto& p : r.agents) {
        const bool open = p.status == proc_status::running || p.status == proc_status::held || p.ended == timestamp{};
        const double from = at(p.started, p.started_step);
        double to = open ? end_s : std::max(at(p.ended, p.ended_step), from);
        end_s = std::max(end_s, to);
        lanes.push_back({&p, from, to, open});
    }
    for (auto& l : lanes)
        if (l.open) l.to = end_s;
    const double span = std::max(end_s, 1.0) * 1.06;   // a margin on the right

    // The live dev agents over time: +1 at a start, -1 at an end (ends first at equal times).
    std::vector<std::pair<double, int>> changes;
    for (const auto& l : lanes) {
        if (l.p->role != role::dev) continue;
        changes.emplace_back(l.from, +1);
        if (!l.open) changes.emplace_back(l.to, -1);
    }
    std::sort(changes.begin(), changes.end());
    struct segment {
        double from, to;
        int live;
    };
    std::vector<segment> segs;
    int live = 0, chart_peak = 0;
    double t = 0;
    for (std::size_t i = 0; i < changes.size();) {
        const double at = changes[i].first;
        if (at > t) segs.push_back({t, at, live});
        while (i < changes.size() && changes[i].first == at) live += changes[i++].second;
        chart_peak = std::max(chart_peak, live);
        t = std::max(t, at);
    }
    segs.push_back({t, end_s, live});
    const int ymax = std::max({chart_peak, r.cap, r.peak_live}) + 1;

    // Geometry.
    const double width = 1000, left = 210, right = 30, plot_w = width - left - right;
    const bool dense = lanes.size() > 60;
    const double lane_h = dense ? 6 : 18, lane_gap = dense ? 1 : 4;
    const double lanes_top = 92;
    const double lanes_h = static_cast<double>(lanes.size()) * (lane_h + lane_gap);
    const double chart_top = lanes_top + lanes_h + 34, chart_h = 140;
    const double axis_y = chart_top + chart_h;
    const double height = axis_y + 64;
    auto x = [&](double s) { return left + s / span * plot_w; };
    auto y = [&](double n) { return axis_y - n / ymax * chart_h; };

    // Ticks: 1, 2, 5 x 10^k seconds (or steps), at most about ten.
    double tick = 1;
    for (double base = 1; span > tick * 10; base *= 10)
        for (double m : {1.0, 2.0, 5.0, 10.0})
            if (span > tick * 10) tick = base * m;

    int violations_cap = 0;
    for (const auto& v : r.violations) violations_cap += v.kind == "cap";
    std::string kinds;
    for (const auto& v : r.violations)
        if (kinds.find(v.kind) == std::string::npos) kinds += (kinds.empty() ? "" : ", ") + v.kind;

    os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
       << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\"" << num(height)
       << "\" viewBox=\"0 0 " << num(width) << ' ' << num(height) << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
       << "<rect x=\"0\" y=\"0\" width=\"" << num(width) << "\" height=\"" << num(height) << "\" fill=\"#ffffff\"/>\n";
    os << "<text x=\"" << num(left) << "\" y=\"24\" font-size=\"16\" font-weight=\"bold\">" << xml_escape(title)
       << "</text>\n";
    os << "<text x=\"" << num(left) << "\" y=\"44\" font-size=\"12\">"
       << xml_escape("design " + r.design + " \xc2\xb7 cap " + std::to_string(r.cap) + " \xc2\xb7 peak_live " +
                     std::to_string(r.peak_live) + " \xc2\xb7 " + std::to_string(lanes.size()) + " agents \xc2\xb7 " +
                     std::to_string(r.steps) + " steps \xc2\xb7 " +
                     (r.violations.empty() ? std::string("no violations")
                                           : std::to_string(r.violations.size()) + " violations (" + kinds + ")"))
       << "</text>\n";
    // Legend.
    const double ly = 60;
    os << "<rect x=\"" << num(left) << "\" y=\"" << num(ly - 9) << "\" width=\"12\" height=\"10\" fill=\"#3b7dd8\"/>"
       << "<text x=\"" << num(left + 16) << "\" y=\"" << num(ly) << "\">dev agent</text>\n"
       << "<rect x=\"" << num(left + 90) << "\" y=\"" << num(ly - 9) << "\" width=\"12\" height=\"10\" fill=\"#8e44ad\"/>"
       << "<text x=\"" << num(left + 106) << "\" y=\"" << num(ly) << "\">PM agent</text>\n"
       << "<rect x=\"" << num(left + 180) << "\" y=\"" << num(ly - 9)
       << "\" width=\"12\" height=\"10\" fill=\"#ffffff\" stroke=\"#555555\" stroke-dasharray=\"3,2\"/>"
       << "<text x=\"" << num(left + 196) << "\" y=\"" << num(ly) << "\">still running at the end</text>\n"
       << "<rect x=\"" << num(left + 340) << "\" y=\"" << num(ly - 9) << "\" width=\"12\" height=\"10\" fill=\"#d62728\"/>"
       << "<text x=\"" << num(left + 356) << "\" y=\"" << num(ly) << "\">live dev agents above the cap</text>\n";

    // Vertical grid and the time axis.
    os << "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n";
    for (double s = 0; s <= span + 1e-9; s += tick)
        os << "<line x1=\"" << num(x(s)) << "\" y1=\"" << num(lanes_top - 4) << "\" x2=\"" << num(x(s)) << "\" y2=\""
           << num(axis_y) << "\"/>\n";
    os << "</g>\n";
    os << "<line x1=\"" << num(left) << "\" y1=\"" << num(axis_y) << "\" x2=\"" << num(left + plot_w) << "\" y2=\""
       << num(axis_y) << "\" stroke=\"#333333\"/>\n";
    os << "<g text-anchor=\"middle\" fill=\"#333333\">\n";
    for (double s = 0; s <= span + 1e-9; s += tick) {
        char buf[32];
        std::snprintf(buf, sizeof buf, by_steps ? "%g" : "%g s", s);
        os << "<text x=\"" << num(x(s)) << "\" y=\"" << num(axis_y + 15) << "\">" << buf << "</text>\n";
    }
    os << "</g>\n";
    os << "<text x=\"" << num(left + plot_w / 2) << "\" y=\"" << num(axis_y + 34)
       << "\" text-anchor=\"middle\" fill=\"#333333\">"
       << (by_steps ? std::string("steps of the schedule (choice points)")
                    : "virtual time since " + xml_escape(format_rfc3339(r.begin)))
       << "</text>\n";
    // Where each kind of violation was first seen: a red line through lanes and chart.
    {
        std::set<std::string> marked;
        double last_label = -1e9;
        os << "<g fill=\"#d62728\">\n";
        for (const auto& v : r.violations) {
            if (!marked.insert(v.kind).second) continue;
            const double vx = x(at(v.time, v.step));
            os << "<line x1=\"" << num(vx) << "\" y1=\"" << num(lanes_top - 6) << "\" x2=\"" << num(vx) << "\" y2=\""
               << num(axis_y) << "\" stroke=\"#d62728\" stroke-width=\"1.5\"><title>"
               << xml_escape(v.kind + " at step " + std::to_string(v.step) + ": " + v.detail) << "</title></line>\n";
            const double ly2 = vx - last_label < 90 ? lanes_top - 2 : lanes_top - 12;   // staggered when close
            os << "<text x=\"" << num(vx + 3) << "\" y=\"" << num(ly2) << "\">"
               << xml_escape(v.kind + " (step " + std::to_string(v.step) + ")") << "</text>\n";
            last_label = vx;
        }
        os << "</g>\n";
    }

    // The lanes.
    os << "<g>\n";
    for (const auto& [i, l] : ranges::views::enumerate(lanes)) {
        const proc& p = *l.p;
        const double ty = lanes_top + static_cast<double>(i) * (lane_h + lane_gap);
        const bool pm = p.role == role::pm;
        const bool named = p.spawner >= 0 && static_cast<std::size_t>(p.spawner) < r.actor_names.size();
        const std::string label = p.task_id + " \xc2\xb7 pid " + std::to_string(p.ref.pid) +
                                  (named ? " \xc2\xb7 " + r.actor_names[static_cast<std::size_t>(p.spawner)] : std::string());
        std::string how;
        if (l.open) how = "still running at the end";
        else how = "exit " + std::to_string(p.exit_code);
        char when[64];
        std::snprintf(when, sizeof when, by_steps ? "steps %.0f to %.0f" : "%.3f s to %.3f s", l.from, l.to);
        const std::string tip = std::string(pm ? "PM" : "dev") + " agent " + label + (named ? " (started by it" : " (") +
                                (named ? ", attempt " : "attempt ") +
                                std::to_string(p.attempt) + "): " + when + ", " + how;
        if (!dense)
            os << "<text x=\"" << num(left - 8) << "\" y=\"" << num(ty + lane_h - 5)
               << "\" text-anchor=\"end\" fill=\"#222222\">" << xml_escape(label) << "</text>\n";
        const double w = std::max(x(l.to) - x(l.from), 2.0);
        os << "<rect x=\"" << num(x(l.from)) << "\" y=\"" << num(ty) << "\" width=\"" << num(w) << "\" height=\""
           << num(lane_h) << "\" rx=\"2\" fill=\"" << (pm ? "#8e44ad" : "#3b7dd8") << "\""
           << (p.exit_code != 0 && !l.open ? " stroke=\"#d62728\" stroke-width=\"2\"" : "")
           << "><title>" << xml_escape(tip) << "</title></rect>\n";
        if (l.open)
            os << "<rect x=\"" << num(x(l.to)) << "\" y=\"" << num(ty) << "\" width=\"" << num(x(span) - x(l.to))
               << "\" height=\"" << num(lane_h) << "\" fill=\"none\" stroke=\"" << (pm ? "#8e44ad" : "#3b7dd8")
               << "\" stroke-dasharray=\"3,2\"/>\n";
        else if (!dense && p.exit_code != 0)
            os << "<text x=\"" << num(x(l.to) + 4) << "\" y=\"" << num(ty + lane_h - 5) << "\" fill=\"#d62728\">exit "
               << p.exit_code << "</text>\n";
    }
    os << "</g>\n";

    // The live dev agents: the area under the cap, the area above it in red, the step line.
    os << "<text x=\"" << num(left - 8) << "\" y=\"" << num(chart_top - 10)
       << "\" text-anchor=\"end\" font-weight=\"bold\">live dev agents</text>\n";
    os << "<g>\n";
    for (const auto& s : segs) {
        if (s.to <= s.from || s.live <= 0) continue;
        const int under = std::min(s.live, r.cap);
        os << "<rect x=\"" << num(x(s.from)) << "\" y=\"" << num(y(under)) << "\" width=\"" << num(x(s.to) - x(s.from))
           << "\" height=\"" << num(y(0) - y(under)) << "\" fill=\"#3b7dd8\" fill-opacity=\"0.25\"/>\n";
        if (s.live > r.cap)
            os << "<rect x=\"" << num(x(s.from)) << "\" y=\"" << num(y(s.live)) << "\" width=\""
               << num(x(s.to) - x(s.from)) << "\" height=\"" << num(y(r.cap) - y(s.live))
               << "\" fill=\"#d62728\" fill-opacity=\"0.85\"><title>" << s.live << " live dev agents, cap " << r.cap
               << "</title></rect>\n";
    }
    std::string path;
    int prev = 0;
    path += "M" + num(x(0)) + "," + num(y(0));
    for (const auto& s : segs) {
        if (s.live != prev) path += " L" + num(x(s.from)) + "," + num(y(s.live));
        path += " L" + num(x(s.to)) + "," + num(y(s.live));
        prev = s.live;
    }
    os << "<path d=\"" << path << "\" fill=\"none\" stroke=\"#1f3f73\" stroke-width=\"1.5\"/>\n";
    os << "</g>\n";
    // The y axis: 0, the cap, the peak.
    os << "<line x1=\"" << num(left) << "\" y1=\"" << num(chart_top) << "\" x2=\"" << num(left) << "\" y2=\""
       << num(axis_y) << "\" stroke=\"#333333\"/>\n";
    os << "<g text-anchor=\"end\" fill=\"#333333\">\n";
    std::vector<int> levels{0};   // 0, the cap and the peak, those that do not overlap
    for (int n : {r.cap, chart_peak})
        if (std::all_of(levels.begin(), levels.end(), [&](int m) { return std::abs(y(n) - y(m)) >= 11; })) levels.push_back(n);
    for (int n : levels)
        os << "<text x=\"" << num(left - 6) << "\" y=\"" << num(y(n) + 4) << "\">" << n << "</text>\n";
    os << "</g>\n";
    os << "<line x1=\"" << num(left) << "\" y1=\"" << num(y(r.cap)) << "\" x2=\"" << num(left + plot_w) << "\" y2=\""
       << num(y(r.cap)) << "\" stroke=\"#d62728\" stroke-width=\"1.5\" stroke-dasharray=\"6,4\"/>\n";
    os << "<text x=\"" << num(left + plot_w) << "\" y=\"" << num(y(r.cap) - 4)
       << "\" text-anchor=\"end\" fill=\"#d62728\">cap " << r.cap << "</text>\n";
    if (violations_cap && chart_peak <= r.cap)   // the overlap happened within one instant
        os << "<text x=\"" << num(left + 4) << "\" y=\"" << num(chart_top + 12) << "\" fill=\"#d62728\">peak_live "
           << r.peak_live << " above the cap within one instant of virtual time</text>\n";
    os << "</svg>\n";
}

} // namespace kugetsu::sim
