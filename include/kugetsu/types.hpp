// kugetsu/types.hpp: the vocabulary: task specs, queue items and their states, sessions,
// process identities and events.
//
// These are plain values. Validation of untrusted input lives in json.hpp (from_json) and
// in validate_* below; the dispatcher validates every spec it is given.
//
// Queue item states (each `next` is a state the dispatcher may write over it: can_follow()
// below is this table, and the simulator checks every write it explores against it):
//
//   state      | meaning                                      | next
//   -----------+----------------------------------------------+---------------------------------
//   (new)      |                                              | pending, waiting (enqueue);
//              |                                              | notified (start: claimed at birth)
//   waiting    | its --after tasks are not all completed, or  | pending; error (a dependency
//              | a retry's backoff is not over                | failed or is missing); cancelled
//   pending    | runnable, waiting for a slot                 | notified; cancelled
//   notified   | claimed by a start or a daemon pass, its     | running; pending (the attempt
//              | attempt counted; its agent not yet released  | failed or was cut short, attempts
//              |                                              | left); error; cancelled;
//              |                                              | completed (its starter died, the
//              |                                              | agent ran and ended: start and
//              |                                              | end recorded in one write)
//   running    | its agent was released to exec (a session)   | completed; error; cancelled
//              |                                              | (stopped by cancel); waiting (a
//              |                                              | retry); pending (it never ran)
//   completed  | the agent exited 0                           | pending, waiting (restart)
//   error      | exit != 0 or unknown, timeout, attempts out, | pending, waiting (restart)
//              | a failed dependency                          |
//   cancelled  | cancelled: before it ran, or stopped         | pending, waiting (restart)
//
// completed, error and cancelled are final (is_final): nothing but restart() changes them.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error.hpp"

namespace kugetsu {

/// Wall-clock time with microsecond resolution: what every clock returns and every record stores.
using timestamp = std::chrono::sys_time<std::chrono::microseconds>;
using duration = std::chrono::microseconds;

/// The current format version of every JSON record kugetsu writes.
inline constexpr int record_version = 1;

/// The session id of the project-manager agent: `pm-agent.json` in the file store.
inline constexpr std::string_view pm_session_id = "pm-agent";

enum class role { dev, pm };

/// Why a running task is being stopped (its agent is sent SIGTERM, then SIGKILL after the grace):
/// its timeout passed, or it was cancelled. Records write it as "", "timeout", "cancelled".
enum class stop_reason { none, timeout, cancelled };
/// (waiting is last so that the numbers of the others, which stores may keep, are unchanged.)
enum class task_state { pending, notified, running, completed, error, cancelled, waiting };

/// Every state, in the order status lists them.
inline constexpr task_state all_task_states[] = {task_state::waiting,   task_state::pending, task_state::notified,
                                                 task_state::running,   task_state::completed, task_state::error,
                                                 task_state::cancelled};

constexpr bool is_final(task_state s) noexcept {
    return s == task_state::completed || s == task_state::error || s == task_state::cancelled;
}

/// The states a new task is written in: the table's (new) row.
constexpr bool can_begin(task_state s) noexcept {
    return s == task_state::pending || s == task_state::waiting || s == task_state::notified;
}

/// Whether the dispatcher may write `to` over `from` (the table above; a state may always be
/// written over itself).
constexpr bool can_follow(task_state from, task_state to) noexcept {
    using enum task_state;
    if (from == to) return true;
    switch (from) {
    case waiting: return to == pending || to == error || to == cancelled;
    case pending: return to == notified || to == cancelled;
    case notified: return to == running || to == pending || to == error || to == cancelled || to == completed;
    case running: return to == completed || to == error || to == cancelled || to == waiting || to == pending;
    case completed:
    case error:
    case cancelled: return to == pending || to == waiting;
    }
    return false;
}

/// Who a process is, in a way that survives PID reuse: the pid together with the process's
/// start time (clock ticks after boot, /proc/PID/stat field 22) and the boot id. Two refs
/// denote the same process only if all three agree. A default ref (pid 0) denotes none.
struct process_ref {
    int pid = 0;
    std::uint64_t start_time = 0;
    std::string boot_id;
    explicit operator bool() const noexcept { return pid > 0; }
    friend bool operator==(const process_ref&, const process_ref&) = default;
};

/// What the caller asks for: the input of enqueue() and start().
struct task_spec {
    std::string id;
    std::vector<std::string> argv;
    kugetsu::role role = role::dev;
    std::optional<duration> timeout{}; ///< none: no timeout
    std::optional<int> max_attempts{}; ///< none: the dispatcher's default
    std::string repo{};                ///< source of the workspace (a git repository), may be empty
    std::string workdir{};             ///< where the agent runs when the workspace prepares none ("" = inherit)
    int priority = 0;                  ///< higher runs first among runnable tasks (-1000000..1000000)
    std::string group{};               ///< its group ("" = none): the group's cap and pause apply
    std::vector<std::string> after{};  ///< tasks that must have completed before it may run
    int retries = 0;                   ///< runs again after a non-zero exit or a timeout, this many times (0..100)
    std::optional<duration> backoff{}; ///< the delay before the first retry (doubling after; none: 1 s)
};

/// A run of a task that has been restarted: what its item said when it was restarted.
struct past_run {
    int attempts = 0;
    task_state state = task_state::completed;   ///< final: completed, error or cancelled
    process_ref process;               ///< its last agent, if one started
    timestamp enqueued_at{};
    std::optional<timestamp> started_at;
    std::optional<timestamp> finished_at;
    std::optional<int> exit_code;
    std::string last_error;
    friend bool operator==(const past_run&, const past_run&) = default;
};

/// The earlier runs an item keeps (restart() drops the oldest past this many).
inline constexpr std::size_t max_kept_runs = 100;

/// A task as the store keeps it.
struct queue_item {
    std::string id;
    std::vector<std::string> argv;
    kugetsu::role role = role::dev;
    std::optional<duration> timeout;
    int attempts = 0;
    int max_attempts = 3;
    task_state state = task_state::pending;
    std::string repo;
    std::string workdir;               ///< see task_spec::workdir
    int priority = 0;                  ///< see task_spec::priority
    std::string group;                 ///< see task_spec::group
    std::vector<std::string> after;    ///< see task_spec::after
    int retries = 0;                   ///< see task_spec::retries
    std::optional<duration> backoff;   ///< see task_spec::backoff
    int retried = 0;                   ///< retries made since it was enqueued or restarted (each a run, kept in `runs`)
    std::optional<timestamp> not_before;   ///< waiting for a retry: runnable from then on
    process_ref process;               ///< the agent (state running), or the last one
    process_ref owner;                 ///< the kugetsu process that marked it notified
    timestamp enqueued_at{};
    timestamp updated_at{};
    std::optional<timestamp> started_at;
    std::optional<timestamp> finished_at;
    std::optional<timestamp> term_sent_at;  ///< timeout: when SIGTERM was sent
    bool kill_sent = false;                 ///< timeout: SIGKILL was sent too
    kugetsu::stop_reason stop_reason = stop_reason::none;   ///< why it is being stopped
    std::optional<int> exit_code;
    std::string last_error;            ///< empty: none
    int restarts = 0;                  ///< times it was run again, by restart() or a retry (this is run restarts + 1)
    std::vector<past_run> runs;        ///< the earlier runs, oldest first (at most max_kept_runs)
    friend bool operator==(const queue_item&, const queue_item&) = default;
};

/// One live agent. Dev sessions are keyed by task id; the PM's by pm_session_id.
struct session {
    std::string id;
    kugetsu::role role = role::dev;
    std::string task_id;
    process_ref process;
    std::string workspace;             ///< the agent's working directory ("" = inherited)
    timestamp started_at{};
};

enum class event_type { task_queued, task_dequeued, task_started, task_completed, task_error, task_removed };

/// Why an event happened (event::reason). Records write its name ("exit_code", ...); none is
/// written as no field.
enum class event_reason {
    none,
    exit_code,            ///< task_error: the agent exited with a code other than 0 (exit_code)
    exit_unknown,         ///< task_error: the agent ended, its code unknown (its supervisor died)
    timeout,              ///< task_error: its timeout passed
    cancelled,            ///< task_error: cancelled; task_removed: removed while cancelled
    retry,                ///< task_queued: a failed run, retried (exit_code: that run's)
    restarted,            ///< task_queued: restart()
    dependency_failed,    ///< task_error: a task it runs --after failed, or is missing
    attempts_exhausted,   ///< task_error: its last attempt was cut short
    start_interrupted,    ///< task_error: its last attempt never ran (or a PM's start was cut short)
    quarantined,          ///< task_error: its record was unreadable, and is kept in quarantine
    pending,              ///< task_removed: removed while pending
    waiting,              ///< task_removed: removed while waiting
    completed,            ///< task_removed: removed after it completed
    error,                ///< task_removed: removed after it failed
};

/// A notification. Optional fields are written only when known. An event a store has
/// committed carries its sequence number: its stable id, unique in that store and growing
/// in commit order, with which a reader that may see an event twice (after a crash, events
/// are delivered at least once) drops the copy.
struct event {
    event_type type = event_type::task_queued;
    std::string task_id;
    timestamp time{};
    std::optional<int> attempt;
    std::optional<int> pid;
    std::optional<int> exit_code;
    event_reason reason = event_reason::none;
    std::uint64_t seq = 0;             ///< its number in the store; 0: not (yet) in a store
};

// ---------------------------------------------------------------------------------------
// names

constexpr std::string_view to_string(role r) noexcept { return r == role::pm ? "pm" : "dev"; }

constexpr std::string_view to_string(task_state s) noexcept {
    switch (s) {
    case task_state::pending: return "pending";
    case task_state::notified: return "notified";
    case task_state::running: return "running";
    case task_state::completed: return "completed";
    case task_state::error: return "error";
    case task_state::cancelled: return "cancelled";
    case task_state::waiting: return "waiting";
    }
    return "?";
}

constexpr std::string_view to_string(stop_reason r) noexcept {
    switch (r) {
    case stop_reason::none: return "";
    case stop_reason::timeout: return "timeout";
    case stop_reason::cancelled: return "cancelled";
    }
    return "?";
}

constexpr std::string_view to_string(event_reason r) noexcept {
    switch (r) {
    case event_reason::none: return "";
    case event_reason::exit_code: return "exit_code";
    case event_reason::exit_unknown: return "exit_unknown";
    case event_reason::timeout: return "timeout";
    case event_reason::cancelled: return "cancelled";
    case event_reason::retry: return "retry";
    case event_reason::restarted: return "restarted";
    case event_reason::dependency_failed: return "dependency_failed";
    case event_reason::attempts_exhausted: return "attempts_exhausted";
    case event_reason::start_interrupted: return "start_interrupted";
    case event_reason::quarantined: return "quarantined";
    case event_reason::pending: return "pending";
    case event_reason::waiting: return "waiting";
    case event_reason::completed: return "completed";
    case event_reason::error: return "error";
    }
    return "?";
}

constexpr std::string_view to_string(event_type t) noexcept {
    switch (t) {
    case event_type::task_queued: return "task_queued";
    case event_type::task_dequeued: return "task_dequeued";
    case event_type::task_started: return "task_started";
    case event_type::task_completed: return "task_completed";
    case event_type::task_error: return "task_error";
    case event_type::task_removed: return "task_removed";
    }
    return "?";
}

inline std::optional<role> parse_role(std::string_view s) noexcept {
    if (s == "dev") return role::dev;
    if (s == "pm") return role::pm;
    return std::nullopt;
}

inline constexpr event_reason all_event_reasons[] = {
    event_reason::none,      event_reason::exit_code,         event_reason::exit_unknown,
    event_reason::timeout,   event_reason::cancelled,         event_reason::retry,
    event_reason::restarted, event_reason::dependency_failed, event_reason::attempts_exhausted,
    event_reason::start_interrupted, event_reason::quarantined, event_reason::pending,
    event_reason::waiting,   event_reason::completed,         event_reason::error};

inline std::optional<event_reason> parse_event_reason(std::string_view s) noexcept {
    for (auto r : all_event_reasons)
        if (to_string(r) == s) return r;
    return std::nullopt;
}

/// task_removed's reason: the state the task was removed in (a final or queued one).
constexpr event_reason removed_in(task_state s) noexcept {
    switch (s) {
    case task_state::pending: return event_reason::pending;
    case task_state::waiting: return event_reason::waiting;
    case task_state::completed: return event_reason::completed;
    case task_state::error: return event_reason::error;
    case task_state::cancelled: return event_reason::cancelled;
    case task_state::notified:
    case task_state::running: break;   // never removed (remove() refuses them)
    }
    return event_reason::none;
}

inline std::optional<stop_reason> parse_stop_reason(std::string_view s) noexcept {
    for (auto r : {stop_reason::none, stop_reason::timeout, stop_reason::cancelled})
        if (to_string(r) == s) return r;
    return std::nullopt;
}

inline std::optional<task_state> parse_task_state(std::string_view s) noexcept {
    for (auto st : all_task_states)
        if (to_string(st) == s) return st;
    return std::nullopt;
}

inline std::optional<event_type> parse_event_type(std::string_view s) noexcept {
    for (auto t : {event_type::task_queued, event_type::task_dequeued, event_type::task_started,
                   event_type::task_completed, event_type::task_error, event_type::task_removed})
        if (to_string(t) == s) return t;
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// validation

/// Limits on what a spec may ask for.
inline constexpr std::size_t max_task_id_length = 128;
inline constexpr std::size_t max_argv_count = 4096;
inline constexpr std::size_t max_argv_bytes = 1 << 20;
inline constexpr int max_attempts_limit = 100;
inline constexpr int max_cap = 4096;
inline constexpr duration max_timeout = std::chrono::hours(24 * 365);
inline constexpr int max_priority = 1000000;         ///< priorities are -max_priority..max_priority
inline constexpr std::size_t max_after_count = 1024; ///< tasks one task may wait for
inline constexpr int max_retries = 100;
inline constexpr duration max_backoff = std::chrono::hours(24);
inline constexpr duration default_backoff = std::chrono::seconds(1);
inline constexpr duration max_retry_delay = std::chrono::hours(1);   ///< doubling stops here

/// The delay before retry number `n` (1, 2, ...): base, 2 base, 4 base, ... at most
/// max_retry_delay (or base, if larger).
constexpr duration retry_delay(std::optional<duration> backoff, int n) noexcept {
    const duration base = backoff.value_or(default_backoff);
    duration d = base;
    for (int i = 1; i < n && d < max_retry_delay; ++i) d *= 2;
    return d > max_retry_delay && base <= max_retry_delay ? max_retry_delay : d;
}

/// A task id: 1 to 128 of letters, digits, '.', '_', '-', not starting with '.'.
/// Such an id is safe as a file name: no '/', no "..", no NUL, no control character.
constexpr bool valid_task_id(std::string_view id) noexcept {
    if (id.empty() || id.size() > max_task_id_length || id.front() == '.') return false;
    for (char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

/// True if s is well-formed UTF-8 (no overlong forms, no surrogates). JSON records hold
/// text, so arguments must be UTF-8 to be stored without loss.
constexpr bool valid_utf8(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        int n = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) { ++i; continue; }
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
        else return false;
        if (i + static_cast<std::size_t>(n) >= s.size()) return false;
        for (int k = 1; k <= n; ++k) {
            const auto d = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
            if ((d & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += static_cast<std::size_t>(n) + 1;
    }
    return true;
}

inline std::error_code validate_argv(const std::vector<std::string>& argv) noexcept {
    if (argv.empty() || argv.front().empty() || argv.size() > max_argv_count)
        return errc::invalid_argv;
    std::size_t bytes = 0;
    for (const auto& a : argv) {
        if (a.find('\0') != std::string::npos || !valid_utf8(a)) return errc::invalid_argv;
        bytes += a.size() + 1;
    }
    if (bytes > max_argv_bytes) return errc::invalid_argv;
    return {};
}

inline std::error_code validate_timeout(const std::optional<duration>& t) noexcept {
    // Whole milliseconds, at least one: records keep timeouts in milliseconds.
    if (t && (*t < std::chrono::milliseconds(1) || *t > max_timeout || t->count() % 1000 != 0))
        return errc::invalid_limit;
    return {};
}

inline std::error_code validate_attempts(int n) noexcept {
    if (n < 1 || n > max_attempts_limit) return errc::invalid_limit;
    return {};
}

inline std::error_code validate_cap(int cap) noexcept {
    if (cap < 1 || cap > max_cap) return errc::invalid_limit;
    return {};
}

/// The limits a queue runs under. They are a property of the store (of HOME), written when
/// it is created, so that every process sharing it obeys the same values; a dispatcher's
/// options only initialise a store that has none yet (see basic_dispatcher).
struct limits {
    int cap = 3;                                        ///< live dev agents at most (1..4096)
    int max_attempts = 3;                               ///< default for tasks that name none (1..100)
    duration kill_grace = std::chrono::seconds(10);     ///< SIGTERM -> SIGKILL delay (0..1 year)

    /// errc::invalid_limit if a value is out of range.
    std::error_code validate() const noexcept {
        if (auto ec = validate_cap(cap)) return ec;
        if (auto ec = validate_attempts(max_attempts)) return ec;
        if (kill_grace.count() < 0 || kill_grace > max_timeout || kill_grace.count() % 1000 != 0)
            return errc::invalid_limit;
        return {};
    }
    friend bool operator==(const limits&, const limits&) = default;
};

/// A group name: what a task id may be (a new one: valid_new_task_id), at most 64 characters.
constexpr bool valid_group_name(std::string_view g) noexcept {
    return g.size() <= 64 && valid_task_id(g) && g.front() != '-';
}

/// Priority, group and dependencies (each a valid task id, none twice): errc::invalid_limit,
/// invalid_group or invalid_task_id naming the first that is wrong.
inline std::error_code validate_schedule_fields(int priority, std::string_view group,
                                                const std::vector<std::string>& after) noexcept {
    if (priority < -max_priority || priority > max_priority) return errc::invalid_limit;
    if (!group.empty() && !valid_group_name(group)) return errc::invalid_group;
    if (after.size() > max_after_count) return errc::invalid_limit;
    for (std::size_t i = 0; i < after.size(); ++i) {
        if (!valid_task_id(after[i])) return errc::invalid_task_id;
        for (std::size_t j = 0; j < i; ++j)
            if (after[j] == after[i]) return errc::invalid_task_id;
    }
    return {};
}

/// What a group may be told: its own cap (within HOME's) and whether it is paused.
struct group_policy {
    std::optional<int> cap;   ///< live dev agents of the group at most (1..4096); none: HOME's cap only
    bool paused = false;
    friend bool operator==(const group_policy&, const group_policy&) = default;
};

/// How the queue is scheduled besides the limits: paused or not, and the groups' caps and
/// pauses. Kept in the store with the limits, so that every process obeys the same.
struct queue_schedule {
    bool paused = false;                                      ///< the whole queue: no new dev starts
    std::vector<std::pair<std::string, group_policy>> groups; ///< sorted by name, no default entries

    /// The group's policy (a default one if it has none).
    group_policy group(std::string_view g) const {
        for (const auto& [name, p] : groups)
            if (name == g) return p;
        return {};
    }
    /// Sets a group's policy, keeping the list sorted and free of default entries.
    void set_group(const std::string& g, const group_policy& p) {
        auto at = std::lower_bound(groups.begin(), groups.end(), g, [](const auto& e, const std::string& k) { return e.first < k; });
        const bool found = at != groups.end() && at->first == g;
        if (p == group_policy{}) {
            if (found) groups.erase(at);
        } else if (found) {
            at->second = p;
        } else {
            groups.insert(at, {g, p});
        }
    }
    /// True if a dev task of group g may not start now.
    bool holds(std::string_view g) const { return paused || (!g.empty() && group(g).paused); }

    std::error_code validate() const noexcept {
        for (std::size_t i = 0; i < groups.size(); ++i) {
            const auto& [name, p] = groups[i];
            if (name.empty() || !valid_group_name(name)) return errc::invalid_group;
            if (i > 0 && !(groups[i - 1].first < name)) return errc::invalid_group;
            if (p.cap)
                if (auto ec = validate_cap(*p.cap)) return ec;
        }
        return {};
    }
    friend bool operator==(const queue_schedule&, const queue_schedule&) = default;
};

/// An id a new task may take: a valid_task_id() that does not start with '-', so that no
/// command line can mistake it for an option. (Older stores may hold such ids: they are
/// still read, and every command takes them after `--`.)
constexpr bool valid_new_task_id(std::string_view id) noexcept {
    return valid_task_id(id) && id.front() != '-';
}

/// Checks a spec before it enters the queue.
inline std::error_code validate(const task_spec& s) noexcept {
    if (!valid_new_task_id(s.id)) return errc::invalid_task_id;
    if (s.role == role::dev && s.id == pm_session_id) return errc::reserved_task_id;
    if (auto ec = validate_argv(s.argv)) return ec;
    if (auto ec = validate_timeout(s.timeout)) return ec;
    if (s.max_attempts)
        if (auto ec = validate_attempts(*s.max_attempts)) return ec;
    for (const std::string* path : {&s.repo, &s.workdir})
        if (path->size() > 4096 || path->find('\0') != std::string::npos || !valid_utf8(*path))
            return errc::invalid_record;
    if (auto ec = validate_schedule_fields(s.priority, s.group, s.after)) return ec;
    if (s.retries < 0 || s.retries > max_retries) return errc::invalid_limit;
    if (s.backoff && (s.backoff->count() < 0 || *s.backoff > max_backoff || s.backoff->count() % 1000 != 0))
        return errc::invalid_limit;
    for (const auto& a : s.after)
        if (a == s.id) return errc::dependency_cycle;
    if (s.role == role::pm && (!s.group.empty() || !s.after.empty())) return errc::invalid_transition;
    return {};
}

/// The key of the session an item's agent runs under.
inline std::string session_id_for(const queue_item& it) {
    return it.role == role::pm ? std::string(pm_session_id) : it.id;
}

} // namespace kugetsu
