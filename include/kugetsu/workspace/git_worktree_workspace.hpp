// kugetsu/workspace/git_worktree_workspace.hpp: one git worktree per task, on its own branch.
//
// Use it when each agent should work in its own checkout of a repository, so that agents of
// concurrent tasks never edit the same files and each task's commits stay on a branch.
//
// For an item whose `repo` is set (else the default repo), prepare() runs
//
//   git -C REPO worktree add -B kugetsu/<id> ROOT/<id> HEAD
//
// and returns ROOT/<id> (absolute). The branch kugetsu/<id> outlives the worktree: whatever
// the agent commits stays reachable after remove(). -B (re)starts the branch at REPO's HEAD,
// so a new attempt of the same task starts fresh: the tip of an earlier attempt is then
// reachable only from the branch's reflog (`git reflog kugetsu/<id>`; bare repositories keep
// no reflog by default). remove() runs
//
//   git -C REPO worktree remove ROOT/<id>        (never --force)
//   git -C REPO worktree prune
//
// so a worktree with modified or untracked files is KEPT, and reported as workspace_failed.
// Before `worktree add`, prepare() prunes stale registrations and removes a worktree left at
// ROOT/<id> by an earlier attempt, again without --force: a dirty leftover is kept and
// prepare() fails. With no repo at all (item and default both empty) the model behaves as
// null_workspace: prepare() returns "" and remove() does nothing.
//
//   creates                          | kept after remove                   | on failure
//   ROOT/<id> + branch kugetsu/<id>  | the branch; a worktree with changes | errc::workspace_failed
//
// Every git failure (git missing, not a repository, dirty worktree, a task id git rejects
// as a branch name such as "a..b") is errc::workspace_failed; last_error_detail() returns
// what git printed. git runs through detail::run_command (no shell), stdin /dev/null, in
// the caller's environment minus the repository-local GIT_* variables (`git rev-parse
// --local-env-vars`), so a GIT_DIR inherited from a hook cannot redirect `-C REPO`.
// A relative REPO is resolved against the current directory at each call; ROOT is made
// absolute at construction (git would resolve a relative ROOT against REPO).
//
// Not thread-safe: one object per thread (last_error_detail() is per object). Distinct
// objects, also in distinct processes, may prepare distinct task ids of one repository
// concurrently: git locks what it shares.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"
#include "../detail/run.hpp"
#include "../error.hpp"
#include "../types.hpp"
#include "directory_workspace.hpp"

namespace kugetsu {

namespace detail {

/// The caller's environment without the variables that would make git look at another
/// repository than the one given with -C (the list of `git rev-parse --local-env-vars`).
inline std::vector<std::string> git_environment() {
    static constexpr std::string_view local_vars[] = {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT", "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE", "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS",
        "GIT_REPLACE_REF_BASE", "GIT_PREFIX", "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE",
        "GIT_COMMON_DIR",
    };
    std::vector<std::string> env;
    for (char** e = ::environ; e && *e; ++e) {
        const std::string_view v(*e);
        const std::string_view name = v.substr(0, v.find('='));
        bool local = false;
        for (auto l : local_vars) local = local || name == l;
        if (!local) env.emplace_back(v);
    }
    return env;
}

/// Two paths name the same existing file (git may print a path resolved through links).
inline bool same_file(const std::string& a, const std::string& b) noexcept {
    if (a == b) return true;
    struct stat sa {}, sb {};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

} // namespace detail

class git_worktree_workspace {
public:
    /// Requires: `root` is not empty. Effects: remembers ROOT (made absolute against the
    /// current directory) and the repository used for items whose `repo` is empty.
    explicit git_worktree_workspace(std::string root, std::string default_repo = "")
        : root_(detail::absolute_path(std::move(root))), default_repo_(std::move(default_repo)) {
        assert(!root_.empty());
    }

    /// Effects: creates ROOT (0700) if missing, prunes stale worktree registrations, removes
    /// a clean worktree left at ROOT/<id>, then adds the worktree on branch kugetsu/<id> at
    /// REPO's HEAD. Returns: ROOT/<id>, or "" with no repo. Errors: workspace_failed (see
    /// last_error_detail(); a dirty leftover is kept), invalid_task_id.
    std::string prepare(const queue_item& it, std::error_code& ec) {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        const std::string& repo = repo_for(it);
        if (repo.empty()) return {};
        if (!check_id(it, ec)) return {};
        const std::string path = path_for(it);
        if (const auto e = detail::make_directories(root_, 0700)) {
            fail("cannot create " + root_ + ": " + e.message(), ec);
            return {};
        }
        if (!no_links(path, ec)) return {};
        bool registered = false;
        if (!git(repo, {"worktree", "prune"}, ec)) return {};
        if (!is_registered(repo, path, registered, ec)) return {};
        if (registered && !git(repo, {"worktree", "remove", path}, ec)) return {};
        // -B resets an existing branch to HEAD: only allowed when that loses no commit.
        if (branch_has_own_commits(repo, branch_for(it))) {
            fail("branch " + branch_for(it) + " has commits that HEAD lacks; kept (delete or merge it to reuse id \"" +
                     it.id + "\")",
                 ec);
            return {};
        }
        if (!git(repo, {"worktree", "add", "-B", branch_for(it), path, "HEAD"}, ec)) return {};
        return path;
    }

    /// True when prepare(it) makes a worktree (the item or the default names a repo): the
    /// dispatcher then commits the attempt before preparing (workspace_with_effects).
    bool has_effects(const queue_item& it) const noexcept { return !repo_for(it).empty(); }

    /// Effects: removes the worktree at ROOT/<id> if it is clean (the branch stays), then
    /// prunes. A worktree that is not there is not an error, so remove() may follow a failed
    /// prepare(). Errors: workspace_failed, and a worktree with modified or untracked files
    /// is kept; invalid_task_id.
    void remove(const queue_item& it, std::error_code& ec) {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        const std::string& repo = repo_for(it);
        if (repo.empty()) return;
        if (!check_id(it, ec)) return;
        const std::string path = path_for(it);
        if (!no_links(path, ec)) return;
        bool registered = false;
        if (!git(repo, {"worktree", "prune"}, ec)) return;
        if (!is_registered(repo, path, registered, ec)) return;
        if (registered && !git(repo, {"worktree", "remove", path}, ec)) return;
        git(repo, {"worktree", "prune"}, ec);
    }

    /// What git printed for the most recent failure (kept until the next failure), or a
    /// sentence saying why git could not be run. Empty if nothing has failed yet.
    const std::string& last_error_detail() const noexcept { return detail_; }

    /// ROOT/<id>, whether or not it exists.
    std::string path_for(const queue_item& it) const { return root_ + "/" + it.id; }
    /// The branch a task's worktree is on: kugetsu/<id>.
    static std::string branch_for(const queue_item& it) { return "kugetsu/" + it.id; }
    /// The item's repo, or the default repo if it has none ("" = no worktree).
    const std::string& repo_for(const queue_item& it) const noexcept {
        return it.repo.empty() ? default_repo_ : it.repo;
    }
    const std::string& root() const noexcept { return root_; }
    const std::string& default_repo() const noexcept { return default_repo_; }

private:
    bool check_id(const queue_item& it, std::error_code& ec) {
        if (valid_task_id(it.id)) return true;
        detail_ = "invalid task id: " + it.id;
        ec = errc::invalid_task_id;
        return false;
    }

    // A symbolic link at ROOT or ROOT/<id> would make git check out into, or remove, a
    // directory elsewhere: refused, as is a ROOT that others may write.
    bool no_links(const std::string& path, std::error_code& ec) {
        struct stat st {};
        if (::lstat(root_.c_str(), &st) == 0 && (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode) || !detail::is_private(st))) {
            fail(root_ + ": refused: " + (S_ISLNK(st.st_mode) ? "a symbolic link" : !S_ISDIR(st.st_mode) ? "not a directory"
                                                               : "owned by another user or writable by others"), ec);
            return false;
        }
        if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
            fail(path + ": refused: a symbolic link", ec);
            return false;
        }
        return true;
    }

    void fail(std::string detail, std::error_code& ec) {
        while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
        detail_ = std::move(detail);
        ec = errc::workspace_failed;
    }

    // git -C REPO args...; false (ec = workspace_failed, detail_ = its output) unless it exits 0.
    bool git(const std::string& repo, std::vector<std::string> args, std::error_code& ec,
             std::string* out = nullptr) {
        std::vector<std::string> argv{"git", "-C", repo};
        argv.insert(argv.end(), std::make_move_iterator(args.begin()),
                    std::make_move_iterator(args.end()));
        std::error_code run_ec;
        auto r = detail::run_command(argv, "", detail::git_environment(), run_ec);
        if (run_ec) {
            fail("cannot run git: " + run_ec.message(), ec);
            return false;
        }
        if (r.exit_code != 0) {
            if (r.output.empty()) r.output = "git exited with status " + std::to_string(r.exit_code);
            fail(std::move(r.output), ec);
            return false;
        }
        if (out) *out = std::move(r.output);
        return true;
    }

    // True if refs/heads/BRANCH exists and is not an ancestor of HEAD (so -B would drop
    // commits). Any doubt (git fails) counts as true: keep the work.
    bool branch_has_own_commits(const std::string& repo, const std::string& branch) {
        std::error_code ec;
        const std::string ref = "refs/heads/" + branch;
        auto exists = detail::run_command({"git", "-C", repo, "rev-parse", "--verify", "--quiet", ref}, "",
                                          detail::git_environment(), ec);
        if (ec) return true;
        if (exists.exit_code != 0) return false;   // no such branch
        auto merged = detail::run_command({"git", "-C", repo, "merge-base", "--is-ancestor", ref, "HEAD"}, "",
                                          detail::git_environment(), ec);
        return ec || merged.exit_code != 0;
    }

    // Whether `path` is a registered worktree of `repo`. Stale registrations have just been
    // pruned, so a registered worktree exists on disk: a missing path is not registered.
    // (The listing is capped at 64 KiB, some 400 worktrees; a leftover missed beyond that
    // makes `worktree add` fail, it never deletes anything.)
    bool is_registered(const std::string& repo, const std::string& path, bool& registered,
                       std::error_code& ec) {
        registered = false;
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) return true;
        std::string list;
        if (!git(repo, {"worktree", "list", "--porcelain"}, ec, &list)) return false;
        constexpr std::string_view key = "worktree ";
        std::size_t pos = 0;
        while (pos < list.size() && !registered) {
            std::size_t end = list.find('\n', pos);
            if (end == std::string::npos) end = list.size();
            const std::string_view line(list.data() + pos, end - pos);
            if (line.substr(0, key.size()) == key)
                registered = detail::same_file(std::string(line.substr(key.size())), path);
            pos = end + 1;
        }
        return true;
    }

    std::string root_;
    std::string default_repo_;
    std::string detail_;
};

static_assert(kugetsu::workspace<git_worktree_workspace> && kugetsu::with_error_detail<git_worktree_workspace>);

} // namespace kugetsu
