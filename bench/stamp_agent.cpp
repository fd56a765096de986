// kugetsu-stamp-agent: a tiny agent for the handoff benchmark (bench/handoff.sh).
//
//   kugetsu-stamp-agent FILE [LABEL] [--work-us N] [--sleep-us N]
//
// Appends one line "<start_ns> <end_ns> <label>\n" to FILE with a single O_APPEND write, then
// _exit(0)s. start_ns is CLOCK_MONOTONIC read as the first thing in main; end_ns is read just
// before the write, after the line's other parts are prepared (so the only work between
// end_ns and the process's exit is one write() and _exit()). CLOCK_MONOTONIC is one clock
// for every process on the machine, so lines written by different agents compare directly.
//
// LABEL defaults to $KUGETSU_TASK_ID (set by kugetsu for each agent), else "-".
// --work-us N: spin for N microseconds between start and end (default 0).
// --sleep-us N: sleep (nanosleep, no CPU) for N microseconds between start and end (default
//   0): agents that take some time without competing with the runner for the CPU.
//
// Exit status: 0; 64 on a usage error; 74 if FILE cannot be opened or written.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <fcntl.h>
#include <unistd.h>

namespace {

std::int64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void usage() {
    std::fputs("usage: kugetsu-stamp-agent FILE [LABEL] [--work-us N] [--sleep-us N]\n", stderr);
    ::_exit(64);
}

} // namespace

int main(int argc, char** argv) {
    const std::int64_t start_ns = now_ns();

    const char* file = nullptr;
    const char* label = nullptr;
    long long work_us = 0, sleep_us = 0;
    auto number = [&](int& i) {
        if (i + 1 >= argc) usage();
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(argv[++i], &end, 10);
        if (errno || *end || v < 0) usage();
        return v;
    };
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--work-us") == 0) {
            work_us = number(i);
        } else if (std::strcmp(argv[i], "--sleep-us") == 0) {
            sleep_us = number(i);
        } else if (!file) {
            file = argv[i];
        } else if (!label) {
            label = argv[i];
        } else {
            usage();
        }
    }
    if (!file) usage();
    if (!label) label = std::getenv("KUGETSU_TASK_ID");
    if (!label || !*label) label = "-";

    if (work_us > 0) {
        const std::int64_t until = start_ns + work_us * 1000;
        while (now_ns() < until) {
        }
    }
    if (sleep_us > 0) {
        timespec ts{static_cast<time_t>(sleep_us / 1'000'000), static_cast<long>(sleep_us % 1'000'000) * 1000};
        while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }

    const int fd = ::open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        std::perror(file);
        ::_exit(74);
    }
    // The line is built in place: the start and the label now, the end at the last moment.
    char line[512];
    const int head = std::snprintf(line, sizeof line, "%lld ", static_cast<long long>(start_ns));
    const std::int64_t end_ns = now_ns();
    const int n = std::snprintf(line + head, sizeof line - static_cast<std::size_t>(head), "%lld %.400s\n",
                                static_cast<long long>(end_ns), label);
    const std::size_t len = static_cast<std::size_t>(head + n);
    if (::write(fd, line, len) != static_cast<ssize_t>(len)) ::_exit(74);
    ::_exit(0);
}
