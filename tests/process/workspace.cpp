// Workspace models against the real file system and a real git repository, and the
// run_command helper they use.
#include <catch2/catch.hpp>

#include <kugetsu/detail/run.hpp>
#include <kugetsu/workspace/directory_workspace.hpp>
#include <kugetsu/workspace/git_worktree_workspace.hpp>
#include <kugetsu/workspace/null_workspace.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;
using kugetsu::detail::run_command;

namespace {

/// A fresh directory from mkdtemp (its real path), deleted with everything in it at the end.
class temp_dir {
public:
    temp_dir() {
        std::string tmpl = (fs::temp_directory_path() / "kugetsu-ws-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path_ = fs::canonical(tmpl).string();
    }
    ~temp_dir() {
        std::error_code ec;
        // Tests may leave read-only directories behind; make everything deletable first.
        for (auto it = fs::recursive_directory_iterator(path_, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
            if (it->is_directory(ec) && !it->is_symlink(ec))
                fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::string& path() const { return path_; }
    std::string operator/(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

kugetsu::queue_item task(const std::string& id, const std::string& repo = "") {
    kugetsu::queue_item it;
    it.id = id;
    it.argv = {"true"};
    it.repo = repo;
    return it;
}

kugetsu::detail::command_result run(const std::vector<std::string>& argv, const std::string& cwd = "") {
    std::error_code ec;
    auto r = run_command(argv, cwd, ec);
    INFO(argv.front() << ": " << ec.message());
    REQUIRE_FALSE(ec);
    return r;
}

/// git with a fixed identity and no signing, whatever the user's configuration says.
kugetsu::detail::command_result git(const std::string& dir, std::vector<std::string> args) {
    std::vector<std::string> argv{"git", "-c", "user.name=kugetsu test",
                                  "-c", "user.email=test@kugetsu.invalid",
                                  "-c", "commit.gpgsign=false", "-C", dir};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
}

void require_git(const std::string& dir, std::vector<std::string> args) {
    const auto r = git(dir, std::move(args));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
}

void write_file(const std::string& path, const std::string& content) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << content;
    REQUIRE(f.good());
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

/// A repository with one commit holding README.
std::string make_repo(const temp_dir& tmp, const std::string& name = "repo") {
    const std::string repo = tmp / name;
    require_git(tmp.path(), {"init", "-q", repo});
    write_file(repo + "/README", "hello\n");
    require_git(repo, {"add", "README"});
    require_git(repo, {"commit", "-q", "-m", "initial"});
    return repo;
}

std::vector<std::string> worktrees(const std::string& repo) {
    const auto r = git(repo, {"worktree", "list", "--porcelain"});
    REQUIRE(r.exit_code == 0);
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos < r.output.size()) {
        std::size_t end = r.output.find('\n', pos);
        if (end == std::string::npos) end = r.output.size();
        const std::string line = r.output.substr(pos, end - pos);
        if (line.rfind("worktree ", 0) == 0) out.push_back(line.substr(9));
        pos = end + 1;
    }
    return out;
}

bool listed(const std::string& repo, const std::string& path) {
    const auto w = worktrees(repo);
    return std::find(w.begin(), w.end(), path) != w.end();
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

bool is_empty_dir(const std::string& path) { return fs::is_directory(path) && fs::is_empty(path); }

} // namespace

// ---------------------------------------------------------------------------------------
// run_command

TEST_CASE("run_command reports the exit code of the program") {
    CHECK(run({"true"}).exit_code == 0);
    CHECK(run({"false"}).exit_code == 1);
    CHECK(run({"sh", "-c", "exit 42"}).exit_code == 42);
}

TEST_CASE("run_command reports 128 plus the signal for a program killed by a signal") {
    CHECK(run({"sh", "-c", "kill -KILL $$"}).exit_code == 128 + SIGKILL);
    CHECK(run({"sh", "-c", "kill -TERM $$"}).exit_code == 128 + SIGTERM);
}

TEST_CASE("run_command captures stdout and stderr together") {
    const auto r = run({"sh", "-c", "echo to-out; echo to-err >&2; exit 3"});
    CHECK(r.exit_code == 3);
    CHECK(r.output == "to-out\nto-err\n");
}

TEST_CASE("run_command passes arguments without a shell") {
    const auto r = run({"printf", "%s|", "a b", "$HOME", "*", "'q'"});
    CHECK(r.output == "a b|$HOME|*|'q'|");
}

TEST_CASE("run_command keeps the first 64 KiB of output and drains the rest") {
    const auto r = run({"head", "-c", "1000000", "/dev/zero"});
    CHECK(r.exit_code == 0);  // not killed by SIGPIPE: the rest was read and dropped
    CHECK(r.output.size() == kugetsu::detail::max_command_output);
    CHECK(kugetsu::detail::max_command_output == 64 * 1024);
}

TEST_CASE("run_command runs the program in the given directory") {
    temp_dir tmp;
    CHECK(run({"pwd"}, tmp.path()).output == tmp.path() + "\n");
}

TEST_CASE("run_command gives the program /dev/null as stdin") {
    const auto cat = run({"cat"});
    CHECK(cat.exit_code == 0);
    CHECK(cat.output.empty());
    CHECK(run({"readlink", "/proc/self/fd/0"}).output == "/dev/null\n");
}

TEST_CASE("run_command reports ENOENT for a missing program") {
    std::error_code ec;
    const auto r = run_command({"kugetsu-no-such-program-4711"}, "", ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
    CHECK(r.exit_code == -1);
    CHECK(r.output.empty());

    ec.clear();
    run_command({"/nonexistent/kugetsu/program"}, "", ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
}

TEST_CASE("run_command reports a working directory that does not exist") {
    temp_dir tmp;
    std::error_code ec;
    run_command({"true"}, tmp / "missing", ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
}

TEST_CASE("run_command rejects an empty argv or an argument containing NUL") {
    std::error_code ec;
    run_command({}, "", ec);
    CHECK(ec == kugetsu::errc::invalid_argv);
    ec.clear();
    run_command({"echo", std::string("a\0b", 3)}, "", ec);
    CHECK(ec == kugetsu::errc::invalid_argv);
}

TEST_CASE("run_command passes the given environment") {
    std::error_code ec;
    const auto r = run_command({"env"}, "", {"KUGETSU_PROBE=yes"}, ec);
    REQUIRE_FALSE(ec);
    CHECK(r.output == "KUGETSU_PROBE=yes\n");
}

TEST_CASE("run_command gives the program descriptors 0, 1 and 2 only, even ones the host leaked") {
    const int leaked = ::open("/dev/null", O_RDONLY);   // no O_CLOEXEC: a careless host
    REQUIRE(leaked >= 0);
    const auto r = run({"ls", "-1", "/proc/self/fd"});
    ::close(leaked);
    // 0, 1, 2, and the descriptor ls itself opened to read the directory (the lowest free: 3).
    CHECK(r.output == "0\n1\n2\n3\n");
}

TEST_CASE("run_command resets the signal mask and ignored signals for the program") {
    struct sigaction ign {}, old_pipe {};
    ign.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGPIPE, &ign, &old_pipe) == 0);
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    REQUIRE(::sigprocmask(SIG_BLOCK, &usr1, &old_mask) == 0);

    const auto r = run({"grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"});

    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGPIPE, &old_pipe, nullptr);
    // SigBlk/SigIgn are hex masks, bit n-1 for signal n. glibc's posix_spawn leaves its two
    // internal signals (32, 33) ignored; a glibc program replaces that at startup.
    const auto mask = [&](const std::string& key) {
        const auto at = r.output.find(key + ":\t");
        REQUIRE(at != std::string::npos);
        return std::stoull(r.output.substr(at + key.size() + 2, 16), nullptr, 16);
    };
    const unsigned long long standard = (1ull << 31) - 1;  // signals 1-31
    CHECK(mask("SigBlk") == 0);
    CHECK((mask("SigIgn") & standard) == 0);
}

// ---------------------------------------------------------------------------------------
// null_workspace

TEST_CASE("null_workspace lets the agent inherit the directory and removes nothing") {
    kugetsu::null_workspace ws;
    std::error_code ec = std::make_error_code(std::errc::io_error);
    CHECK(ws.prepare(task("t1"), ec).empty());
    CHECK_FALSE(ec);
    ec = std::make_error_code(std::errc::io_error);
    ws.remove(task("t1"), ec);
    CHECK_FALSE(ec);
}

// ---------------------------------------------------------------------------------------
// directory_workspace

TEST_CASE("directory_workspace creates a private directory per task and removes it when empty") {
    temp_dir tmp;
    const std::string root = tmp / "state/workspaces";
    kugetsu::directory_workspace ws(root);
    std::error_code ec;

    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);
    CHECK(path == root + "/t1");
    CHECK(fs::is_directory(path));
    CHECK(mode_of(root) == 0700);
    CHECK(mode_of(path) == 0700);

    ws.remove(task("t1"), ec);
    CHECK_FALSE(ec);
    CHECK_FALSE(exists(path));
    CHECK(is_empty_dir(root));  // back to the start state: ROOT stays, empty

    // The same again, from the state a first run left behind.
    CHECK(ws.prepare(task("t1"), ec) == path);
    CHECK_FALSE(ec);
    ws.remove(task("t1"), ec);
    CHECK_FALSE(ec);
    CHECK(is_empty_dir(root));
}

TEST_CASE("directory_workspace returns an absolute path for a relative root") {
    temp_dir tmp;
    const auto old = fs::current_path();
    fs::current_path(tmp.path());
    kugetsu::directory_workspace ws("./rel/");
    fs::current_path(old);

    std::error_code ec;
    CHECK(ws.root() == tmp / "rel");
    CHECK(ws.prepare(task("t1"), ec) == tmp / "rel/t1");
    CHECK_FALSE(ec);
    CHECK(fs::is_directory(tmp / "rel/t1"));
    ws.remove(task("t1"), ec);
    CHECK_FALSE(ec);
}

TEST_CASE("directory_workspace reuses a directory that already exists") {
    temp_dir tmp;
    kugetsu::directory_workspace ws(tmp.path());
    REQUIRE(::mkdir((tmp / "t1").c_str(), 0755) == 0);
    write_file(tmp / "t1/notes", "earlier attempt\n");
    std::error_code ec;
    CHECK(ws.prepare(task("t1"), ec) == tmp / "t1");
    CHECK_FALSE(ec);
    CHECK(read_file(tmp / "t1/notes") == "earlier attempt\n");
}

TEST_CASE("directory_workspace refuses a file or a symbolic link in place of the directory") {
    temp_dir tmp;
    kugetsu::directory_workspace ws(tmp.path());
    std::error_code ec;

    write_file(tmp / "t1", "not a directory");
    CHECK(ws.prepare(task("t1"), ec).empty());
    CHECK(ec == std::errc::not_a_directory);

    REQUIRE(::mkdir((tmp / "elsewhere").c_str(), 0700) == 0);
    REQUIRE(::symlink((tmp / "elsewhere").c_str(), (tmp / "t2").c_str()) == 0);
    CHECK(ws.prepare(task("t2"), ec).empty());
    CHECK(ec == std::errc::not_a_directory);
}

TEST_CASE("directory_workspace keeps a non-empty directory and says so") {
    temp_dir tmp;
    kugetsu::directory_workspace ws(tmp / "ws");
    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);
    write_file(path + "/result.txt", "the agent's work\n");

    ws.remove(task("t1"), ec);
    CHECK(ec == std::errc::directory_not_empty);
    CHECK(read_file(path + "/result.txt") == "the agent's work\n");
}

TEST_CASE("directory_workspace with remove_contents deletes the tree but nothing links point to") {
    temp_dir tmp;
    kugetsu::directory_workspace ws(tmp / "ws", {.remove_contents = true});
    REQUIRE(ws.opts().remove_contents);
    const std::string outside = tmp / "outside";
    REQUIRE(::mkdir(outside.c_str(), 0700) == 0);
    write_file(outside + "/keep.txt", "keep me\n");

    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);
    fs::create_directories(path + "/a/b/c");
    write_file(path + "/a/b/c/deep.txt", "deep\n");
    write_file(path + "/top.txt", "top\n");
    write_file(path + "/a/readonly.txt", "ro\n");
    fs::permissions(path + "/a/readonly.txt", fs::perms::owner_read);
    REQUIRE(::symlink(outside.c_str(), (path + "/link-to-dir").c_str()) == 0);
    REQUIRE(::symlink((outside + "/keep.txt").c_str(), (path + "/a/link-to-file").c_str()) == 0);
    REQUIRE(::mkfifo((path + "/a/fifo").c_str(), 0600) == 0);

    ws.remove(task("t1"), ec);
    CHECK_FALSE(ec);
    CHECK_FALSE(exists(path));
    CHECK(is_empty_dir(tmp / "ws"));
    CHECK(read_file(outside + "/keep.txt") == "keep me\n");
}

TEST_CASE("directory_workspace remove of a task that was never prepared is not an error") {
    temp_dir tmp;
    std::error_code ec;
    kugetsu::directory_workspace(tmp / "ws").remove(task("t1"), ec);
    CHECK_FALSE(ec);
    kugetsu::directory_workspace(tmp / "ws", {.remove_contents = true}).remove(task("t1"), ec);
    CHECK_FALSE(ec);
}

TEST_CASE("directory_workspace rejects a task id that is not a safe file name") {
    temp_dir tmp;
    kugetsu::directory_workspace ws(tmp / "ws");
    std::error_code ec;
    CHECK(ws.prepare(task("../escape"), ec).empty());
    CHECK(ec == kugetsu::errc::invalid_task_id);
    ws.remove(task("../escape"), ec);
    CHECK(ec == kugetsu::errc::invalid_task_id);
    CHECK_FALSE(exists(tmp / "escape"));
}

TEST_CASE("directory_workspace reports a root it cannot create") {
    temp_dir tmp;
    write_file(tmp / "file", "");
    kugetsu::directory_workspace ws(tmp / "file/ws");
    std::error_code ec;
    CHECK(ws.prepare(task("t1"), ec).empty());
    CHECK(ec == std::errc::not_a_directory);
}

// ---------------------------------------------------------------------------------------
// git_worktree_workspace

TEST_CASE("git_worktree_workspace prepares a worktree on branch kugetsu/<id>") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "worktrees", repo);
    std::error_code ec;

    const std::string path = ws.prepare(task("t1"), ec);
    INFO(ws.last_error_detail());
    REQUIRE_FALSE(ec);
    CHECK(path == tmp / "worktrees/t1");
    CHECK(mode_of(tmp / "worktrees") == 0700);
    CHECK(read_file(path + "/README") == "hello\n");
    CHECK(git(path, {"rev-parse", "--abbrev-ref", "HEAD"}).output == "kugetsu/t1\n");
    CHECK(git(path, {"rev-parse", "HEAD"}).output == git(repo, {"rev-parse", "HEAD"}).output);
    CHECK(listed(repo, path));
}

TEST_CASE("git_worktree_workspace removes a clean worktree and keeps the branch with its commits") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "worktrees", repo);
    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);

    // The agent commits its work.
    write_file(path + "/work.txt", "done\n");
    require_git(path, {"add", "work.txt"});
    require_git(path, {"commit", "-q", "-m", "agent work"});

    ws.remove(task("t1"), ec);
    INFO(ws.last_error_detail());
    CHECK_FALSE(ec);
    CHECK_FALSE(exists(path));
    CHECK_FALSE(listed(repo, path));
    CHECK(worktrees(repo) == std::vector<std::string>{repo});  // back to the start state
    CHECK(git(repo, {"log", "-1", "--format=%s", "kugetsu/t1"}).output == "agent work\n");
}

TEST_CASE("git_worktree_workspace can prepare a task again after remove") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "worktrees", repo);
    std::error_code ec;

    for (int attempt = 1; attempt <= 3; ++attempt) {
        INFO("attempt " << attempt);
        const std::string path = ws.prepare(task("t1"), ec);
        INFO(ws.last_error_detail());
        REQUIRE_FALSE(ec);
        CHECK(listed(repo, path));
        CHECK(git(path, {"rev-parse", "--abbrev-ref", "HEAD"}).output == "kugetsu/t1\n");
        ws.remove(task("t1"), ec);
        REQUIRE_FALSE(ec);
        CHECK_FALSE(exists(path));
    }
    CHECK(worktrees(repo) == std::vector<std::string>{repo});
}

TEST_CASE("git_worktree_workspace never resets a branch that holds commits HEAD lacks") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "worktrees", repo);
    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);
    write_file(path + "/work.txt", "done\n");
    require_git(path, {"add", "work.txt"});
    require_git(path, {"commit", "-q", "-m", "agent work"});
    ws.remove(task("t1"), ec);
    REQUIRE_FALSE(ec);
    // Preparing the same id again would move kugetsu/t1 back to HEAD: refused, work kept.
    CHECK(ws.prepare(task("t1"), ec).empty());
    CHECK(ec == kugetsu::errc::workspace_failed);
    CHECK(ws.last_error_detail().find("kugetsu/t1") != std::string::npos);
    CHECK(git(repo, {"log", "-1", "--format=%s", "kugetsu/t1"}).output == "agent work\n");
}

TEST_CASE("git_worktree_workspace keeps a dirty worktree and reports workspace_failed") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "worktrees", repo);
    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);

    std::string file;
    SECTION("with a modified file") {
        file = path + "/README";
        write_file(file, "changed by the agent\n");
    }
    SECTION("with an untracked file") {
        file = path + "/new.txt";
        write_file(file, "changed by the agent\n");
    }

    ws.remove(task("t1"), ec);
    CHECK(ec == kugetsu::errc::workspace_failed);
    CHECK_THAT(ws.last_error_detail(), Catch::Contains(path));  // git names the worktree
    CHECK(read_file(file) == "changed by the agent\n");
    CHECK(listed(repo, path));

    // Once the work is committed, remove succeeds.
    require_git(path, {"add", "-A"});
    require_git(path, {"commit", "-q", "-m", "agent work"});
    ws.remove(task("t1"), ec);
    CHECK_FALSE(ec);
    CHECK_FALSE(listed(repo, path));
}

TEST_CASE("git_worktree_workspace replaces a clean worktree left over from an earlier attempt") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    std::error_code ec;
    const std::string first = kugetsu::git_worktree_workspace(tmp / "wt", repo).prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);

    // A new dispatcher (e.g. after a crash) prepares the same task without a remove.
    kugetsu::git_worktree_workspace ws(tmp / "wt", repo);
    const std::string second = ws.prepare(task("t1"), ec);
    INFO(ws.last_error_detail());
    CHECK_FALSE(ec);
    CHECK(second == first);
    CHECK(worktrees(repo) == std::vector<std::string>{repo, second});
}

TEST_CASE("git_worktree_workspace prunes a leftover whose directory was deleted") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "wt", repo);
    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);
    fs::remove_all(path);

    CHECK(ws.prepare(task("t1"), ec) == path);
    INFO(ws.last_error_detail());
    CHECK_FALSE(ec);
    CHECK(listed(repo, path));
}

TEST_CASE("git_worktree_workspace keeps a dirty leftover and fails to prepare over it") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "wt", repo);
    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    REQUIRE_FALSE(ec);
    write_file(path + "/unsaved.txt", "work in progress\n");

    CHECK(ws.prepare(task("t1"), ec).empty());
    CHECK(ec == kugetsu::errc::workspace_failed);
    CHECK_THAT(ws.last_error_detail(), Catch::Contains(path));
    CHECK(read_file(path + "/unsaved.txt") == "work in progress\n");
    CHECK(listed(repo, path));
}

TEST_CASE("git_worktree_workspace reports git's complaint about a bad repository") {
    temp_dir tmp;
    std::string repo;
    SECTION("that does not exist") { repo = tmp / "no-such-repo"; }
    SECTION("that is not a git repository") {
        repo = tmp / "plain";
        REQUIRE(::mkdir(repo.c_str(), 0700) == 0);
    }
    kugetsu::git_worktree_workspace ws(tmp / "wt", repo);
    std::error_code ec;
    CHECK(ws.prepare(task("t1"), ec).empty());
    CHECK(ec == kugetsu::errc::workspace_failed);
    INFO(ws.last_error_detail());
    CHECK_FALSE(ws.last_error_detail().empty());
    if (!exists(repo)) CHECK_THAT(ws.last_error_detail(), Catch::Contains(repo));
    else CHECK_THAT(ws.last_error_detail(), Catch::Contains("not a git repository"));
    CHECK_FALSE(exists(tmp / "wt/t1"));

    ec.clear();
    ws.remove(task("t1"), ec);
    CHECK(ec == kugetsu::errc::workspace_failed);
}

TEST_CASE("git_worktree_workspace rejects a task id git cannot use as a branch") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    kugetsu::git_worktree_workspace ws(tmp / "wt", repo);
    std::error_code ec;
    CHECK(ws.prepare(task("a..b"), ec).empty());  // a valid task id, not a valid ref name
    CHECK(ec == kugetsu::errc::workspace_failed);
    CHECK_FALSE(ws.last_error_detail().empty());
    CHECK(worktrees(repo) == std::vector<std::string>{repo});

    CHECK(ws.prepare(task("../x"), ec).empty());
    CHECK(ec == kugetsu::errc::invalid_task_id);
}

TEST_CASE("git_worktree_workspace uses the item's repo before the default repo") {
    temp_dir tmp;
    const std::string a = make_repo(tmp, "a");
    const std::string b = make_repo(tmp, "b");
    kugetsu::git_worktree_workspace ws(tmp / "wt", a);
    std::error_code ec;
    const std::string path = ws.prepare(task("t1", b), ec);
    REQUIRE_FALSE(ec);
    CHECK(listed(b, path));
    CHECK_FALSE(listed(a, path));
    ws.remove(task("t1", b), ec);
    CHECK_FALSE(ec);
    CHECK(worktrees(b) == std::vector<std::string>{b});
}

TEST_CASE("git_worktree_workspace without any repository behaves like null_workspace") {
    temp_dir tmp;
    kugetsu::git_worktree_workspace ws(tmp / "wt");
    std::error_code ec = std::make_error_code(std::errc::io_error);
    CHECK(ws.prepare(task("t1"), ec).empty());
    CHECK_FALSE(ec);
    ec = std::make_error_code(std::errc::io_error);
    ws.remove(task("t1"), ec);
    CHECK_FALSE(ec);
    CHECK_FALSE(exists(tmp / "wt"));
}

TEST_CASE("git_worktree_workspace ignores a GIT_DIR inherited from the environment") {
    temp_dir tmp;
    const std::string a = make_repo(tmp, "a");
    const std::string b = make_repo(tmp, "b");
    const char* old = std::getenv("GIT_DIR");
    const std::string saved = old ? old : "";
    ::setenv("GIT_DIR", (b + "/.git").c_str(), 1);
    kugetsu::git_worktree_workspace ws(tmp / "wt", a);
    std::error_code ec;
    const std::string path = ws.prepare(task("t1"), ec);
    if (old) ::setenv("GIT_DIR", saved.c_str(), 1);
    else ::unsetenv("GIT_DIR");
    REQUIRE_FALSE(ec);
    CHECK(listed(a, path));
    CHECK_FALSE(listed(b, path));
}

TEST_CASE("git_worktree_workspace refuses a symbolic link planted at ROOT or at ROOT/<id>") {
    temp_dir tmp;
    const std::string repo = make_repo(tmp);
    // A clean worktree of the user's own, with an ignored file in it.
    const std::string mine = tmp / "mine";
    require_git(repo, {"worktree", "add", "-q", mine});
    write_file(mine + "/.env", "secret\n");
    fs::create_directories(tmp / "worktrees");
    fs::create_directory_symlink(mine, tmp / "worktrees/t1");
    kugetsu::git_worktree_workspace ws(tmp / "worktrees", repo);
    std::error_code ec;
    ws.remove(task("t1"), ec);
    CHECK(ec == kugetsu::errc::workspace_failed);
    CHECK(ws.last_error_detail().find(tmp / "worktrees/t1") != std::string::npos);
    CHECK(ws.last_error_detail().find("symbolic link") != std::string::npos);
    ws.prepare(task("t1"), ec);
    CHECK(ec == kugetsu::errc::workspace_failed);
    CHECK(read_file(mine + "/.env") == "secret\n");
    CHECK(listed(repo, mine));

    // ROOT itself a link to a directory elsewhere: nothing is checked out there.
    const std::string victim = tmp / "victim";
    fs::create_directories(victim);
    fs::create_directory_symlink(victim, tmp / "linked-root");
    kugetsu::git_worktree_workspace ws2(tmp / "linked-root", repo);
    ws2.prepare(task("t2"), ec);
    CHECK(ec == kugetsu::errc::workspace_failed);
    CHECK(ws2.last_error_detail().find("symbolic link") != std::string::npos);
    CHECK(is_empty_dir(victim));
}
