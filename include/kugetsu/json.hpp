// kugetsu/json.hpp: JSON for every record (queue item, session, event), with strict
// validation at the boundary, and RFC 3339 timestamps.
//
// Writing: nlohmann::json j = item;  (to_json found by ADL)
// Reading untrusted text: parse_item(text, ec, why) never throws; on failure ec is
// errc::invalid_record / errc::unsupported_version / errc::invalid_task_id ... and `why`
// names the field that was wrong. A record is rejected if any field is missing, has the
// wrong type or an out-of-range value, or if it has a field kugetsu does not know.
#pragma once

#include <climits>
#include <cstdio>
#include <ctime>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "types.hpp"

namespace kugetsu {

// ---------------------------------------------------------------------------------------
// RFC 3339 (UTC, microseconds): 2026-11-27T18:58:21.123456Z

inline std::string format_rfc3339(timestamp t) {
    using namespace std::chrono;
    const auto secs = floor<seconds>(t);
    const auto us = (t - secs).count();
    const std::time_t tt = secs.time_since_epoch().count();
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[80];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<long>(us));
    return buf;
}

/// Parses what format_rfc3339 writes, and also a fraction of 0 to 9 digits and "Z" or
/// "+00:00". Anything else: nullopt. A leap second (:60) is the first second of the next
/// minute; a time that would fall after year 9999 (9999-12-31T23:59:60Z) is refused, since
/// format_rfc3339 could not write it back in four digits.
inline std::optional<timestamp> parse_rfc3339(std::string_view s) noexcept {
    auto digits = [&](std::size_t pos, std::size_t n, int& out) {
        if (pos + n > s.size()) return false;
        int v = 0;
        for (std::size_t i = pos; i < pos + n; ++i) {
            if (s[i] < '0' || s[i] > '9') return false;
            v = v * 10 + (s[i] - '0');
        }
        out = v;
        return true;
    };
    int Y, M, D, h, m, sec;
    if (s.size() < 20 || !digits(0, 4, Y) || s[4] != '-' || !digits(5, 2, M) || s[7] != '-' ||
        !digits(8, 2, D) || s[10] != 'T' || !digits(11, 2, h) || s[13] != ':' ||
        !digits(14, 2, m) || s[16] != ':' || !digits(17, 2, sec))
        return std::nullopt;
    std::size_t pos = 19;
    long us = 0;
    if (pos < s.size() && s[pos] == '.') {
        ++pos;
        int n = 0;
        long frac = 0;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
            if (n < 6) frac = frac * 10 + (s[pos] - '0');
            ++n;
            ++pos;
        }
        if (n == 0 || n > 9) return std::nullopt;
        for (int i = n; i < 6; ++i) frac *= 10;
        us = frac;
    }
    const auto rest = s.substr(pos);
    if (rest != "Z" && rest != "+00:00") return std::nullopt;
    if (M < 1 || M > 12 || D < 1 || h > 23 || m > 59 || sec > 60) return std::nullopt;
    using namespace std::chrono;
    const year_month_day ymd{year{Y}, month{static_cast<unsigned>(M)}, day{static_cast<unsigned>(D)}};
    if (!ymd.ok()) return std::nullopt;
    const timestamp t{sys_days{ymd}.time_since_epoch() + hours{h} + minutes{m} + seconds{sec} + microseconds{us}};
    if (t >= timestamp{sys_days{year{10000} / January / 1}}) return std::nullopt;
    return t;
}

// ---------------------------------------------------------------------------------------
// writing

inline void to_json(nlohmann::json& j, const process_ref& p) {
    j = {{"pid", p.pid}, {"start_time", p.start_time}, {"boot_id", p.boot_id}};
}

namespace detail {
inline nlohmann::json opt_time(const std::optional<timestamp>& t) {
    return t ? nlohmann::json(format_rfc3339(*t)) : nlohmann::json(nullptr);
}
inline nlohmann::json opt_ref(const process_ref& p) {
    return p ? nlohmann::json(p) : nlohmann::json(nullptr);
}
} // namespace detail

inline void to_json(nlohmann::json& j, const queue_item& it) {
    j = {{"version", record_version},
         {"kind", "queue_item"},
         {"id", it.id},
         {"argv", it.argv},
         {"role", to_string(it.role)},
         {"timeout_ms", it.timeout ? nlohmann::json(it.timeout->count() / 1000) : nlohmann::json(nullptr)},
         {"attempts", it.attempts},
         {"max_attempts", it.max_attempts},
         {"state", to_string(it.state)},
         {"repo", it.repo},
         {"workdir", it.workdir},
         {"pid", it.process ? nlohmann::json(it.process.pid) : nlohmann::json(nullptr)},
         {"process", detail::opt_ref(it.process)},
         {"owner", detail::opt_ref(it.owner)},
         {"enqueued_at", format_rfc3339(it.enqueued_at)},
         {"updated_at", format_rfc3339(it.updated_at)},
         {"started_at", detail::opt_time(it.started_at)},
         {"finished_at", detail::opt_time(it.finished_at)},
         {"term_sent_at", detail::opt_time(it.term_sent_at)},
         {"kill_sent", it.kill_sent},
         {"stop_reason", to_string(it.stop_reason)},
         {"exit_code", it.exit_code ? nlohmann::json(*it.exit_code) : nlohmann::json(nullptr)},
         {"last_error", it.last_error}};
    // Only when set: the record of a task that uses none of them stays as it was.
    if (it.priority) j["priority"] = it.priority;
    if (!it.group.empty()) j["group"] = it.group;
    if (!it.after.empty()) j["after"] = it.after;
    if (it.retries) j["retries"] = it.retries;
    if (it.backoff) j["backoff_ms"] = it.backoff->count() / 1000;
    if (it.retried) j["retried"] = it.retried;
    if (it.not_before) j["not_before"] = format_rfc3339(*it.not_before);
    if (it.restarts) j["restarts"] = it.restarts;
    if (!it.runs.empty()) {
        auto& runs = j["runs"] = nlohmann::json::array();
        for (const auto& r : it.runs)
            runs.push_back({{"attempts", r.attempts},
                            {"state", to_string(r.state)},
                            {"process", detail::opt_ref(r.process)},
                            {"enqueued_at", format_rfc3339(r.enqueued_at)},
                            {"started_at", detail::opt_time(r.started_at)},
                            {"finished_at", detail::opt_time(r.finished_at)},
                            {"exit_code", r.exit_code ? nlohmann::json(*r.exit_code) : nlohmann::json(nullptr)},
                            {"last_error", r.last_error}});
    }
}

inline void to_json(nlohmann::json& j, const session& s) {
    j = {{"version", record_version},
         {"kind", "session"},
         {"id", s.id},
         {"role", to_string(s.role)},
         {"task_id", s.task_id},
         {"pid", s.process.pid},
         {"process", s.process},
         {"workspace", s.workspace},
         {"started_at", format_rfc3339(s.started_at)}};
}

inline void to_json(nlohmann::json& j, const event& e) {
    j = {{"type", to_string(e.type)}, {"task_id", e.task_id}, {"timestamp", format_rfc3339(e.time)}};
    if (e.seq) j["seq"] = e.seq;
    if (e.attempt) j["attempt"] = *e.attempt;
    if (e.pid) j["pid"] = *e.pid;
    if (e.exit_code) j["exit_code"] = *e.exit_code;
    if (e.reason != event_reason::none) j["reason"] = to_string(e.reason);
}

// ---------------------------------------------------------------------------------------
// strict reading

namespace detail {

/// The first `max` bytes of UTF-8 text s, cut before a character, not inside one.
inline std::string utf8_prefix(const std::string& s, std::size_t max) {
    if (s.size() <= max) return s;
    while (max > 0 && (static_cast<unsigned char>(s[max]) & 0xC0) == 0x80) --max;
    return s.substr(0, max);
}

/// Reads the fields of one JSON object, remembering which it used, so that unknown
/// fields can be refused. The first failure sticks: later reads are no-ops.
class strict_object {
public:
    strict_object(const nlohmann::json& j, std::error_code& ec, std::string& why)
        : j_(j), ec_(ec), why_(why) {
        if (!j.is_object()) fail(errc::invalid_record, "not a JSON object");
    }
    bool ok() const noexcept { return !ec_; }
    void fail(errc e, std::string why) {
        if (!ec_) {
            ec_ = e;
            why_ = std::move(why);
        }
    }
    const nlohmann::json* field(const char* name) {
        if (!ok()) return nullptr;
        used_.insert(name);
        auto it = j_.find(name);
        if (it == j_.end()) {
            fail(errc::invalid_record, std::string("missing field \"") + name + "\"");
            return nullptr;
        }
        return &*it;
    }
    /// A field that may be absent (nullptr then), as those later versions added.
    const nlohmann::json* optional_field(const char* name) {
        if (!ok()) return nullptr;
        used_.insert(name);
        auto it = j_.find(name);
        return it == j_.end() ? nullptr : &*it;
    }
    const nlohmann::json* nullable(const char* name) {
        auto* f = field(name);
        return (f && f->is_null()) ? nullptr : f;
    }
    std::string string(const char* name, std::size_t max = 1 << 20) {
        auto* f = field(name);
        if (!f) return {};
        if (!f->is_string()) return wrong(name, "a string"), std::string{};
        auto s = f->get<std::string>();
        if (s.size() > max || s.find('\0') != std::string::npos)
            return wrong(name, "a shorter string without NUL"), std::string{};
        return s;
    }
    template <class Int>
    Int integer(const nlohmann::json* f, const char* name, Int lo, Int hi) {
        if (!f) return lo;
        if (!f->is_number_integer()) return wrong(name, "an integer"), lo;
        bool in_range;
        Int v{};
        if (f->is_number_unsigned()) {
            const auto u = f->get<std::uint64_t>();
            in_range = !std::cmp_less(u, lo) && !std::cmp_greater(u, hi);
            v = static_cast<Int>(u);
        } else {
            const auto i = f->get<std::int64_t>();
            in_range = !std::cmp_less(i, lo) && !std::cmp_greater(i, hi);
            v = static_cast<Int>(i);
        }
        if (!in_range)
            return fail(errc::invalid_record, std::string("field \"") + name + "\" is out of range [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]"), lo;
        return v;
    }
    template <class Int>
    Int integer(const char* name, Int lo, Int hi) {
        return integer<Int>(field(name), name, lo, hi);
    }
    bool boolean(const char* name) {
        auto* f = field(name);
        if (!f) return false;
        if (!f->is_boolean()) return wrong(name, "true or false"), false;
        return f->get<bool>();
    }
    timestamp time(const nlohmann::json* f, const char* name) {
        if (!f) return {};
        if (!f->is_string()) return wrong(name, "an RFC 3339 string"), timestamp{};
        auto t = parse_rfc3339(f->get_ref<const std::string&>());
        if (!t) return wrong(name, "an RFC 3339 UTC time"), timestamp{};
        return *t;
    }
    timestamp time(const char* name) { return time(field(name), name); }
    std::optional<timestamp> opt_time(const char* name) {
        auto* f = nullable(name);
        if (!f || !ok()) return std::nullopt;
        return time(f, name);
    }
    void version(std::string_view kind) {
        auto* v = field("version");
        if (v && (!v->is_number_integer() || v->get<std::int64_t>() != record_version)) {
            fail(errc::unsupported_version, "field \"version\" is not " + std::to_string(record_version));
            return;
        }
        if (string("kind", 64) != kind && ok())
            fail(errc::invalid_record, "field \"kind\" is not \"" + std::string(kind) + "\"");
    }
    /// Refuses any field that was not read.
    void no_unknown_fields() {
        if (!ok()) return;
        for (auto it = j_.begin(); it != j_.end(); ++it)
            if (!used_.count(it.key()))
                return fail(errc::invalid_record, "unknown field \"" + utf8_prefix(it.key(), 64) + "\"");
    }
    void wrong(const char* name, const char* expected) {
        fail(errc::invalid_record, std::string("field \"") + name + "\" is not " + expected);
    }

private:
    const nlohmann::json& j_;
    std::error_code& ec_;
    std::string& why_;
    std::set<std::string, std::less<>> used_;
};

inline process_ref read_ref(const nlohmann::json* j, const char* name, std::error_code& ec, std::string& why) {
    process_ref p;
    if (!j || ec) return p;
    std::string inner_why;
    strict_object o(*j, ec, inner_why);
    p.pid = o.integer<int>("pid", 1, 4194304);
    p.start_time = o.integer<std::uint64_t>("start_time", 0, UINT64_MAX);
    p.boot_id = o.string("boot_id", 64);
    o.no_unknown_fields();
    if (ec) why = std::string("field \"") + name + "\": " + inner_why;
    return p;
}

inline std::optional<nlohmann::json> parse_text(std::string_view text, std::error_code& ec, std::string& why) {
    auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
        ec = errc::invalid_record;
        why = "not valid JSON";
        return std::nullopt;
    }
    return j;
}

} // namespace detail

/// Reads a queue item. On failure returns nullopt, sets ec and says why.
inline std::optional<queue_item> parse_item(const nlohmann::json& j, std::error_code& ec, std::string& why) {
    ec.clear();
    why.clear();
    detail::strict_object o(j, ec, why);
    o.version("queue_item");
    queue_item it;
    it.id = o.string("id", 4096);
    if (o.ok() && !valid_task_id(it.id)) o.fail(errc::invalid_task_id, "field \"id\" is not a valid task id");
    if (auto* a = o.field("argv")) {
        if (!a->is_array()) o.wrong("argv", "an array of strings");
        else
            for (auto& x : *a) {
                if (!x.is_string()) { o.wrong("argv", "an array of strings"); break; }
                it.argv.push_back(x.get<std::string>());
            }
        if (o.ok() && validate_argv(it.argv)) o.fail(errc::invalid_argv, "field \"argv\" is empty or holds NUL");
    }
    if (auto r = parse_role(o.string("role", 16))) it.role = *r;
    else if (o.ok()) o.wrong("role", "\"dev\" or \"pm\"");
    // As validate(): a dev task called pm-agent would share its session key with the PM.
    if (o.ok() && it.role == role::dev && it.id == pm_session_id)
        o.fail(errc::reserved_task_id, "field \"id\": a dev task may not be called \"pm-agent\"");
    if (auto* t = o.nullable("timeout_ms")) {
        const auto ms = o.integer<std::int64_t>(t, "timeout_ms", 1,
            std::chrono::duration_cast<std::chrono::milliseconds>(max_timeout).count());
        it.timeout = std::chrono::milliseconds(ms);
    }
    it.max_attempts = o.integer<int>("max_attempts", 1, max_attempts_limit);
    it.attempts = o.integer<int>("attempts", 0, max_attempts_limit);
    if (o.ok() && it.attempts > it.max_attempts) o.wrong("attempts", "at most max_attempts");
    if (auto s = parse_task_state(o.string("state", 16))) it.state = *s;
    else if (o.ok()) o.wrong("state", "a task state");
    it.repo = o.string("repo", 4096);
    it.workdir = o.string("workdir", 4096);
    const auto* pid = o.nullable("pid");
    it.process = detail::read_ref(o.nullable("process"), "process", ec, why);
    if (o.ok()) {
        const int p = pid ? o.integer<int>(pid, "pid", 1, 4194304) : 0;
        if (o.ok() && p != it.process.pid) o.wrong("pid", "the pid of \"process\"");
    }
    it.owner = detail::read_ref(o.nullable("owner"), "owner", ec, why);
    it.enqueued_at = o.time("enqueued_at");
    it.updated_at = o.time("updated_at");
    it.started_at = o.opt_time("started_at");
    it.finished_at = o.opt_time("finished_at");
    it.term_sent_at = o.opt_time("term_sent_at");
    it.kill_sent = o.boolean("kill_sent");
    const std::string stop = o.string("stop_reason", 64);
    if (o.ok()) {
        if (auto r = parse_stop_reason(stop)) it.stop_reason = *r;
        else o.wrong("stop_reason", "\"\", \"timeout\" or \"cancelled\"");
    }
    if (auto* e = o.nullable("exit_code")) it.exit_code = o.integer<int>(e, "exit_code", -1, 255);
    it.last_error = o.string("last_error", 65536);
    if (o.ok() && it.state == task_state::running && !it.process)
        o.fail(errc::invalid_record, "a running item has no \"process\"");
    if (auto* n = o.optional_field("priority")) it.priority = o.integer<int>(n, "priority", -max_priority, max_priority);
    if (auto* g = o.optional_field("group"); g && o.ok()) {
        if (!g->is_string() || !valid_group_name(g->get_ref<const std::string&>()))
            o.wrong("group", "a group name");
        else
            it.group = g->get<std::string>();
    }
    if (auto* a = o.optional_field("after"); a && o.ok()) {
        if (!a->is_array() || a->empty() || a->size() > max_after_count) {
            o.wrong("after", "a non-empty array of at most 1024 task ids");
        } else {
            for (auto& x : *a) {
                if (!x.is_string() || !valid_task_id(x.get_ref<const std::string&>())) {
                    o.wrong("after", "an array of task ids");
                    break;
                }
                it.after.push_back(x.get<std::string>());
            }
            if (o.ok() && validate_schedule_fields(it.priority, it.group, it.after))
                o.wrong("after", "a list of distinct task ids");
            if (o.ok() && std::find(it.after.begin(), it.after.end(), it.id) != it.after.end())
                o.fail(errc::dependency_cycle, "field \"after\" names the task itself");
        }
    }
    if (auto* n = o.optional_field("retries")) it.retries = o.integer<int>(n, "retries", 1, max_retries);
    if (auto* n = o.optional_field("backoff_ms"))
        it.backoff = std::chrono::milliseconds(o.integer<std::int64_t>(
            n, "backoff_ms", 0, std::chrono::duration_cast<std::chrono::milliseconds>(max_backoff).count()));
    if (auto* n = o.optional_field("retried")) it.retried = o.integer<int>(n, "retried", 1, max_retries);
    if (o.ok() && it.retried > it.retries) o.wrong("retried", "at most \"retries\"");
    if (auto* n = o.optional_field("not_before"); n && o.ok()) it.not_before = o.time(n, "not_before");
    if (o.ok() && it.role == role::pm && (!it.group.empty() || !it.after.empty()))
        o.fail(errc::invalid_record, "a PM task has no \"group\" or \"after\"");
    if (auto* n = o.optional_field("restarts")) it.restarts = o.integer<int>(n, "restarts", 1, INT_MAX);
    if (auto* runs = o.optional_field("runs"); runs && o.ok()) {
        if (!runs->is_array() || runs->size() > max_kept_runs || runs->size() > static_cast<std::size_t>(it.restarts))
            o.wrong("runs", "an array of at most max_kept_runs runs, and no more than \"restarts\"");
        else
            for (std::size_t i = 0; i < runs->size() && o.ok(); ++i) {
                std::error_code rec;
                std::string rwhy;
                detail::strict_object r((*runs)[i], rec, rwhy);
                past_run pr;
                pr.attempts = r.integer<int>("attempts", 0, max_attempts_limit);
                if (auto st = parse_task_state(r.string("state", 16)); st && is_final(*st)) pr.state = *st;
                else if (r.ok()) r.wrong("state", "a final task state");
                pr.process = detail::read_ref(r.nullable("process"), "process", rec, rwhy);
                pr.enqueued_at = r.time("enqueued_at");
                pr.started_at = r.opt_time("started_at");
                pr.finished_at = r.opt_time("finished_at");
                if (auto* e = r.nullable("exit_code")) pr.exit_code = r.integer<int>(e, "exit_code", -1, 255);
                pr.last_error = r.string("last_error", 65536);
                r.no_unknown_fields();
                if (rec) o.fail(errc::invalid_record, "field \"runs\"[" + std::to_string(i) + "]: " + rwhy);
                else it.runs.push_back(std::move(pr));
            }
    }
    o.no_unknown_fields();
    if (ec) return std::nullopt;
    return it;
}

inline std::optional<session> parse_session(const nlohmann::json& j, std::error_code& ec, std::string& why) {
    ec.clear();
    why.clear();
    detail::strict_object o(j, ec, why);
    o.version("session");
    session s;
    s.id = o.string("id", 4096);
    if (auto r = parse_role(o.string("role", 16))) s.role = *r;
    else if (o.ok()) o.wrong("role", "\"dev\" or \"pm\"");
    s.task_id = o.string("task_id", 4096);
    if (o.ok() && !valid_task_id(s.task_id)) o.fail(errc::invalid_task_id, "field \"task_id\" is not a valid task id");
    if (o.ok() && s.role == role::dev && s.task_id == pm_session_id)
        o.fail(errc::reserved_task_id, "field \"task_id\": a dev task may not be called \"pm-agent\"");
    if (o.ok() && s.id != (s.role == role::pm ? std::string(pm_session_id) : s.task_id))
        o.wrong("id", "the task id (dev) or \"pm-agent\" (pm)");
    const int pid = o.integer<int>("pid", 1, 4194304);
    s.process = detail::read_ref(o.field("process"), "process", ec, why);
    if (o.ok() && pid != s.process.pid) o.wrong("pid", "the pid of \"process\"");
    s.workspace = o.string("workspace", 4096);
    s.started_at = o.time("started_at");
    o.no_unknown_fields();
    if (ec) return std::nullopt;
    return s;
}

/// The largest sequence number an event may carry: exact in a double (JSON readers).
inline constexpr std::uint64_t max_event_seq = (std::uint64_t{1} << 53) - 1;

inline std::optional<event> parse_event(const nlohmann::json& j, std::error_code& ec, std::string& why) {
    ec.clear();
    why.clear();
    detail::strict_object o(j, ec, why);
    event e;
    if (auto t = parse_event_type(o.string("type", 32))) e.type = *t;
    else if (o.ok()) o.wrong("type", "an event type");
    e.task_id = o.string("task_id", 4096);
    if (o.ok() && !valid_task_id(e.task_id)) o.fail(errc::invalid_task_id, "field \"task_id\" is not a valid task id");
    e.time = o.time("timestamp");
    if (o.ok() && j.is_object()) {
        if (j.contains("seq")) e.seq = o.integer<std::uint64_t>("seq", 1, max_event_seq);
        if (j.contains("attempt")) e.attempt = o.integer<int>("attempt", 0, max_attempts_limit);
        if (j.contains("pid")) e.pid = o.integer<int>("pid", 1, 4194304);
        if (j.contains("exit_code")) e.exit_code = o.integer<int>("exit_code", -1, 255);
        if (j.contains("reason")) {
            const std::string r = o.string("reason", 64);
            if (auto known = parse_event_reason(r); known && *known != event_reason::none) e.reason = *known;
            else if (o.ok()) o.wrong("reason", "an event reason (exit_code, timeout, cancelled, ...)");
        }
    }
    o.no_unknown_fields();
    if (ec) return std::nullopt;
    return e;
}

/// The queue's schedule: {"paused": bool, "groups": {"NAME": {"cap": N|null, "paused": bool}}}.
inline void to_json(nlohmann::json& j, const queue_schedule& s) {
    j = {{"paused", s.paused}, {"groups", nlohmann::json::object()}};
    for (const auto& [name, p] : s.groups)
        j["groups"][name] = {{"cap", p.cap ? nlohmann::json(*p.cap) : nlohmann::json(nullptr)}, {"paused", p.paused}};
}

inline std::optional<queue_schedule> parse_schedule(const nlohmann::json& j, std::error_code& ec, std::string& why) {
    ec.clear();
    why.clear();
    detail::strict_object o(j, ec, why);
    queue_schedule s;
    s.paused = o.boolean("paused");
    if (auto* g = o.field("groups"); g && o.ok()) {
        if (!g->is_object() || g->size() > 4096) return o.wrong("groups", "an object of at most 4096 groups"), std::nullopt;
        for (auto it = g->begin(); it != g->end() && o.ok(); ++it) {
            if (!valid_group_name(it.key())) {
                o.fail(errc::invalid_group, "field \"groups\": \"" + detail::utf8_prefix(it.key(), 64) + "\" is not a group name");
                break;
            }
            std::error_code gec;
            std::string gwhy;
            detail::strict_object go(it.value(), gec, gwhy);
            group_policy p;
            if (auto* c = go.nullable("cap")) p.cap = go.integer<int>(c, "cap", 1, max_cap);
            p.paused = go.boolean("paused");
            go.no_unknown_fields();
            if (gec) o.fail(errc::invalid_record, "group \"" + it.key() + "\": " + gwhy);
            else s.set_group(it.key(), p);
        }
    }
    o.no_unknown_fields();
    if (ec) return std::nullopt;
    return s;
}
inline std::optional<queue_schedule> parse_schedule(std::string_view text, std::error_code& ec, std::string& why) {
    auto j = detail::parse_text(text, ec, why);
    return j ? parse_schedule(*j, ec, why) : std::nullopt;
}

template <class T>
using parser_fn = std::optional<T> (*)(const nlohmann::json&, std::error_code&, std::string&);

/// Text forms: parse the JSON (without exceptions), then the record.
inline std::optional<queue_item> parse_item(std::string_view text, std::error_code& ec, std::string& why) {
    auto j = detail::parse_text(text, ec, why);
    return j ? parse_item(*j, ec, why) : std::nullopt;
}
inline std::optional<session> parse_session(std::string_view text, std::error_code& ec, std::string& why) {
    auto j = detail::parse_text(text, ec, why);
    return j ? parse_session(*j, ec, why) : std::nullopt;
}
inline std::optional<event> parse_event(std::string_view text, std::error_code& ec, std::string& why) {
    auto j = detail::parse_text(text, ec, why);
    return j ? parse_event(*j, ec, why) : std::nullopt;
}

// std::string converts to both nlohmann::json and std::string_view: say which is meant.
inline std::optional<queue_item> parse_item(const std::string& text, std::error_code& ec, std::string& why) {
    return parse_item(std::string_view(text), ec, why);
}
inline std::optional<session> parse_session(const std::string& text, std::error_code& ec, std::string& why) {
    return parse_session(std::string_view(text), ec, why);
}
inline std::optional<event> parse_event(const std::string& text, std::error_code& ec, std::string& why) {
    return parse_event(std::string_view(text), ec, why);
}
inline std::optional<queue_item> parse_item(const char* text, std::error_code& ec, std::string& why) {
    return parse_item(std::string_view(text), ec, why);
}

// nlohmann's from_json hooks, for `j.get<queue_item>()`: they throw kugetsu::error.
inline void from_json(const nlohmann::json& j, queue_item& it) {
    std::error_code ec;
    std::string why;
    auto r = parse_item(j, ec, why);
    if (!r) throw error(ec, "queue item: " + why);
    it = std::move(*r);
}
inline void from_json(const nlohmann::json& j, session& s) {
    std::error_code ec;
    std::string why;
    auto r = parse_session(j, ec, why);
    if (!r) throw error(ec, "session: " + why);
    s = std::move(*r);
}
inline void from_json(const nlohmann::json& j, event& e) {
    std::error_code ec;
    std::string why;
    auto r = parse_event(j, ec, why);
    if (!r) throw error(ec, "event: " + why);
    e = std::move(*r);
}

} // namespace kugetsu
