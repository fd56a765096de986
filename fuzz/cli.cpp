// fuzz/cli.cpp: the kugetsu command's command line and environment (cli/options.hpp), parsed
// exactly as kugetsu.cpp parses them, without running any command.
//
// Input: fields separated by NUL bytes. The first eight are the values of KUGETSU_HOME, HOME,
// XDG_STATE_HOME, MAX_CONCURRENT_AGENTS, KUGETSU_MAX_ATTEMPTS, KUGETSU_KILL_GRACE,
// KUGETSU_TEST_NO_LOCK and KUGETSU_TEST_BARRIER (empty: unset); the rest are the arguments
// after argv[0].
//
// Checks: nothing crashes and nothing throws but the usage errors kugetsu.cpp turns into exit
// 64 or 65 (CLI::ParseError, cli::usage_error, kugetsu::error for an invalid --id); an
// accepted command line names exactly one command; accepted limits are in range (cap
// 1..max_cap, attempts 1..max_attempts_limit, kill grace 0..max_timeout, a timeout passes
// validate_timeout); the state directory is absolute; an enqueued or started task's id,
// given or generated, passes valid_task_id and is not reserved.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../cli/options.hpp"
#include "check.hpp"
#include "../cli/format.hpp"

namespace {

using namespace kugetsu;

constexpr std::array<const char*, 8> env_names = {
    "KUGETSU_HOME",         "HOME",               "XDG_STATE_HOME",       "MAX_CONCURRENT_AGENTS",
    "KUGETSU_MAX_ATTEMPTS", "KUGETSU_KILL_GRACE", "KUGETSU_TEST_NO_LOCK", "KUGETSU_TEST_BARRIER"};

std::string join(const std::vector<std::string>& args) {
    std::string s;
    for (const auto& a : args) s += (s.empty() ? "" : " ") + ("'" + a + "'");
    return s;
}

void check_spec(const cli::task_flags& f, bool is_start, const std::string& what) {
    task_spec s;
    try {
        s = f.spec();
    } catch (const cli::usage_error&) {   // --timeout
        return;
    } catch (const kugetsu::error& e) {
        KUGETSU_FUZZ_CHECK(e.code() == errc::invalid_task_id || e.code() == errc::reserved_task_id,
                           what + ": " + e.what());
        return;
    }
    KUGETSU_FUZZ_CHECK(valid_new_task_id(s.id), what + ": id " + s.id);
    KUGETSU_FUZZ_CHECK(s.role == role::pm || s.id != pm_session_id, what);
    KUGETSU_FUZZ_CHECK(is_start || s.role == role::dev, what);
    KUGETSU_FUZZ_CHECK(f.role == "dev" || f.role == "pm", what + ": role " + f.role);
    KUGETSU_FUZZ_CHECK(!validate_timeout(s.timeout), what);
    KUGETSU_FUZZ_CHECK(s.timeout.has_value() == !f.timeout.empty(), what);
    KUGETSU_FUZZ_CHECK(!s.argv.empty(), what + ": no command");
    KUGETSU_FUZZ_CHECK(!s.workdir.empty() && s.workdir.front() == '/', what);
    KUGETSU_FUZZ_CHECK(s.repo.empty() || s.repo.front() == '/', what);
    // What is left for the dispatcher to refuse is the command (NUL-free here, but maybe not
    // UTF-8, or an empty argv[0]) and paths it cannot store.
    const auto ec = validate(s);
    KUGETSU_FUZZ_CHECK(!ec || ec == errc::invalid_argv || ec == errc::invalid_record, what + ": " + ec.message());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::string> fields(1);
    for (std::size_t i = 0; i < size; ++i) {
        if (data[i] == 0) fields.emplace_back();
        else fields.back() += static_cast<char>(data[i]);
    }
    std::array<std::string, env_names.size()> env_values{};
    std::vector<std::string> args;
    for (std::size_t i = 0; i < fields.size(); ++i) {
        if (i < env_values.size()) env_values[i] = fields[i];
        else args.push_back(fields[i]);
    }
    const cli::environment env = [&](const char* name) -> const char* {
        for (std::size_t i = 0; i < env_names.size(); ++i)
            if (std::strcmp(name, env_names[i]) == 0) return env_values[i].empty() ? nullptr : env_values[i].c_str();
        KUGETSU_FUZZ_CHECK(false, std::string("reads an undeclared variable ") + name);
        return nullptr;
    };
    const std::string what = "kugetsu " + join(args);

    cli::command_line cl;
    std::vector<const char*> argv{"kugetsu"};
    for (const auto& a : args) argv.push_back(a.c_str());
    // What status prints of a command: one line, and never wider than asked.
    {
        const std::string shown = cli::shell_join(args);
        KUGETSU_FUZZ_CHECK(shown.find('\n') == std::string::npos && shown.find('\r') == std::string::npos,
                           what + ": a quoted command spans lines");
        for (std::size_t w : {1u, 10u, 57u})
            KUGETSU_FUZZ_CHECK(cli::text_width(cli::fit(shown, w)) <= w, what + ": fit() wider than " + std::to_string(w));
        KUGETSU_FUZZ_CHECK(cli::fit(shown, 0) == shown, what + ": fit(0) changed the text");
    }
    // main() refuses a word that names no command before CLI11 parses: CLI11 must never accept
    // a command line that this says has an unknown command.
    const auto unknown = cli::unknown_command(cl.app, args);
    try {
        cl.app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError&) {   // includes --help (CLI::CallForHelp) and --version
        return 0;
    }
    KUGETSU_FUZZ_CHECK(!unknown, what + ": parsed, yet \"" + unknown.value_or("") + "\" was called an unknown command");
    // Exactly one command was chosen: one of those command_line names (every one of them),
    // and CLI11 saw no other.
    int chosen = 0;
    for (const CLI::App* c :
         {cl.enqueue, cl.start, cl.daemon, cl.status, cl.wait, cl.cancel, cl.logs, cl.events, cl.reap, cl.config,
          cl.check, cl.restart, cl.retry, cl.remove, cl.clean, cl.timeline, cl.pause, cl.resume})
        chosen += bool(*c);
    KUGETSU_FUZZ_CHECK(chosen == 1, what + ": " + std::to_string(chosen) + " commands");
    KUGETSU_FUZZ_CHECK(cl.app.get_subcommands().size() == 1u,
                       what + ": CLI11 chose " + std::to_string(cl.app.get_subcommands().size()) + " commands");

    cli::globals g;
    try {
        g = cli::load_globals(cl.home, env);
    } catch (const cli::usage_error&) {
        return 0;
    }
    KUGETSU_FUZZ_CHECK(!g.home.empty() && g.home.front() == '/', what + ": home " + g.home);
    KUGETSU_FUZZ_CHECK(g.home == "/" || g.home.back() != '/', what + ": home " + g.home);
    KUGETSU_FUZZ_CHECK(g.opt.cap >= 1 && g.opt.cap <= max_cap, std::to_string(g.opt.cap));
    KUGETSU_FUZZ_CHECK(g.opt.max_attempts >= 1 && g.opt.max_attempts <= max_attempts_limit,
                       std::to_string(g.opt.max_attempts));
    KUGETSU_FUZZ_CHECK(g.opt.kill_grace.count() >= 0 && g.opt.kill_grace <= max_timeout &&
                           g.opt.kill_grace.count() % 1000 == 0,
                       std::to_string(g.opt.kill_grace.count()) + " us");
    KUGETSU_FUZZ_CHECK(!g.opt.validate(), "dispatcher_options refused");
    KUGETSU_FUZZ_CHECK(g.lock_enabled == (env_values[6] != "1"), "KUGETSU_TEST_NO_LOCK");
    KUGETSU_FUZZ_CHECK(g.barrier == env_values[7], "KUGETSU_TEST_BARRIER");
    // A limit the environment names is expected of HOME, with that value; one it does not is not.
    KUGETSU_FUZZ_CHECK(bool(g.expect.cap) == !env_values[3].empty() && (!g.expect.cap || *g.expect.cap == g.opt.cap),
                       "MAX_CONCURRENT_AGENTS expectation");
    KUGETSU_FUZZ_CHECK(bool(g.expect.max_attempts) == !env_values[4].empty() &&
                           (!g.expect.max_attempts || *g.expect.max_attempts == g.opt.max_attempts),
                       "KUGETSU_MAX_ATTEMPTS expectation");
    KUGETSU_FUZZ_CHECK(bool(g.expect.kill_grace) == !env_values[5].empty() &&
                           (!g.expect.kill_grace || *g.expect.kill_grace == g.opt.kill_grace),
                       "KUGETSU_KILL_GRACE expectation");

    if (*cl.enqueue) check_spec(cl.enqueue_flags, false, what);
    if (*cl.start) check_spec(cl.start_flags, true, what);
    return 0;
}
