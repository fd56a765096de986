// fuzz/import.cpp: a kugetsu 0.1 HOME made from the input, imported into a fresh sqlite_store by
// open_home_store() (import_file_home(), home.hpp).
//
// Input: text split into files by header lines (a line that starts with '@'):
//   @q NAME   queue/NAME (a task record)          @Q NAME   the same, writable by others (0666)
//   @s NAME   sessions/NAME (a session record)    @d NAME   queue/NAME is a directory
//   @e        events.jsonl (lines; appended)      @l NAME   queue/NAME is a symbolic link
// Bytes before the first header belong to events.jsonl; a file's content is every byte after
// its header line up to the newline before the next header. A NAME with '/' or NUL, empty,
// "." or ".." or over 100 bytes is replaced by x<n>.json; at most 16 files. queue/, sessions/,
// pending/ and active/ always exist (the last two empty, as 0.1 indexes). The HOME is made in
// /dev/shm when it is writable (tmpfs: no disk), else in TMPDIR.
//
// Checks: the import never crashes or throws, and succeeds; every record file is either
// imported (its task or session is in the store, equal to the record: every field) or in the
// quarantine table (source "queue/NAME", "sessions/NAME" or "events.jsonl line N") with a
// reason, as the strict parsers and the rules (a regular private file, named <id>.json;
// names starting with '.' are temporary files, neither) decide; nothing else is imported or
// quarantined; the events are the readable lines, in file order, numbered 1, 2, 3...; the
// report's counts agree; meta.imported_from_files is set; queue, sessions, pending, active
// and events.jsonl were renamed to <name>.imported; a second open imports nothing and
// commits nothing (PRAGMA data_version of the first connection is unchanged).
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kugetsu/home.hpp>

#include "check.hpp"

namespace {

using namespace kugetsu;

auto fields(const queue_item& i) {
    return std::tie(i.id, i.argv, i.role, i.timeout, i.attempts, i.max_attempts, i.state, i.repo, i.workdir,
                    i.process, i.owner, i.enqueued_at, i.updated_at, i.started_at, i.finished_at, i.term_sent_at,
                    i.kill_sent, i.stop_reason, i.exit_code, i.last_error);
}
auto fields(const session& s) { return std::tie(s.id, s.role, s.task_id, s.process, s.workspace, s.started_at); }
auto fields(const event& e) { return std::tie(e.type, e.task_id, e.time, e.attempt, e.pid, e.exit_code, e.reason); }

enum class kind { record, loose, directory, link };

struct file {
    char dir;   ///< 'q' queue, 's' sessions
    kind how = kind::record;
    std::string content;
};

/// The directory the HOMEs are made in: one per process, removed at exit (never destroyed
/// itself: the exit handler needs it).
const std::string& work_dir() {
    static const std::string* const dir = [] {
        std::string base = "/dev/shm";
        if (::access(base.c_str(), W_OK) != 0) {
            const char* t = std::getenv("TMPDIR");
            base = t && *t ? t : "/tmp";
        }
        auto* d = new std::string(base + "/kugetsu-fuzz-import." + std::to_string(::getpid()));
        ::mkdir(d->c_str(), 0700);
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(work_dir(), ec);
        });
        return d;
    }();
    return *dir;
}

bool put(const std::string& path, const std::string& content, mode_t mode) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return false;
    bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
    ok = ::fchmod(fd, mode) == 0 && ok;   // (not subject to the umask)
    ::close(fd);
    return ok;
}

std::string show(std::string_view s) {
    std::string o;
    for (const char c : s.substr(0, 120)) o += (c >= 0x20 && c < 0x7f) ? c : '?';
    return o;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);

    // ---- split the input into files ---------------------------------------------------------
    std::map<std::string, file> queue, sessions;   // by name
    std::string events;
    bool has_events = false;
    {
        std::string* target = &events;
        std::size_t pos = 0, files = 0;
        bool first = true;
        while (pos <= in.size()) {
            const auto nl = in.find('\n', pos);
            const std::string_view line = in.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
            const std::size_t next = nl == std::string_view::npos ? in.size() + 1 : nl + 1;
            if (!line.empty() && line.front() == '@' && line.size() >= 2 && std::string_view("qQsdle").find(line[1]) != std::string_view::npos) {
                first = true;
                const char c = line[1];
                if (c == 'e') {
                    target = &events;
                    has_events = true;
                    if (!events.empty()) events += '\n';
                    first = true;
                } else if (files < 16) {
                    ++files;
                    std::string name(line.size() > 3 ? line.substr(3) : std::string_view());
                    if (name.empty() || name == "." || name == ".." || name.size() > 100 ||
                        name.find('/') != std::string::npos || name.find('\0') != std::string::npos)
                        name = "x" + std::to_string(files) + ".json";
                    auto& m = c == 's' ? sessions : queue;
                    file f{c == 's' ? 's' : 'q', kind::record, {}};
                    f.how = c == 'Q' ? kind::loose : c == 'd' ? kind::directory : c == 'l' ? kind::link : kind::record;
                    m.insert_or_assign(name, f);
                    target = &m[name].content;
                } else {
                    target = nullptr;   // too many files: the rest is dropped
                }
            } else if (target) {
                if (target == &events) has_events = true;
                if (!first) *target += '\n';
                target->append(line);
                first = false;
            }
            pos = next;
        }
    }

    // ---- the HOME ------------------------------------------------------------------------------
    const std::string home = work_dir() + "/home";
    {
        std::error_code ec;
        std::filesystem::remove_all(home, ec);
    }
    KUGETSU_FUZZ_CHECK(::mkdir(home.c_str(), 0700) == 0, "mkdir " + home);
    for (const char* d : {"queue", "sessions", "pending", "active"})
        KUGETSU_FUZZ_CHECK(::mkdir((home + "/" + d).c_str(), 0700) == 0, std::string("mkdir ") + d);
    for (auto* m : {&queue, &sessions})
        for (const auto& [name, f] : *m) {
            const std::string path = home + (f.dir == 's' ? "/sessions/" : "/queue/") + name;
            bool ok = true;
            switch (f.how) {
            case kind::record: ok = put(path, f.content, 0600); break;
            case kind::loose: ok = put(path, f.content, 0666); break;
            case kind::directory: ok = ::mkdir(path.c_str(), 0700) == 0; break;
            case kind::link: ok = ::symlink("../events.jsonl", path.c_str()) == 0; break;
            }
            KUGETSU_FUZZ_CHECK(ok, "cannot make " + show(path));
        }
    if (has_events) KUGETSU_FUZZ_CHECK(put(home + "/events.jsonl", events, 0600), "cannot write events.jsonl");

    // ---- what the import must do ---------------------------------------------------------------
    std::vector<queue_item> want_items;
    std::vector<session> want_sessions;
    std::vector<event> want_events;
    std::vector<std::string> want_quarantined;   // sources
    for (const auto& [name, f] : queue) {
        if (name.front() == '.') continue;   // a temporary file: neither imported nor quarantined
        std::optional<queue_item> it;
        if (f.how == kind::record) {
            std::error_code ec;
            std::string why;
            it = parse_item(f.content, ec, why);
            if (it && name != it->id + ".json") it.reset();
        }
        if (it) want_items.push_back(*it);
        else want_quarantined.push_back("queue/" + name);
    }
    for (const auto& [name, f] : sessions) {
        if (name.front() == '.') continue;
        std::error_code ec;
        std::string why;
        auto se = parse_session(f.content, ec, why);
        if (se && name != se->id + ".json") se.reset();
        if (se) want_sessions.push_back(*se);
        else want_quarantined.push_back("sessions/" + name);
    }
    if (has_events) {
        std::size_t pos = 0, line_no = 0;
        while (pos < events.size()) {
            const auto nl = events.find('\n', pos);
            const std::string line = events.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
            pos = nl == std::string::npos ? events.size() : nl + 1;
            ++line_no;
            if (line.empty()) continue;
            std::error_code ec;
            std::string why;
            if (auto e = parse_event(line, ec, why)) want_events.push_back(*e);
            else want_quarantined.push_back("events.jsonl line " + std::to_string(line_no));
        }
    }
    std::sort(want_quarantined.begin(), want_quarantined.end());

    // ---- import -----------------------------------------------------------------------------
    std::error_code ec;
    std::string why;
    import_report rep;
    {
        sqlite_store store = open_home_store(home, ec, why, {}, &rep);
        KUGETSU_FUZZ_CHECK(!ec, "the import failed: " + ec.message() + ": " + why);
        KUGETSU_FUZZ_CHECK(rep.imported, "nothing imported");
        KUGETSU_FUZZ_CHECK(rep.tasks == static_cast<int>(want_items.size()) &&
                               rep.sessions == static_cast<int>(want_sessions.size()) &&
                               rep.events == static_cast<int>(want_events.size()) &&
                               rep.quarantined.size() == want_quarantined.size(),
                           "the report counts " + std::to_string(rep.tasks) + " tasks, " + std::to_string(rep.sessions) +
                               " sessions, " + std::to_string(rep.events) + " events, " +
                               std::to_string(rep.quarantined.size()) + " quarantined; expected " +
                               std::to_string(want_items.size()) + ", " + std::to_string(want_sessions.size()) + ", " +
                               std::to_string(want_events.size()) + ", " + std::to_string(want_quarantined.size()));

        auto check_store = [&](const char* when) {
            const std::string w = std::string(when) + ": ";
            const auto items = store.list_items(ec);
            KUGETSU_FUZZ_CHECK(!ec, w + "list_items: " + store.last_error_detail());
            KUGETSU_FUZZ_CHECK(items.size() == want_items.size(), w + std::to_string(items.size()) + " tasks in the store, " +
                                                                    std::to_string(want_items.size()) + " readable records");
            for (const auto& want : want_items) {
                const auto got = std::find_if(items.begin(), items.end(), [&](const queue_item& i) { return i.id == want.id; });
                KUGETSU_FUZZ_CHECK(got != items.end(), w + "task " + want.id + " was not imported");
                KUGETSU_FUZZ_CHECK(fields(*got) == fields(want), w + "task " + want.id + " differs from its record");
            }
            const auto ses = store.list_sessions(ec);
            KUGETSU_FUZZ_CHECK(!ec, w + "list_sessions: " + store.last_error_detail());
            KUGETSU_FUZZ_CHECK(ses.size() == want_sessions.size(), w + std::to_string(ses.size()) + " sessions in the store, " +
                                                                     std::to_string(want_sessions.size()) + " readable records");
            for (const auto& want : want_sessions) {
                const bool found = std::any_of(ses.begin(), ses.end(), [&](const session& s) { return fields(s) == fields(want); });
                KUGETSU_FUZZ_CHECK(found, w + "session " + want.id + " was not imported as it was");
            }
            const auto evs = store.events_after(0, 1 << 20, ec);
            KUGETSU_FUZZ_CHECK(!ec, w + "events_after: " + store.last_error_detail());
            KUGETSU_FUZZ_CHECK(evs.size() == want_events.size(), w + std::to_string(evs.size()) + " events in the store, " +
                                                                   std::to_string(want_events.size()) + " readable lines");
            for (std::size_t i = 0; i < evs.size(); ++i) {
                KUGETSU_FUZZ_CHECK(evs[i].seq == i + 1, w + "event " + std::to_string(i) + " is numbered " + std::to_string(evs[i].seq));
                KUGETSU_FUZZ_CHECK(fields(evs[i]) == fields(want_events[i]),
                                   w + "event " + std::to_string(i + 1) + " is not line " + std::to_string(i + 1) + " in file order");
            }
            auto rows = store.quarantine_rows(ec);
            KUGETSU_FUZZ_CHECK(!ec, w + "quarantine_rows: " + store.last_error_detail());
            std::vector<std::string> sources;
            for (const auto& r : rows) {
                KUGETSU_FUZZ_CHECK(!r.why.empty(), w + "quarantined without a reason: " + show(r.source));
                sources.push_back(r.source);
            }
            std::sort(sources.begin(), sources.end());
            KUGETSU_FUZZ_CHECK(sources == want_quarantined, w + std::to_string(sources.size()) + " quarantined, " +
                                                                std::to_string(want_quarantined.size()) + " expected" +
                                                                (sources.empty() ? std::string() : ", first " + show(sources.front())));
            KUGETSU_FUZZ_CHECK(!store.get_meta("imported_from_files", ec).empty() && !ec, w + "meta.imported_from_files not set");
        };
        check_store("after the import");

        // The old files were renamed, left in place.
        struct stat st{};
        for (const char* name : {"queue", "sessions", "pending", "active", "events.jsonl"}) {
            const bool was = std::string_view(name) != "events.jsonl" || has_events;
            KUGETSU_FUZZ_CHECK(::lstat((home + "/" + name).c_str(), &st) != 0 && errno == ENOENT,
                               std::string(name) + " is still there");
            KUGETSU_FUZZ_CHECK(!was || ::lstat((home + "/" + name + ".imported").c_str(), &st) == 0,
                               std::string(name) + " was not renamed to " + name + ".imported");
        }

        // Done once: a second open imports nothing and changes nothing (it commits nothing:
        // the first connection's PRAGMA data_version, which any other connection's commit
        // changes, stays as it was).
        const auto version = store.data_version(ec);
        KUGETSU_FUZZ_CHECK(!ec, "data_version: " + store.last_error_detail());
        import_report again;
        sqlite_store second = open_home_store(home, ec, why, {}, &again);
        KUGETSU_FUZZ_CHECK(!ec, "the second open failed: " + why);
        KUGETSU_FUZZ_CHECK(!again.imported && again.renamed.empty() && again.tasks == 0 && again.events == 0,
                           "the second open imported again");
        KUGETSU_FUZZ_CHECK(store.data_version(ec) == version && !ec, "the second open changed the database");
    }
    return 0;
}
