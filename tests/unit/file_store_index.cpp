// file_store's index: the pending/ and active/ markers that let a pass read only the records
// it needs (see the header of kugetsu/store/file_store.hpp). Each test states one promise:
// a pass never reads a finished record; a marker is a hint that is checked, never trusted;
// stale markers go, a marker of an enqueue in progress stays; a missing marker is re-created
// by the first open() of an old state directory and by every full listing.
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>

#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::temp_dir;
namespace fs = std::filesystem;

namespace {

constexpr auto all = static_cast<std::size_t>(-1);

queue_item item(std::string id, task_state st, long long enqueued_second) {
    queue_item it;
    it.id = std::move(id);
    it.argv = {"agent"};
    it.state = st;
    it.enqueued_at = it.updated_at = timestamp{std::chrono::seconds(enqueued_second)};
    if (st == task_state::running) it.process = {4242, 5, "boot"};
    if (st == task_state::notified) it.owner = {4243, 6, "boot"};
    return it;
}

std::vector<std::string> ids(const std::vector<queue_item>& v) {
    std::vector<std::string> out;
    for (auto& it : v) out.push_back(it.id);
    return out;
}

std::vector<std::string> names(const std::string& dir) {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().front() != '.') out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

void set_age(const std::string& path, long seconds) {
    timespec ts[2];
    ::clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= seconds;
    ts[1] = ts[0];
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

} // namespace

TEST_CASE("file_store: a pass reads no finished record: the index leads it to pending and active records only") {
    temp_dir d;
    file_store s(d.path(), {.durable = false, .quarantine = true});
    std::error_code ec;
    for (int i = 0; i < 40; ++i) s.create_item(item("done-" + std::to_string(i), task_state::completed, i), ec);
    s.create_item(item("p2", task_state::pending, 102), ec);
    s.create_item(item("p1", task_state::pending, 101), ec);
    s.create_item(item("p3", task_state::pending, 103), ec);
    s.create_item(item("r", task_state::running, 50), ec);
    s.create_item(item("n", task_state::notified, 60), ec);
    REQUIRE_FALSE(ec);
    // Garbage in every finished record: reading any of them would quarantine it.
    for (int i = 0; i < 40; ++i) std::ofstream(d / ("queue/done-" + std::to_string(i) + ".json")) << "{";

    file_store fresh(d.path(), {.durable = false, .quarantine = true});
    CHECK(ids(fresh.items_in_state(task_state::pending, 2, ec)) == std::vector<std::string>{"p1", "p2"});
    CHECK(ids(fresh.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"p1", "p2", "p3"});
    CHECK(ids(fresh.items_in_state(task_state::running, all, ec)) == std::vector<std::string>{"r"});
    CHECK(ids(fresh.items_in_state(task_state::notified, all, ec)) == std::vector<std::string>{"n"});
    REQUIRE_FALSE(ec);
    CHECK(fresh.quarantined().empty());
    // The check can fail: a full listing reads them, and moves every one aside.
    fresh.list_items(ec);
    CHECK(fresh.quarantined().size() == 40);
}

TEST_CASE("file_store: a state change moves the marker; the marker names sort oldest first, times before 1970 too") {
    temp_dir d;
    file_store s(d.path(), {.durable = false, .quarantine = true});
    std::error_code ec;
    s.create_item(item("late", task_state::pending, 1'900'000'000), ec);
    s.create_item(item("b", task_state::pending, -5), ec);   // 1969
    s.create_item(item("a", task_state::pending, -5), ec);
    REQUIRE_FALSE(ec);
    CHECK(ids(s.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"a", "b", "late"});
    CHECK(names(d / "pending").size() == 3);
    CHECK(names(d / "active").empty());

    auto it = item("a", task_state::notified, -5);
    s.put_item(it, ec);
    CHECK(names(d / "pending").size() == 2);
    CHECK(names(d / "active") == std::vector<std::string>{"a"});
    it.state = task_state::running;
    it.process = {77, 1, "boot"};
    s.put_item(it, ec);
    CHECK(names(d / "active") == std::vector<std::string>{"a"});
    it.state = task_state::pending;   // a failed attempt: back to the queue, in its old place
    s.put_item(it, ec);
    CHECK(names(d / "active").empty());
    CHECK(ids(s.items_in_state(task_state::pending, 1, ec)) == std::vector<std::string>{"a"});
    it.state = task_state::completed;
    s.put_item(it, ec);
    REQUIRE_FALSE(ec);
    CHECK(names(d / "pending").size() == 2);
    CHECK(names(d / "active").empty());
    CHECK(ids(s.items_in_state(task_state::completed, all, ec)) == std::vector<std::string>{"a"});
}

TEST_CASE("file_store: stale markers are skipped and removed; an enqueue's marker without its record yet is kept") {
    temp_dir d;
    file_store s(d.path(), {.durable = false, .quarantine = true});
    std::error_code ec;
    s.create_item(item("done", task_state::completed, 10), ec);
    s.create_item(item("wait", task_state::pending, 11), ec);
    REQUIRE_FALSE(ec);
    const auto pending_names = names(d / "pending");
    REQUIRE(pending_names.size() == 1);
    const std::string key = pending_names[0].substr(0, 20);
    // Stale: a pending marker of a finished task, an active marker of a pending one and of
    // no task at all (a process died between writing a record and removing the old marker).
    std::ofstream(d / ("pending/" + key + ".done"));
    std::ofstream(d / "active/wait");
    std::ofstream(d / "active/ghost");
    // An enqueue between its marker and its record: young, so kept; old, so removed.
    std::ofstream(d / ("pending/" + key + ".young"));
    std::ofstream(d / ("pending/" + key + ".old"));
    set_age(d / ("pending/" + key + ".old"), 601);
    // Not a marker at all: left alone.
    std::ofstream(d / "pending/notes.txt");

    CHECK(ids(s.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"wait"});
    CHECK(s.items_in_state(task_state::running, all, ec).empty());
    REQUIRE_FALSE(ec);
    CHECK(names(d / "pending") == std::vector<std::string>{key + ".wait", key + ".young", "notes.txt"});
    CHECK(names(d / "active").empty());

    // The young marker's record arrives: the task is listed, through that marker.
    auto young = item("young", task_state::pending, 11);
    std::ofstream(d / "queue/young.json") << nlohmann::json(young).dump();
    CHECK(ids(s.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"wait", "young"});
}

TEST_CASE("file_store: a missing marker is re-created by the first open() of an old directory and by list_items()") {
    temp_dir d;
    {
        file_store s(d.path(), {.durable = false, .quarantine = true});
        std::error_code ec;
        s.create_item(item("p", task_state::pending, 1), ec);
        s.create_item(item("r", task_state::running, 2), ec);
        s.create_item(item("n", task_state::notified, 3), ec);
        REQUIRE_FALSE(ec);
    }
    // A state directory from before the index: no pending/, no active/.
    fs::remove_all(d / "pending");
    fs::remove_all(d / "active");
    {
        file_store s(d.path(), {.durable = false, .quarantine = true});
        std::error_code ec;
        CHECK(ids(s.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"p"});
        CHECK(ids(s.items_in_state(task_state::running, all, ec)) == std::vector<std::string>{"r"});
        CHECK(ids(s.items_in_state(task_state::notified, all, ec)) == std::vector<std::string>{"n"});
        CHECK_FALSE(ec);
        CHECK(fs::exists(d / "pending/.indexed"));
    }
    // A marker lost some other way (removed by hand) in an indexed directory: the indexed read
    // cannot see the task (the check can fail); a full listing puts the marker back.
    for (auto& n : names(d / "pending")) fs::remove(d / ("pending/" + n));
    fs::remove(d / "active/r");
    file_store s(d.path(), {.durable = false, .quarantine = true});
    std::error_code ec;
    CHECK(s.items_in_state(task_state::pending, all, ec).empty());
    CHECK(s.items_in_state(task_state::running, all, ec).empty());
    CHECK(s.list_items(ec).size() == 3);
    CHECK(ids(s.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"p"});
    CHECK(ids(s.items_in_state(task_state::running, all, ec)) == std::vector<std::string>{"r"});
    CHECK_FALSE(ec);
}

TEST_CASE("file_store: a refused duplicate leaves the first task's marker and none of its own") {
    temp_dir d;
    file_store s(d.path(), {.durable = false, .quarantine = true});
    std::error_code ec;
    s.create_item(item("a", task_state::pending, 1), ec);
    REQUIRE_FALSE(ec);
    const auto before = names(d / "pending");
    s.create_item(item("a", task_state::pending, 2), ec);   // another enqueue time: another marker name
    CHECK(ec == errc::duplicate_task);
    s.create_item(item("a", task_state::pending, 1), ec);   // the same name as the first's
    CHECK(ec == errc::duplicate_task);
    s.create_item(item("a", task_state::notified, 1), ec);
    CHECK(ec == errc::duplicate_task);
    CHECK(names(d / "pending") == before);
    CHECK(names(d / "active").empty());
    CHECK(ids(s.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"a"});
}

TEST_CASE("file_store: a record whose enqueue time was changed by hand is listed in its new place") {
    temp_dir d;
    file_store s(d.path(), {.durable = false, .quarantine = true});
    std::error_code ec;
    s.create_item(item("x", task_state::pending, 10), ec);
    s.create_item(item("y", task_state::pending, 20), ec);
    REQUIRE_FALSE(ec);
    std::ofstream(d / "queue/y.json") << nlohmann::json(item("y", task_state::pending, 5)).dump();
    CHECK(ids(s.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"y", "x"});
    CHECK_FALSE(ec);
    CHECK(names(d / "pending").size() == 2);
}

TEST_CASE("file_store: a long-lived store sees pending markers made and removed by others, and lists again after an inotify overflow") {
    temp_dir d;
    file_store daemon(d.path(), {.durable = false, .quarantine = true});
    file_store other(d.path(), {.durable = false, .quarantine = true});
    std::error_code ec;
    other.create_item(item("a", task_state::pending, 1), ec);
    other.create_item(item("b", task_state::pending, 2), ec);
    REQUIRE_FALSE(ec);
    CHECK(ids(daemon.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"a", "b"});
    // Another process enqueues one and takes one.
    other.create_item(item("c", task_state::pending, 3), ec);
    other.put_item(item("a", task_state::notified, 1), ec);
    REQUIRE_FALSE(ec);
    CHECK(ids(daemon.items_in_state(task_state::pending, all, ec)) == std::vector<std::string>{"b", "c"});

    // More changes than the kernel queues (fs.inotify.max_queued_events, 16384 by default):
    // the events of "late" are lost, so only a new listing can find it.
    long max_events = 16384;
    if (std::ifstream f("/proc/sys/fs/inotify/max_queued_events"); f) f >> max_events;
    REQUIRE(max_events < 100000);
    long made = 0;
    for (long i = 0; i <= max_events; ++i) {
        const std::string junk = d / ("pending/99999999999999999999.junk" + std::to_string(i));
        const int fd = ::open(junk.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        made += fd >= 0;
        if (fd >= 0) ::close(fd);
    }
    REQUIRE(made == max_events + 1);
    other.create_item(item("late", task_state::pending, 4), ec);
    REQUIRE_FALSE(ec);
    CHECK(ids(daemon.items_in_state(task_state::pending, 3, ec)) == std::vector<std::string>{"b", "c", "late"});
    CHECK_FALSE(ec);
}
