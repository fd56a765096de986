// kugetsu/workspace/directory_workspace.hpp: one private directory per task: ROOT/<task id>.
//
// Use it when agents need a scratch directory of their own and no source checkout.
// prepare() creates ROOT (0700, with any missing parents, if it is missing) and ROOT/<id>
// (0700; one that is already there is reused) and returns its absolute path. remove()
// rmdir()s ROOT/<id>: an empty directory goes, a non-empty one is KEPT and ec reports
// ENOTEMPTY, because a workspace that still holds files may hold the agent's work. With
// `remove_contents` the whole tree is deleted instead (without following symbolic links).
//
//   creates           | kept after remove             | on failure
//   ROOT/<id>, 0700   | a non-empty directory         | errno in ec (ENOTEMPTY, EACCES, ...)
//
// ROOT is made absolute against the working directory at construction. Errors are system
// codes carrying errno; a task id that is not a safe file name gives errc::invalid_task_id.
// Not thread-safe for one task id: the dispatcher never prepares or removes one task twice
// at once. Distinct objects and distinct ids may be used concurrently.
#pragma once

#include <cassert>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"
#include "../error.hpp"
#include "../types.hpp"

namespace kugetsu {

namespace detail {

/// `p` made absolute against the current directory, without "./" in front or '/' at the end.
/// Symbolic links and ".." are left alone: resolving them lexically could change the target.
inline std::string absolute_path(std::string p) {
    while (p.size() > 2 && p.compare(0, 2, "./") == 0) p.erase(0, 2);
    if (!p.empty() && p.front() != '/') {
        std::error_code ec;
        const auto cwd = std::filesystem::current_path(ec);
        if (!ec) p = (p == ".") ? cwd.string() : cwd.string() + "/" + p;
    }
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

/// mkdir -p with `mode` for every directory it creates. An existing directory (or symbolic
/// link to one) is fine; anything else in the way is ENOTDIR.
inline std::error_code make_directories(const std::string& path, mode_t mode) {
    for (std::size_t i = path.find('/', 1);; i = path.find('/', i + 1)) {
        const std::string part = path.substr(0, i);
        if (sys().mkdirat(AT_FDCWD, part.c_str(), mode) != 0) {
            const int e = errno;
            struct stat st {};
            if (::stat(part.c_str(), &st) != 0) return errno_code(e == EEXIST ? errno : e);
            if (!S_ISDIR(st.st_mode)) return std::make_error_code(std::errc::not_a_directory);
        }
        if (i == std::string::npos) return {};
    }
}

/// Deletes dirfd/name and everything under it. Symbolic links are removed, never followed,
/// and a directory swapped for a link mid-way is unlinked, not entered (openat O_NOFOLLOW).
/// Carries on past an entry it cannot delete and returns the first error. Gone: not an error.
inline std::error_code remove_tree_at(int dirfd, const char* name) noexcept {
    std::error_code ec;
    unique_fd fd = open_at(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, ec);
    if (ec == std::errc::no_such_file_or_directory) return {};
    if (ec == std::errc::not_a_directory || ec == std::errc::too_many_symbolic_link_levels) {
        if (sys().unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) return last_error();
        return {};
    }
    if (ec) return ec;
    DIR* d = ::fdopendir(fd.get());
    if (!d) return last_error();
    const int self = fd.release();  // closedir() closes it
    std::error_code first;
    for (;;) {
        errno = 0;
        const dirent* e = ::readdir(d);
        if (!e) {
            if (errno != 0) first = last_error();
            break;
        }
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
        std::error_code r;
        if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN)
            r = remove_tree_at(self, e->d_name);
        else if (sys().unlinkat(self, e->d_name, 0) != 0 && errno != ENOENT)
            r = last_error();
        if (r && !first) first = r;
    }
    ::closedir(d);
    if (first) return first;
    if (sys().unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) return last_error();
    return {};
}

} // namespace detail

/// Construction options of directory_workspace.
struct directory_workspace_options {
    /// remove() deletes ROOT/<id> with everything in it. Off by default: a non-empty
    /// workspace is kept and reported, never deleted silently.
    bool remove_contents = false;
};

class directory_workspace {
public:
    using options = directory_workspace_options;

    /// Requires: `root` is not empty. Effects: remembers ROOT, made absolute against the
    /// current directory; nothing is created before the first prepare().
    explicit directory_workspace(std::string root, options opt = {})
        : root_(detail::absolute_path(std::move(root))), opt_(opt) {
        assert(!root_.empty());
    }

    /// Effects: creates ROOT and ROOT/<id> (0700) if missing. Returns: ROOT/<id>, absolute.
    /// Errors: invalid_task_id; ENOTDIR if ROOT/<id> exists and is not a directory (a symbolic
    /// link is not accepted); errno from mkdir. On error nothing is returned ("").
    std::string prepare(const queue_item& it, std::error_code& ec) {
        ec.clear();
        if (!valid_task_id(it.id)) {
            ec = errc::invalid_task_id;
            return {};
        }
        if ((ec = detail::make_directories(root_, 0700))) return {};
        std::string path = path_for(it);
        if (detail::sys().mkdirat(AT_FDCWD, path.c_str(), 0700) != 0) {
            if (errno != EEXIST) {
                ec = detail::last_error();
                return {};
            }
            struct stat st {};
            if (::lstat(path.c_str(), &st) != 0) {
                ec = detail::last_error();
                return {};
            }
            if (!S_ISDIR(st.st_mode)) {
                ec = std::make_error_code(std::errc::not_a_directory);
                return {};
            }
        }
        return path;
    }

    /// Effects: removes ROOT/<id> if it is empty (or, with remove_contents, with everything
    /// in it). A missing directory is not an error, so remove() may follow a failed prepare().
    /// Errors: ENOTEMPTY, and the directory is kept; invalid_task_id; errno from rmdir/unlink.
    void remove(const queue_item& it, std::error_code& ec) {
        ec.clear();
        if (!valid_task_id(it.id)) {
            ec = errc::invalid_task_id;
            return;
        }
        const std::string path = path_for(it);
        if (opt_.remove_contents) {
            ec = detail::remove_tree_at(AT_FDCWD, path.c_str());
            return;
        }
        if (detail::sys().unlinkat(AT_FDCWD, path.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT)
            return;
        // POSIX allows EEXIST for a non-empty directory; report one code.
        ec = (errno == EEXIST) ? std::make_error_code(std::errc::directory_not_empty)
                               : detail::last_error();
    }

    /// ROOT/<id>, whether or not it exists.
    std::string path_for(const queue_item& it) const { return root_ + "/" + it.id; }
    const std::string& root() const noexcept { return root_; }
    const options& opts() const noexcept { return opt_; }

private:
    std::string root_;
    options opt_;
};

static_assert(kugetsu::workspace<directory_workspace>);

} // namespace kugetsu
