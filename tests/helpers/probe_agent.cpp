// kugetsu-probe-agent: an agent for the real-process tests, which records the peak of live
// agents itself, independently of the dispatcher.
//
//   kugetsu-probe-agent COUNTER [--ready FIFO] [--hold FIFO] [--sleep MS] [--record FILE]
//                       [--record-start FILE] [--exit N] [--also COUNTER2] [--stamp FILE]
//
// COUNTER holds "live peak total". On start the agent takes an flock on it, increments live
// and total, raises peak, and writes it back; with --ready it then writes one byte to that
// FIFO (so a test knows the count includes it); with --hold it then blocks reading FIFO until
// end-of-file (the test closes its end to release every agent at once: no sleeps); with
// --sleep it then sleeps MS milliseconds (a short task); with --record it appends
// "$KUGETSU_TASK_ID\n" to FILE (one O_APPEND write: a log of every run); then it decrements
// live and exits N (default 0). With --record-start it appends "$KUGETSU_TASK_ID\n" to FILE
// as soon as it has counted itself in (before --ready): a run is logged even if it never
// ends, so a log of starts shows an agent that ran twice whatever happened after. With --also
// it counts itself in COUNTER2 too (a group's own peak). With --stamp it appends
// "ID start NS" when it has counted itself in and "ID end NS" before it counts itself out
// (CLOCK_MONOTONIC nanoseconds: one clock for every agent of the machine).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <ctime>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "probe-agent: %s: %s\n", what, std::strerror(errno));
    std::exit(120);
}

void update(const char* path, int delta) {
    const int fd = ::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) die("open counter");
    while (::flock(fd, LOCK_EX) != 0)
        if (errno != EINTR) die("flock");
    char buf[128] = {};
    ssize_t n;
    while ((n = ::pread(fd, buf, sizeof buf - 1, 0)) < 0)
        if (errno != EINTR) die("read");
    long live = 0, peak = 0, total = 0;
    std::sscanf(buf, "%ld %ld %ld", &live, &peak, &total);
    live += delta;
    if (delta > 0) ++total;
    if (live > peak) peak = live;
    const int len = std::snprintf(buf, sizeof buf, "%ld %ld %ld\n", live, peak, total);
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, buf, static_cast<size_t>(len), 0) != len) die("write");
    ::close(fd);   // releases the flock
}

/// Appends "$KUGETSU_TASK_ID\n" to path in one O_APPEND write: lines of concurrent agents
/// never mix.
void append_task_id(const char* path) {
    const char* id = std::getenv("KUGETSU_TASK_ID");
    const std::string line = std::string(id ? id : "?") + "\n";
    const int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) die("record");
    ::close(fd);
}

/// Appends "$KUGETSU_TASK_ID WHAT NS\n" (CLOCK_MONOTONIC) to path in one O_APPEND write.
void stamp(const char* path, const char* what) {
    const char* id = std::getenv("KUGETSU_TASK_ID");
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const std::string line = std::string(id ? id : "?") + " " + what + " " +
                             std::to_string(static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec) + "\n";
    const int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) die("stamp");
    ::close(fd);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: kugetsu-probe-agent COUNTER [--ready FIFO] [--hold FIFO] [--sleep MS] "
                             "[--record FILE] [--record-start FILE] [--exit N] [--also COUNTER2] [--stamp FILE]\n");
        return 64;
    }
    const char* counter = argv[1];
    const char* hold = nullptr;
    const char* ready = nullptr;
    const char* record = nullptr;
    const char* record_start = nullptr;
    const char* also = nullptr;
    const char* stamps = nullptr;
    long sleep_ms = 0;
    int code = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string opt = argv[i];
        if (opt == "--hold") hold = argv[i + 1];
        else if (opt == "--ready") ready = argv[i + 1];
        else if (opt == "--exit") code = std::atoi(argv[i + 1]);
        else if (opt == "--sleep") sleep_ms = std::atol(argv[i + 1]);
        else if (opt == "--record") record = argv[i + 1];
        else if (opt == "--record-start") record_start = argv[i + 1];
        else if (opt == "--also") also = argv[i + 1];
        else if (opt == "--stamp") stamps = argv[i + 1];
    }
    update(counter, +1);
    if (also) update(also, +1);
    if (stamps) stamp(stamps, "start");
    if (record_start) append_task_id(record_start);
    // Open the hold FIFO before saying "ready": the test closes its end only after every
    // agent is ready, so no agent can miss the release. O_NONBLOCK: opening for reading
    // does not wait for a writer; reads then block while the test's end is open.
    int hold_fd = -1;
    if (hold) {
        hold_fd = ::open(hold, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (hold_fd < 0) die("open hold fifo");
        ::fcntl(hold_fd, F_SETFL, ::fcntl(hold_fd, F_GETFL) & ~O_NONBLOCK);
    }
    if (ready) {
        const int fd = ::open(ready, O_WRONLY | O_CLOEXEC);
        if (fd < 0) die("open ready fifo");
        while (::write(fd, "r", 1) < 0)
            if (errno != EINTR) die("write ready fifo");
        ::close(fd);
    }
    if (hold_fd >= 0) {
        char c;
        for (;;) {
            const ssize_t r = ::read(hold_fd, &c, 1);
            if (r == 0 || (r < 0 && errno != EINTR)) break;
        }
        ::close(hold_fd);
    }
    if (sleep_ms > 0) {
        timespec ts{sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    }
    if (record) append_task_id(record);
    if (stamps) stamp(stamps, "end");
    if (also) update(also, -1);
    update(counter, -1);
    return code;
}
