// A link planted in the state directory cannot redirect a write: for each file kugetsu
// opens, creates, renames or unlinks there, a symbolic link to a victim file outside the
// state directory, one to a directory, a dangling one, a FIFO and a hard link. The victim is
// untouched (content, size, mode, times; not created if it did not exist) and the error names
// the path.
#include <catch2/catch.hpp>

#include <kugetsu/home.hpp>
#include <kugetsu/kugetsu.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>

#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::fork_child;
using kugetsu::test::slurp;
using kugetsu::test::temp_dir;
using kugetsu::test::wait_child;
namespace fs = std::filesystem;

namespace {

/// What "untouched" means for a file or a directory.
struct fingerprint {
    bool exists = false;
    std::string content;   // a file: its bytes; a directory: its entries
    mode_t mode = 0;
    off_t size = 0;
    std::int64_t mtime_ns = 0;
    friend bool operator==(const fingerprint&, const fingerprint&) = default;
};

fingerprint fingerprint_of(const std::string& path) {
    fingerprint f;
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) return f;
    f.exists = true;
    f.mode = st.st_mode;
    f.size = st.st_size;
    f.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    if (S_ISDIR(st.st_mode)) {
        std::vector<std::string> names;
        for (auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
        std::sort(names.begin(), names.end());
        for (auto& n : names) f.content += n + "\n";
    } else {
        f.content = slurp(path);
    }
    return f;
}

/// ROOT/home is the state directory; ROOT/victim a file and ROOT/victim-dir a directory
/// that kugetsu must never touch through a link.
struct planted {
    temp_dir root;
    std::string home = root / "home";
    std::string victim = root / "victim";
    std::string victim_dir = root / "victim-dir";
    std::string missing = root / "never-created";
    planted() {
        fs::create_directory(home);
        fs::permissions(home, fs::perms::owner_all, fs::perm_options::replace);
        std::ofstream(victim) << "precious\n";
        ::chmod(victim.c_str(), 0644);
        fs::create_directory(victim_dir);
        std::ofstream(victim_dir + "/keep") << "keep\n";
    }
    std::string at(const std::string& name) const { return home + "/" + name; }
    struct before {
        fingerprint victim, dir, missing;
    };
    before snap() const { return {fingerprint_of(victim), fingerprint_of(victim_dir), fingerprint_of(missing)}; }
    void check_untouched(const before& b) const {
        CHECK(fingerprint_of(victim) == b.victim);
        CHECK(fingerprint_of(victim_dir) == b.dir);
        CHECK_FALSE(fingerprint_of(missing).exists);
        CHECK(slurp(victim) == "precious\n");
    }
};

enum class plant { link_to_file, link_to_dir, dangling_link, fifo, hard_link };

const char* name_of(plant p) {
    switch (p) {
    case plant::link_to_file: return "a symbolic link to a file";
    case plant::link_to_dir: return "a symbolic link to a directory";
    case plant::dangling_link: return "a dangling symbolic link";
    case plant::fifo: return "a FIFO";
    case plant::hard_link: return "a hard link to a file";
    }
    return "?";
}

void plant_at(const planted& p, const std::string& path, plant what) {
    switch (what) {
    case plant::link_to_file: fs::create_symlink(p.victim, path); break;
    case plant::link_to_dir: fs::create_directory_symlink(p.victim_dir, path); break;
    case plant::dangling_link: fs::create_symlink(p.missing, path); break;
    case plant::fifo: REQUIRE(::mkfifo(path.c_str(), 0600) == 0); break;
    case plant::hard_link: fs::create_hard_link(p.victim, path); break;
    }
}

/// Runs f in a child that is killed by SIGALRM if it blocks (a FIFO opened for writing with
/// no reader blocks forever): a hang guard, not a timing assertion. Returns f's result.
template <class F>
int without_hanging(F f) {
    return wait_child(fork_child([&] {
        ::alarm(20);
        return f();
    }));
}

constexpr plant all_plants[] = {plant::link_to_file, plant::link_to_dir, plant::dangling_link, plant::fifo,
                                plant::hard_link};

} // namespace

TEST_CASE("flock_lock never locks through a link, a hard link or a FIFO planted at its path, and says which path it refused",
          "[symlinks]") {
    for (plant what : all_plants) {
        planted p;
        const std::string path = p.at("lock");
        plant_at(p, path, what);
        INFO("HOME/lock is " << name_of(what));
        const auto before = p.snap();
        const int r = without_hanging([&] {
            flock_lock l(path);
            std::error_code ec;
            l.lock(ec);
            if (!ec) {
                l.unlock();
                return 1;
            }
            if (l.last_error_detail().find(path) == std::string::npos) return 2;
            const bool is_link = what == plant::link_to_file || what == plant::link_to_dir || what == plant::dangling_link;
            if (is_link && l.last_error_detail().find("symbolic link") == std::string::npos) return 3;
            if (what == plant::hard_link && l.last_error_detail().find("hard link") == std::string::npos) return 4;
            return 0;
        });
        CHECK(r == 0);
        p.check_untouched(before);
        // The victim's own flock is free: nothing holds it.
        const int fd = ::open(p.victim.c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        CHECK(::flock(fd, LOCK_EX | LOCK_NB) == 0);
        ::close(fd);
    }
}

TEST_CASE("jsonl_notifier never appends through a link, a hard link or a FIFO planted at its path, and says so",
          "[symlinks]") {
    for (plant what : all_plants) {
        planted p;
        const std::string path = p.at("events.jsonl");
        plant_at(p, path, what);
        INFO("HOME/events.jsonl is " << name_of(what));
        const auto before = p.snap();
        const int r = without_hanging([&] {
            std::error_code seen;
            jsonl_notifier n(path, [&](const std::error_code& ec, const event&) { seen = ec; });
            n.notify(event{event_type::task_queued, "t1", timestamp{}, {}, {}, {}, {}});
            if (n.failures() != 1 || !seen) return 1;
            if (n.last_error_detail().find(path) == std::string::npos) return 2;
            const bool is_link = what == plant::link_to_file || what == plant::link_to_dir || what == plant::dangling_link;
            if (is_link && n.last_error_detail().find("symbolic link") == std::string::npos) return 3;
            if (what == plant::hard_link && n.last_error_detail().find("hard link") == std::string::npos) return 4;
            return 0;
        });
        CHECK(r == 0);
        p.check_untouched(before);
    }
}

TEST_CASE("jsonl_notifier refuses an events file that another process made writable by others", "[symlinks]") {
    planted p;
    const std::string path = p.at("events.jsonl");
    std::ofstream(path) << "";
    ::chmod(path.c_str(), 0666);
    jsonl_notifier n(path);
    n.notify(event{event_type::task_queued, "t1", timestamp{}, {}, {}, {}, {}});
    CHECK(n.failures() == 1);
    CHECK(n.last_error_detail().find(path) != std::string::npos);
    CHECK(slurp(path).empty());
}

TEST_CASE("sqlite_store never opens its database or the files beside it through a link, a hard link or a FIFO, "
          "and names the path it refused",
          "[symlinks]") {
    for (const char* name : {"state.db", "state.db-wal", "state.db-shm", "state.db-journal", "state.db-bell"}) {
        for (plant what : all_plants) {
            planted p;
            const std::string path = p.at(name);
            plant_at(p, path, what);
            const auto before = p.snap();
            INFO(name << ": " << name_of(what));
            const int rc = without_hanging([&] {
                sqlite_store s(p.at("state.db"));
                std::error_code ec;
                s.open(ec);
                if (!ec) return 10;   // opened: wrong
                const bool named = s.last_error_detail().find(path) != std::string::npos;
                if (!named) std::fprintf(stderr, "error does not name %s: %s\n", path.c_str(), s.last_error_detail().c_str());
                return named ? 0 : 11;
            });
            CHECK(rc == 0);
            p.check_untouched(before);
        }
    }
}

TEST_CASE("sqlite_store refuses a database directory that others may write, and a database they may write",
          "[symlinks]") {
    planted p;
    {
        sqlite_store s(p.at("state.db"));
        std::error_code ec;
        s.open(ec);
        REQUIRE_FALSE(ec);
    }
    ::chmod(p.at("state.db").c_str(), 0666);
    {
        sqlite_store s(p.at("state.db"));
        std::error_code ec;
        s.open(ec);
        CHECK(ec == errc::unsafe_state);
        CHECK(s.last_error_detail().find("state.db") != std::string::npos);
    }
    ::chmod(p.at("state.db").c_str(), 0600);
    ::chmod(p.home.c_str(), 0777);
    {
        sqlite_store s(p.at("state.db"));
        std::error_code ec;
        s.open(ec);
        CHECK(ec == errc::unsafe_state);
        CHECK(s.last_error_detail().find(p.home) != std::string::npos);
    }
    ::chmod(p.home.c_str(), 0700);
    sqlite_store s(p.at("state.db"));
    std::error_code ec;
    s.open(ec);
    CHECK_FALSE(ec);
}

TEST_CASE("fork_spawner never writes through a FIFO, link or hard link planted as a log or a slot's temp name",
          "[symlinks]") {
    temp_dir d, outside;
    const std::string victim = outside / "victim";
    std::ofstream(victim) << "precious";
    fork_spawner sp(d / "logs", d / "run");
    std::error_code ec;
    fs::create_directories(d / "logs");
    fs::permissions(d / "logs", fs::perms::owner_all);
    // A FIFO as the log: refused at once (the open does not block), naming the file.
    REQUIRE(::mkfifo((d / "logs/t1.log").c_str(), 0600) == 0);
    sp.spawn({"t1", {"/bin/true"}, ""}, ec);
    CHECK(ec);   // ENXIO: no reader (unsafe_state if something had it open for reading)
    CHECK(sp.last_error_detail().find("t1.log") != std::string::npos);
    // A hard link to a file elsewhere, and a symbolic link.
    fs::create_hard_link(victim, d / "logs/t2.log");
    sp.spawn({"t2", {"/bin/echo", "leak"}, ""}, ec);
    CHECK(ec == errc::unsafe_state);
    fs::create_symlink(victim, d / "logs/t3.log");
    sp.spawn({"t3", {"/bin/echo", "leak"}, ""}, ec);
    CHECK(ec);
    CHECK(slurp(victim) == "precious");
    // A hard link planted at the temp name the next slot will take: the supervisor's
    // exclusive create fails, the victim is untouched, and the next spawn takes a new name.
    fork_spawner sp2(d / "logs2", d / "run2");
    fs::create_directories(d / "run2");
    fs::permissions(d / "run2", fs::perms::owner_all);
    fs::create_hard_link(victim, d / ("run2/.slot." + std::to_string(::getpid()) + ".1"));
    sp2.spawn({"t4", {"/bin/true"}, ""}, ec);
    CHECK(ec == std::errc::file_exists);
    CHECK(slurp(victim) == "precious");
    auto p = sp2.spawn({"t4", {"/bin/true"}, ""}, ec);
    REQUIRE_FALSE(ec);
    sp2.release(p, ec);
    CHECK_FALSE(ec);
    CHECK(sp2.wait(p, ec).exit_code == 0);
    CHECK(slurp(victim) == "precious");
}
