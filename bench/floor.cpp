// kugetsu-floor: the floor of the whole-process comparison (bench/compare.sh): the least a
// runner that keeps N processes alive can do. A loop of posix_spawn + waitpid, nothing else:
// no queue, no state, no log, no shell.
//
//   kugetsu-floor [-j N] -n COUNT [--] CMD [ARG...]   run CMD COUNT times, N at a time
//   kugetsu-floor [-j N]                              run each line of stdin, N at a time
//                                                     (split on blanks; no quoting, no shell)
//
// -j N defaults to 3. The program is looked up on PATH once, before the first spawn (as
// kugetsu does; xargs looks it up in every child). Children inherit stdin, stdout, stderr and
// the environment. The loop starts children until N are alive, then blocks in waitpid() for
// any child and starts the next one as soon as one ends.
//
// Exit status: 0 if every child exited 0; 1 if some child failed or could not be spawned
// (the rest still run); 64 on a usage error. Plain C and POSIX, compiled as C++ only because
// the project enables no C compiler.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

[[noreturn]] void usage() {
    std::fputs("usage: kugetsu-floor [-j N] -n COUNT [--] CMD [ARG...]\n"
               "       kugetsu-floor [-j N] < COMMANDS    (one command per line)\n",
               stderr);
    std::exit(64);
}

long number(const char* s) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(s, &end, 10);
    if (errno || !end || *end || v < 1) usage();
    return v;
}

/// CMD as posix_spawn needs it: itself if it has a '/', else the first executable on PATH.
std::string resolve(const std::string& cmd) {
    if (cmd.find('/') != std::string::npos) return cmd;
    const char* path = std::getenv("PATH");
    std::string p = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t i = 0;
    for (;;) {
        const std::size_t j = p.find(':', i);
        std::string dir = p.substr(i, j == std::string::npos ? std::string::npos : j - i);
        if (dir.empty()) dir.assign(1, '.');   // an empty PATH entry is the current directory
        const std::string full = dir + "/" + cmd;
        struct stat st{};
        if (::stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(full.c_str(), X_OK) == 0) return full;
        if (j == std::string::npos) return cmd;   // posix_spawn reports ENOENT
        i = j + 1;
    }
}

struct command {
    std::string path;
    std::vector<std::string> args;
};

bool spawn(const command& c, long& failed) {
    std::vector<char*> argv;
    for (const auto& a : c.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int e = ::posix_spawn(&pid, c.path.c_str(), nullptr, nullptr, argv.data(), environ);
    if (e != 0) {
        std::fprintf(stderr, "kugetsu-floor: %s: %s\n", c.args[0].c_str(), std::strerror(e));
        ++failed;
        return false;
    }
    return true;
}

} // namespace

int main(int argc, char** argv) {
    long jobs = 3, count = -1;
    int i = 1;
    for (; i < argc; ++i) {
        if (std::strcmp(argv[i], "-j") == 0 && i + 1 < argc) jobs = number(argv[++i]);
        else if (std::strcmp(argv[i], "-n") == 0 && i + 1 < argc) count = number(argv[++i]);
        else if (std::strcmp(argv[i], "--") == 0) { ++i; break; }
        else if (argv[i][0] == '-') usage();
        else break;
    }
    const bool from_argv = count > 0;
    if (from_argv != (i < argc)) usage();   // -n needs a command; a command needs -n

    command fixed;
    if (from_argv) {
        for (int k = i; k < argc; ++k) fixed.args.emplace_back(argv[k]);
        fixed.path = resolve(fixed.args[0]);
    }
    long started = 0, running = 0, failed = 0;
    bool more = true;
    char* line = nullptr;
    std::size_t cap = 0;
    auto next = [&](command& c) -> bool {   // the next command, or false at the end
        if (from_argv) {
            if (started >= count) return false;
            c = fixed;
            return true;
        }
        for (;;) {
            if (::getline(&line, &cap, stdin) < 0) return false;
            c.args.clear();
            for (char* tok = std::strtok(line, " \t\r\n"); tok; tok = std::strtok(nullptr, " \t\r\n")) c.args.emplace_back(tok);
            if (c.args.empty()) continue;
            c.path = resolve(c.args[0]);
            return true;
        }
    };
    command c;
    for (;;) {
        while (more && running < jobs) {
            if (!(more = next(c))) break;
            ++started;
            if (spawn(c, failed)) ++running;
        }
        if (running == 0) break;
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            std::perror("kugetsu-floor: waitpid");
            return 1;
        }
        --running;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
    }
    std::free(line);
    if (failed) std::fprintf(stderr, "kugetsu-floor: %ld of %ld commands failed\n", failed, started);
    return failed ? 1 : 0;
}
