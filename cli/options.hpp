// cli/options.hpp: what the kugetsu command accepts from its user, and nothing it does with
// it: the command line (CLI11), the environment's limits, numbers of seconds and task ids.
//
// kugetsu.cpp parses with these and then runs a command; fuzz/cli.cpp parses arbitrary
// command lines and environments with the same code and checks what comes out. Nothing here
// touches the state directory, and nothing reads the process environment directly: it is
// passed in as a function (name -> value or nullptr).
//
// Throws: CLI::ParseError (bad command line), usage_error (a bad value: exit 64),
// kugetsu::error (an invalid --id: exit 65), std::system_error (getcwd failed).
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <sys/random.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <kugetsu/dispatcher.hpp>
#include <kugetsu/types.hpp>
#include <kugetsu/version.hpp>

#include "format.hpp"

namespace kugetsu::cli {

/// A bad value on the command line or in the environment: exit 64, with this message.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The environment: a variable's value, or nullptr if unset.
using environment = std::function<const char*(const char*)>;

inline std::string current_dir() {
    std::string cwd(4096, '\0');
    if (!::getcwd(cwd.data(), cwd.size())) throw std::system_error(errno, std::system_category(), "getcwd");
    cwd.resize(std::strlen(cwd.c_str()));
    return cwd;
}

inline std::string absolute(const std::string& p) {
    if (p.empty() || p.front() == '/') return p;
    return current_dir() + "/" + p;
}

inline std::string default_home(const environment& env) {
    if (const char* x = env("XDG_STATE_HOME"); x && *x == '/') return std::string(x) + "/kugetsu";
    const char* h = env("HOME");
    if (!h || *h != '/') throw usage_error("no state directory: set --home, KUGETSU_HOME or HOME");
    return std::string(h) + "/.local/state/kugetsu";
}

/// The whole number in variable `name`, in lo..hi; `def` if unset or empty.
inline int env_int(const environment& env, const char* name, int def, int lo, int hi) {
    const char* v = env(name);
    if (!v || !*v) return def;
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(v, &end, 10);
    // strtol would skip leading blanks and take a '+': only plain digits, or '-' and digits.
    const bool plain = (*v >= '0' && *v <= '9') || (*v == '-' && v[1] >= '0' && v[1] <= '9');
    if (!plain || errno || *end || n < lo || n > hi)
        throw usage_error(std::string(name) + "=\"" + shown(v) + "\" is not a whole number in " + std::to_string(lo) +
                          ".." + std::to_string(hi));
    return static_cast<int>(n);
}

/// A whole number in lo..hi given as option `what` (digits, with '-' for a negative one).
inline int parse_int(const std::string& what, const std::string& v, int lo, int hi) {
    const auto env = [&](const char*) -> const char* { return v.c_str(); };
    try {
        return env_int(env, "V", lo, lo, hi);
    } catch (const usage_error&) {
        throw usage_error(what + " \"" + shown(v) + "\" is not a whole number in " + std::to_string(lo) + ".." + std::to_string(hi));
    }
}

/// A number of seconds (decimals allowed), rounded up to whole milliseconds.
inline duration parse_seconds(const std::string& what, const std::string& v, bool allow_zero = false) {
    char* end = nullptr;
    errno = 0;
    const double s = std::strtod(v.c_str(), &end);
    const double max_s = std::chrono::duration<double>(max_timeout).count();
    // strtod would also take leading blanks, a sign and hexadecimal: decimal digits only.
    const bool plain = !v.empty() && ((v[0] >= '0' && v[0] <= '9') || v[0] == '.') &&
                       v.find_first_of("xX") == std::string::npos;
    if (!plain || errno || *end || !std::isfinite(s) || s < 0 || (s == 0 && !allow_zero) || s > max_s)
        throw usage_error(what + " \"" + shown(v) + "\" is not a number of seconds in " + (allow_zero ? "[0, " : "(0, ") +
                          std::to_string(static_cast<long long>(max_s)) + "]");
    return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double>(s));
}

/// A duration: a whole number with a unit, s, m, h, d or w (90s, 15m, 12h, 7d, 2w), or a
/// number of seconds (decimals allowed, as parse_seconds), up to ten years.
inline duration parse_duration(const std::string& what, const std::string& v) {
    static constexpr std::pair<char, long long> units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 604800}};
    const auto bad = [&] {
        return usage_error(what + " \"" + shown(v) + "\" is not a duration (a number of seconds, or a whole number and a unit: "
                                  "90s, 15m, 12h, 7d, 2w)");
    };
    if (v.empty()) throw bad();
    for (const auto& [u, seconds] : units)
        if (v.back() == u) {
            const std::string digits = v.substr(0, v.size() - 1);
            if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) throw bad();
            const long long n = std::stoll(digits);
            if (n * seconds > 10LL * 365 * 86400) throw bad();
            return std::chrono::seconds(n * seconds);
        }
    if (v.find_first_not_of("0123456789.") != std::string::npos) throw bad();
    try {
        return parse_seconds(what, v, /*allow_zero=*/true);
    } catch (const usage_error&) {
        throw bad();
    }
}

struct globals {
    std::string home;
    dispatcher_options opt;          ///< the limits of a new HOME (environment, else defaults)
    limit_expectations expect;       ///< the limits the environment names: HOME's must agree
    bool lock_enabled = true;
    std::string barrier;
};

/// The state directory (absolute, no trailing '/') and the limits, from --home and the
/// environment. Says nothing and changes nothing: the caller warns about test hooks.
inline globals load_globals(const std::string& home_flag, const environment& env) {
    globals g;
    std::string home = home_flag;
    if (home.empty())
        if (const char* h = env("KUGETSU_HOME"); h && *h) home = h;
    if (home.empty()) home = default_home(env);
    g.home = absolute(home);
    while (g.home.size() > 1 && g.home.back() == '/') g.home.pop_back();
    g.opt.cap = env_int(env, "MAX_CONCURRENT_AGENTS", 3, 1, max_cap);
    g.opt.max_attempts = env_int(env, "KUGETSU_MAX_ATTEMPTS", 3, 1, max_attempts_limit);
    if (const char* k = env("KUGETSU_KILL_GRACE"); k && *k)
        g.opt.kill_grace = parse_seconds("KUGETSU_KILL_GRACE", k, /*allow_zero=*/true);
    auto set = [&](const char* name) {
        const char* v = env(name);
        return v && *v;
    };
    g.expect.cap_name = "MAX_CONCURRENT_AGENTS";
    g.expect.max_attempts_name = "KUGETSU_MAX_ATTEMPTS";
    g.expect.kill_grace_name = "KUGETSU_KILL_GRACE";
    if (set("MAX_CONCURRENT_AGENTS")) g.expect.cap = g.opt.cap;
    if (set("KUGETSU_MAX_ATTEMPTS")) g.expect.max_attempts = g.opt.max_attempts;
    if (set("KUGETSU_KILL_GRACE")) g.expect.kill_grace = g.opt.kill_grace;
    if (const char* t = env("KUGETSU_TEST_NO_LOCK"); t && std::string_view(t) == "1") g.lock_enabled = false;
    if (const char* b = env("KUGETSU_TEST_BARRIER"); b && *b) g.barrier = b;
    return g;
}

/// A task id nobody else will pick: t-<UTC time>-<random>.
inline std::string new_task_id() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
    unsigned char r[4] = {};
    if (::getrandom(r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
        std::random_device rd;
        for (auto& b : r) b = static_cast<unsigned char>(rd());
    }
    char hex[9];
    std::snprintf(hex, sizeof hex, "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
    return std::string("t-") + stamp + "-" + hex;
}

/// The flags of enqueue and start.
struct task_flags {
    std::string id;
    std::string timeout;
    std::string worktree;
    std::string role = "dev";
    std::string priority;
    std::string group;
    std::vector<std::string> after;
    std::string retries;
    std::string backoff;
    std::vector<std::string> argv;
    const CLI::Option* id_option = nullptr;

    /// The spec they ask for. Throws kugetsu::error (invalid or reserved --id) or usage_error
    /// (--timeout); other invalid fields (argv) are left to the dispatcher to refuse.
    task_spec spec() const {
        task_spec s;
        s.id = id_option && id_option->count() ? id : new_task_id();   // an explicit "" is refused
        s.argv = argv;
        s.role = role == "pm" ? role::pm : role::dev;
        if (!timeout.empty()) s.timeout = parse_seconds("--timeout", timeout);
        if (!worktree.empty()) s.repo = absolute(worktree);
        s.workdir = current_dir();
        if (!priority.empty()) s.priority = parse_int("--priority", priority, -max_priority, max_priority);
        if (!group.empty() && !valid_group_name(group))
            throw error(errc::invalid_group, "--group \"" + shown(group) + "\"");
        s.group = group;
        for (const auto& a : after) {
            if (!valid_task_id(a))
                throw error(errc::invalid_task_id, "--after \"" + shown(a) + "\"");
            if (std::find(s.after.begin(), s.after.end(), a) == s.after.end()) s.after.push_back(a);
        }
        if (!retries.empty()) s.retries = parse_int("--retries", retries, 0, max_retries);
        if (!backoff.empty()) {
            s.backoff = parse_seconds("--backoff", backoff, /*allow_zero=*/true);
            if (*s.backoff > max_backoff)
                throw usage_error("--backoff \"" + shown(backoff) + "\" is more than a day (86400 s)");
        }
        if (s.backoff && s.retries == 0) throw usage_error("--backoff needs --retries N (N > 0)");
        if (s.after.size() > max_after_count)
            throw usage_error("--after names " + std::to_string(s.after.size()) + " tasks (at most " +
                              std::to_string(max_after_count) + ")");
        if (auto ec = validate(s); ec == errc::invalid_task_id || ec == errc::reserved_task_id)
            throw error(ec, "--id \"" + shown(s.id) + "\"");
        if (std::find(s.after.begin(), s.after.end(), s.id) != s.after.end())
            throw error(errc::dependency_cycle, "--after \"" + shown(s.id) + "\" names the task itself");
        if (s.role == role::pm && !s.group.empty()) throw usage_error("--group: the PM agent belongs to no group");
        return s;
    }
};

inline void add_task_flags(CLI::App* c, task_flags& f, bool queued) {
    const bool with_role = !queued;
    f.id_option = c->add_option("--id", f.id, "Task id: 1-128 of [A-Za-z0-9._-], not starting with '.' or '-' (default: generated)");
    c->add_option("--timeout", f.timeout, "Stop the agent after this many seconds (SIGTERM, then SIGKILL)");
    c->add_option("--worktree", f.worktree, "Run the agent in a new git worktree of REPO (branch kugetsu/<id>)");
    c->add_option("--group", f.group, "Its group: the group's cap and pause apply (kugetsu config group G cap N)");
    if (queued) {
        c->add_option("--priority", f.priority, "Higher runs first (-1000000..1000000, default 0); equal: enqueue order");
        c->add_option("--after", f.after, "Run only once these tasks have completed (if one fails, this one ends "
                                          "error, dependency_failed); repeat or separate with commas")
            ->delimiter(',')
            ->allow_extra_args(false);   // one value (a comma list) per use: `--after a -- CMD` keeps its `--`
        c->add_option("--retries", f.retries, "Run it again after a non-zero exit or a timeout, up to N times "
                                              "(0..100, default 0: only failed starts are retried)");
        c->add_option("--backoff", f.backoff, "Seconds before the first retry, doubling for each next one up to "
                                              "an hour (default 1)");
    }
    if (with_role)
        c->add_option("--role", f.role, "dev (counts toward the cap) or pm (the one project-manager agent)")
            ->check(CLI::IsMember({"dev", "pm"}));
    c->add_option("command", f.argv, "The agent's command and arguments, after --")->required();
}

/// The command line: the CLI11 app and the values its options fill. After app.parse()
/// succeeds, exactly one subcommand was given (`*enqueue` etc. is true for it). Not movable:
/// the app points into it.
struct command_line {
    CLI::App app{"kugetsu: runs agents for queued tasks, never more at once than the cap.\n"
                 "Environment: KUGETSU_HOME (state directory), MAX_CONCURRENT_AGENTS (cap, default 3),\n"
                 "KUGETSU_MAX_ATTEMPTS (default 3), KUGETSU_KILL_GRACE (seconds, default 10).",
                 "kugetsu"};
    std::string home;
    task_flags enqueue_flags, start_flags;
    bool once = false, verbose = false;
    bool json = false;
    std::vector<std::string> wait_ids;
    std::string wait_timeout;
    std::string cancel_id;
    bool no_wait = false;
    std::string logs_id;
    bool follow_logs = false;
    bool follow_events = false;
    std::string events_since;
    bool quiet = false;
    std::vector<std::string> config_args;
    std::vector<std::string> restart_ids, remove_ids;
    std::vector<std::string> status_ids, status_states;
    bool retry_failed = false;
    bool start_wait = false;
    std::string clean_older_than;
    std::string timeline_since, timeline_out;
    std::vector<std::string> clean_states;
    std::string pause_group, resume_group;
    std::vector<std::string> status_groups;

    CLI::App* enqueue = nullptr;
    CLI::App* start = nullptr;
    CLI::App* daemon = nullptr;
    CLI::App* status = nullptr;
    CLI::App* wait = nullptr;
    CLI::App* cancel = nullptr;
    CLI::App* logs = nullptr;
    CLI::App* events = nullptr;
    CLI::App* reap = nullptr;
    CLI::App* config = nullptr;
    CLI::App* check = nullptr;
    CLI::App* restart = nullptr;
    CLI::App* retry = nullptr;
    CLI::App* remove = nullptr;
    CLI::App* clean = nullptr;
    CLI::App* timeline = nullptr;
    CLI::App* pause = nullptr;
    CLI::App* resume = nullptr;

    command_line() {
        app.require_subcommand(1);
        app.set_version_flag("--version", std::string("kugetsu ") + kugetsu::version, "Print the version and exit");
        app.add_option("--home", home, "State directory (default: $KUGETSU_HOME, else ${XDG_STATE_HOME:-~/.local/state}/kugetsu)");

        enqueue = app.add_subcommand("enqueue", "Add a pending task; the daemon starts it when a slot is free");
        add_task_flags(enqueue, enqueue_flags, /*queued=*/true);
        enqueue->add_flag("--json", json, "Print the task as one JSON object");
        start = app.add_subcommand("start", "Start an agent now if a slot is free (else exit 75, nothing recorded)");
        add_task_flags(start, start_flags, /*queued=*/false);
        start->add_flag("--wait", start_wait, "No free slot, or paused: wait until it can start (instead of exit 75)");
        start->add_flag("--json", json, "Print the task as one JSON object");

        daemon = app.add_subcommand("daemon", "Run the queue: start tasks whenever a slot frees or a task arrives");
        daemon->add_flag("--once", once, "One pass, then exit");
        daemon->add_flag("-v,--verbose", verbose, "Say what each pass did, on stderr");

        status = app.add_subcommand("status", "Live agents, counts per state, and the tasks (all, or those named), "
                                              "with state, attempts, PID, age and time");
        status->add_flag("--json", json, "As one JSON object");
        status->add_option("id", status_ids, "Only these tasks");
        status->add_option("--state", status_states, "Only tasks in this state (waiting, pending, notified, running, "
                                                     "completed, error, cancelled); repeat or separate with commas")
            ->delimiter(',')
            ->allow_extra_args(false);   // one value (a comma list) per use: `--after a -- CMD` keeps its `--`
        status->add_option("--group", status_groups, "Only tasks of this group; repeat or separate with commas")
            ->delimiter(',')
            ->allow_extra_args(false);   // one value (a comma list) per use: `--after a -- CMD` keeps its `--`

        wait = app.add_subcommand("wait", "Block until the tasks (default: all) are completed, error or cancelled; "
                                          "exit with the first one's status that did not complete (its exit code; "
                                          "124 timeout, 125 cancelled, 126 never started, 127 exit code unknown)");
        wait->add_option("id", wait_ids, "Task ids");
        wait->add_option("--timeout", wait_timeout, "Give up after this long (90s, 15m, 2h, or seconds): exit 75, naming "
                                                    "the tasks not yet final; the tasks go on");
        wait->add_flag("--json", json, "Print every task's state, exit code and status as one JSON object");

        cancel = app.add_subcommand("cancel", "Cancel a task; a running agent is stopped (SIGTERM, SIGKILL after the grace)");
        cancel->add_option("id", cancel_id, "Task id")->required();
        cancel->add_flag("--no-wait", no_wait, "Return once SIGTERM is sent");
        cancel->add_flag("--json", json, "Print the task as one JSON object");

        logs = app.add_subcommand("logs", "Print a task's output (its agent's stdout and stderr)");
        logs->add_option("id", logs_id, "Task id")->required();
        logs->add_flag("-f,--follow", follow_logs, "Keep printing until the task ends");

        events = app.add_subcommand("events", "Print the events, one JSON line each, numbered (\"seq\")");
        events->add_flag("-f,--follow", follow_events, "Keep printing new events until interrupted");
        events->add_option("--since", events_since, "Only the events after this number");

        reap = app.add_subcommand("reap", "Record the ends of agents that have exited (supervisors run this)");
        reap->add_flag("-q,--quiet", quiet, "Print nothing");
        reap->add_flag("--json", json, "Print what the pass did as one JSON object");

        config = app.add_subcommand("config", "Show HOME's limits and groups, or change one: cap N, max-attempts N, "
                                              "kill-grace S, group G cap N|none");
        config->add_option("setting", config_args, "cap N | max-attempts N | kill-grace SECONDS | group G cap N|none")
            ->expected(0, 4);
        config->add_flag("--json", json, "Print the limits and groups as one JSON object");

        check = app.add_subcommand("check", "Check HOME's database: SQLite's integrity check and every row");
        check->add_flag("--json", json, "Print the findings as one JSON object");

        restart = app.add_subcommand("restart", "Run finished tasks again under the same ids (fresh attempts; "
                                                "earlier runs kept); all or none");
        restart->add_option("id", restart_ids, "Task ids (completed, error or cancelled)")->required();
        restart->add_flag("--json", json, "Print the tasks as one JSON object");
        retry = app.add_subcommand("retry", "Run again every task that ended in error (as restart)");
        retry->add_flag("--failed", retry_failed, "Every task in state error (required)")->required();
        retry->add_flag("--json", json, "Print the tasks as one JSON object");
        remove = app.add_subcommand("remove", "Delete pending or finished tasks and their logs (events stay); "
                                              "all or none");
        remove->add_option("id", remove_ids, "Task ids (not notified or running)")->required();
        remove->add_flag("--json", json, "Print the tasks removed as one JSON object");
        clean = app.add_subcommand("clean", "Delete finished tasks (all, or by state and age) with their logs and "
                                            "events; none that a task not yet finished runs after");
        clean->add_option("--older-than", clean_older_than, "Only tasks that finished longer ago than this "
                                                            "(90s, 15m, 12h, 7d, 2w, or seconds)");
        clean->add_option("--state", clean_states, "Only tasks in this state (completed, error, cancelled); repeat or "
                                                   "separate with commas")
            ->delimiter(',')
            ->allow_extra_args(false);
        clean->add_flag("--json", json, "Print what was deleted as one JSON object");
        timeline = app.add_subcommand("timeline", "Draw HOME's history as an SVG: one lane per slot, the cap line, "
                                                  "each run labelled, failures and timeouts marked");
        timeline->add_option("-o,--output", timeline_out, "The SVG file to write (- for stdout)")->required();
        timeline->add_flag("--json", json, "Print the file and the number of runs as one JSON object");
        timeline->add_option("--since", timeline_since, "Only runs that ended after this: a time (RFC 3339, UTC) or "
                                                        "a duration ago (90s, 15m, 12h, 7d)");
        pause = app.add_subcommand("pause", "Start no new agents (the whole queue, or one group); running ones go on");
        pause->add_option("--group", pause_group, "Only this group");
        pause->add_flag("--json", json, "Print the schedule as one JSON object");
        resume = app.add_subcommand("resume", "Start agents again after pause (the whole queue, or one group)");
        resume->add_option("--group", resume_group, "Only this group");
        resume->add_flag("--json", json, "Print the schedule as one JSON object");
    }
    command_line(const command_line&) = delete;
    command_line& operator=(const command_line&) = delete;
};

} // namespace kugetsu::cli

namespace kugetsu::cli {

/// The word where a command was expected, if it names none (`kugetsu foo`): CLI11 would only
/// say that the argument was not expected. Options before it (--home DIR, -h) are skipped.
inline std::optional<std::string> unknown_command(const CLI::App& app, const std::vector<std::string>& args) {
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--home") {
            ++i;
            continue;
        }
        if (a.empty() || a.front() == '-') continue;   // --home=DIR, -h, --help, --version: CLI11's
        for (const CLI::App* c : app.get_subcommands([](const CLI::App*) { return true; }))
            if (c->get_name() == a) return std::nullopt;
        return a;
    }
    return std::nullopt;
}

/// "enqueue, start, ...": the commands, in the order of --help.
inline std::string command_names(const CLI::App& app) {
    std::string out;
    for (const CLI::App* c : app.get_subcommands([](const CLI::App*) { return true; }))
        out += (out.empty() ? "" : ", ") + c->get_name();
    return out;
}

} // namespace kugetsu::cli
