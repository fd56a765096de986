// kugetsu/error.hpp: the library's error codes (`kugetsu::errc`) and their category.
//
// Every fallible kugetsu operation reports a std::error_code: system failures in
// std::system_category() carrying errno, library failures in kugetsu::category().
// The numeric values are stable ids, listed with their meaning in docs/errors.md.
// The throwing overloads throw kugetsu::error, a std::system_error whose what()
// also names the object involved (a task id, a file).
#pragma once

#include <string>
#include <system_error>
#include <type_traits>

namespace kugetsu {

enum class errc : int {
    // 1xx: bad input
    invalid_task_id = 101,   ///< id empty, too long, bad character, starts with '.' (or '-': a new task)
    invalid_argv = 102,      ///< empty argv, empty argv[0], or an argument containing NUL
    invalid_limit = 103,     ///< cap, attempts or timeout out of range
    invalid_record = 104,    ///< a JSON record with a missing, extra or wrong-typed field
    unsupported_version = 105, ///< a record written by an unknown format version
    reserved_task_id = 106,  ///< a dev task may not be called "pm-agent"
    invalid_group = 107,     ///< a group name that is not a valid id (at most 64 characters)
    dependency_cycle = 108,  ///< --after would make a task wait for itself
    // 2xx: state conflicts
    duplicate_task = 201,    ///< a task with this id already exists
    unknown_task = 202,      ///< no task with this id
    invalid_transition = 203, ///< the task is not in a state that allows the operation
    pm_already_running = 204, ///< a PM agent is already live
    task_active = 205,       ///< the task is taken or running: remove or restart it once it has ended
    // 3xx: failures of a step
    workspace_failed = 301,  ///< the workspace could not be prepared
    spawn_failed = 302,      ///< the agent could not be started (exec failed, no such program)
    attempts_exhausted = 303, ///< the task failed max_attempts times and is now `error`
    store_corrupt = 304,     ///< a state file could not be parsed (the message names it)
    lock_failed = 305,       ///< the critical-section lock could not be taken
    not_held = 306,          ///< the spawner has no held child with this pid
    unsafe_state = 307,      ///< a state directory or file is owned by another user or writable by others
    store_busy = 308,        ///< the store stayed locked by another process longer than its busy timeout
    limits_mismatch = 309,   ///< limits asked for (an environment variable) differ from the store's
};

namespace detail {
class errc_category final : public std::error_category {
public:
    const char* name() const noexcept override { return "kugetsu"; }
    std::string message(int v) const override {
        switch (static_cast<errc>(v)) {
        case errc::invalid_task_id:
            return "invalid task id (1-128 of [A-Za-z0-9._-], not starting with '.', nor with '-' for a new task)";
        case errc::invalid_argv: return "invalid command (argv empty, too large, or an argument with NUL or invalid UTF-8)";
        case errc::invalid_limit: return "limit out of range";
        case errc::invalid_record: return "invalid record";
        case errc::unsupported_version: return "unsupported record version";
        case errc::reserved_task_id: return "task id is reserved";
        case errc::invalid_group: return "invalid group name (1-64 of [A-Za-z0-9._-], not starting with '.' or '-')";
        case errc::dependency_cycle: return "the dependencies would form a cycle";
        case errc::duplicate_task: return "a task with this id already exists";
        case errc::unknown_task: return "no such task";
        case errc::invalid_transition: return "task is not in a state that allows this";
        case errc::pm_already_running: return "a PM agent is already running";
        case errc::task_active: return "the task is taken or running";
        case errc::workspace_failed: return "workspace could not be prepared";
        case errc::spawn_failed: return "agent could not be started";
        case errc::attempts_exhausted: return "all attempts failed";
        case errc::store_corrupt: return "state file is corrupt";
        case errc::lock_failed: return "lock could not be taken";
        case errc::not_held: return "no held child with this pid";
        case errc::unsafe_state: return "owned by another user or writable by group or others";
        case errc::store_busy: return "the store is busy (locked by another process past the busy timeout)";
        case errc::limits_mismatch: return "the limits asked for differ from the store's";
        }
        return "unknown kugetsu error " + std::to_string(v);
    }
};
} // namespace detail

/// The category of kugetsu::errc.
inline const std::error_category& category() noexcept {
    static const detail::errc_category c;
    return c;
}

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), category()};
}

/// The exception thrown by throwing overloads: the code, plus what it concerns.
class error : public std::system_error {
public:
    error(std::error_code ec, const std::string& what) : std::system_error(ec, what) {}
    explicit error(std::error_code ec) : std::system_error(ec) {}
};

namespace detail {
inline void throw_if(const std::error_code& ec, const std::string& what) {
    if (ec) throw kugetsu::error(ec, what);
}
inline std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }
} // namespace detail

} // namespace kugetsu

template <>
struct std::is_error_code_enum<kugetsu::errc> : std::true_type {};
