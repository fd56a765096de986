// kugetsu/store/file_store.hpp: the durable store: a state directory of JSON files.
//
//   ROOT/queue/<task id>.json       one queue item per file
//   ROOT/sessions/<task id>.json    one dev session per live agent
//   ROOT/sessions/pm-agent.json     the PM's session (never counted toward the cap)
//
// Every write goes to a temp file in the same directory, is fsynced, renamed over the
// record, and the directory is fsynced: after a crash a record is the old or the new one,
// never a mix. Files are opened relative to directory descriptors with O_NOFOLLOW, so a
// symlink planted in the state directory cannot redirect a write. Directories are created
// 0700 and files 0600. A record that cannot be read (bad JSON, a wrong field, a name that
// is not a task id, a file whose id differs from its name) fails the operation with
// errc::store_corrupt; last_error_detail() names the file and what was wrong.
#pragma once

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"
#include "../json.hpp"
#include "memory_store.hpp"

namespace kugetsu {

class file_store {
public:
    struct options {
        bool durable = true;   ///< fsync files and directories (off only for throwaway state)
    };

    explicit file_store(std::string root) : file_store(std::move(root), options{}) {}
    file_store(std::string root, options opt) : root_(std::move(root)), opt_(opt) {}

    file_store(file_store&&) noexcept = default;
    file_store& operator=(file_store&&) noexcept = default;

    /// Creates ROOT, ROOT/queue and ROOT/sessions (0700) if missing and opens them. Called by
    /// every operation; call it first to learn early that the directory is unusable.
    void open(std::error_code& ec) {
        ec.clear();
        if (queue_ && sessions_) return;
        if (::mkdir(root_.c_str(), 0700) != 0 && errno != EEXIST) {
            ec = detail::last_error();
            last_ = ec;
            detail_ = root_ + ": mkdir: " + ec.message();
            return;
        }
        auto root = detail::open_path(root_, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, ec);
        if (!ec) ec = detail::check_private(root.get());
        if (ec) {
            last_ = ec;
            detail_ = root_ + ": open: " + ec.message();
            return;
        }
        queue_ = open_sub(root.get(), "queue", ec);
        if (ec) return;
        sessions_ = open_sub(root.get(), "sessions", ec);
    }

    void create_item(const queue_item& it, std::error_code& ec) {
        write_record(queue_fd(ec), "queue", it.id, nlohmann::json(it).dump(2, ' ', false, nlohmann::json::error_handler_t::replace), /*no_replace=*/true, ec);
        if (ec == std::errc::file_exists) {
            ec = errc::duplicate_task;
            detail_ = root_ + ": queue/" + it.id + ".json: " + ec.message();
        }
    }
    void put_item(const queue_item& it, std::error_code& ec) {
        write_record(queue_fd(ec), "queue", it.id, nlohmann::json(it).dump(2, ' ', false, nlohmann::json::error_handler_t::replace), false, ec);
    }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) {
        const int dir = queue_fd(ec);
        if (ec) return std::nullopt;
        if (!valid_task_id(id)) {
            ec = errc::invalid_task_id;
            return std::nullopt;
        }
        return read_record<queue_item>(dir, "queue", std::string(id), parse_item, ec);
    }
    std::vector<queue_item> list_items(std::error_code& ec) {
        auto v = list<queue_item>(queue_fd(ec), "queue", parse_item, ec, [](const queue_item&) { return true; });
        std::sort(v.begin(), v.end(), detail::older);
        return v;
    }
    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) {
        auto v = list<queue_item>(queue_fd(ec), "queue", parse_item, ec,
                                  [&](const queue_item& it) { return it.state == st; });
        const auto n = std::min(limit, v.size());
        std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), v.end(), detail::older);
        v.resize(n);
        return v;
    }
    void put_session(const session& se, std::error_code& ec) {
        write_record(sessions_fd(ec), "sessions", se.id, nlohmann::json(se).dump(2, ' ', false, nlohmann::json::error_handler_t::replace), false, ec);
    }
    void remove_session(std::string_view id, std::error_code& ec) {
        const int dir = sessions_fd(ec);
        if (ec) return;
        const std::string name = std::string(id) + ".json";
        if (detail::sys().unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT)
            return fail(detail::last_error(), "sessions/" + name, "unlink");
        if (opt_.durable)
            if (auto e = detail::fsync_fd(dir)) fail(e, "sessions", "fsync");
    }
    std::vector<session> list_sessions(std::error_code& ec) {
        return list<session>(sessions_fd(ec), "sessions", parse_session, ec, [](const session&) { return true; });
    }

    const std::string& root() const noexcept { return root_; }
    /// After a failed operation: which file, which step, and what was wrong.
    const std::string& last_error_detail() const noexcept { return detail_; }

private:
    int queue_fd(std::error_code& ec) {
        open(ec);
        return queue_.get();
    }
    int sessions_fd(std::error_code& ec) {
        open(ec);
        return sessions_.get();
    }

    detail::unique_fd open_sub(int root, const char* name, std::error_code& ec) {
        if (detail::sys().mkdirat(root, name, 0700) != 0 && errno != EEXIST) {
            fail(detail::last_error(), root_ + "/" + name, "mkdir");
            ec = last_;
            return {};
        }
        auto fd = detail::open_at(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, ec);
        if (!ec) ec = detail::check_private(fd.get());
        if (ec) {
            fail(ec, name, "open");
            fd.reset();
        }
        return fd;
    }

    void fail(std::error_code e, const std::string& what, const std::string& step) {
        last_ = e;
        detail_ = root_ + ": " + what + ": " + step + ": " + e.message();
    }

    void write_record(int dir, const char* sub, const std::string& id, const std::string& text,
                      bool no_replace, std::error_code& ec) {
        if (ec) return;
        if (!valid_task_id(id)) {
            ec = errc::invalid_task_id;
            return;
        }
        ec = detail::atomic_write_at(dir, id + ".json", text, opt_.durable, no_replace);
        if (ec) fail(ec, std::string(sub) + "/" + id + ".json", "write");
    }

    template <class T>
    std::optional<T> read_record(int dir, const char* sub, const std::string& id,
                                 std::optional<T> (*parse)(std::string_view, std::error_code&, std::string&),
                                 std::error_code& ec) {
        const std::string name = id + ".json";
        auto fd = detail::open_at(dir, name.c_str(), O_RDONLY | O_NOFOLLOW, 0, ec);
        if (ec == std::errc::no_such_file_or_directory) {
            ec.clear();
            return std::nullopt;
        }
        if (ec) {
            fail(ec, std::string(sub) + "/" + name, "open");
            return std::nullopt;
        }
        // Records are replaced by rename, never written in place: a file whose inode, size
        // and times are unchanged holds what this object parsed before (queue items only:
        // a pass reads every item, and parsing dominates its cost).
        struct stat st{};
        const bool stated = ::fstat(fd.get(), &st) == 0;
        if (stated && !detail::is_private(st)) {
            ec = errc::unsafe_state;
            fail(ec, std::string(sub) + "/" + name, "open");
            return std::nullopt;
        }
        const bool cacheable = std::is_same_v<T, queue_item> && stated;
        const file_key key = key_of(st);
        if constexpr (std::is_same_v<T, queue_item>) {
            if (cacheable)
                if (auto c = cache_.find(id); c != cache_.end() && c->second.key == key) return c->second.item;
        }
        const std::string text = detail::read_all(fd.get(), ec, 1 << 20);
        if (ec) {
            fail(ec, std::string(sub) + "/" + name, "read");
            return std::nullopt;
        }
        std::string why;
        auto r = parse(text, ec, why);
        if (r && record_id(*r) != id) {
            r.reset();
            why = "its id does not match its file name";
        }
        if (!r) {
            last_ = ec ? ec : make_error_code(errc::invalid_record);
            detail_ = root_ + "/" + sub + "/" + name + ": " + why + " (" + last_.message() + ")";
            ec = errc::store_corrupt;
        }
        if constexpr (std::is_same_v<T, queue_item>) {
            if (r && cacheable) cache_[id] = cached{key, *r};
        }
        return r;
    }

    struct file_key {
        ino_t ino;
        off_t size;
        time_t mtime;
        long mtime_ns;
        time_t ctime;
        long ctime_ns;
        friend bool operator==(const file_key&, const file_key&) = default;
    };
    struct cached {
        file_key key;
        queue_item item;
    };
    static file_key key_of(const struct stat& st) noexcept {
        return {st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec};
    }

    static const std::string& record_id(const queue_item& it) { return it.id; }
    static const std::string& record_id(const session& s) { return s.id; }

    /// The records of `sub` for which keep(record) holds, in name order.
    template <class T, class Keep>
    std::vector<T> list(int dir, const char* sub,
                        std::optional<T> (*parse)(std::string_view, std::error_code&, std::string&),
                        std::error_code& ec, Keep keep) {
        std::vector<T> out;
        if (ec) return out;
        // A fresh open file description: readdir on a dup would move the shared offset.
        auto fd = detail::open_at(dir, ".", O_RDONLY | O_DIRECTORY, 0, ec);
        if (ec) {
            fail(ec, sub, "open");
            return out;
        }
        DIR* d = ::fdopendir(fd.get());
        if (!d) {
            ec = detail::last_error();
            fail(ec, sub, "fdopendir");
            return out;
        }
        fd.release();
        std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
        std::vector<std::string> names;
        for (;;) {
            errno = 0;
            const dirent* e = ::readdir(d);
            if (!e) {
                if (errno) {
                    ec = detail::last_error();
                    fail(ec, sub, "readdir");
                    return out;
                }
                break;
            }
            const std::string_view name = e->d_name;
            if (name.empty() || name.front() == '.') continue;   // ".", "..", temp files
            names.emplace_back(name);
        }
        std::sort(names.begin(), names.end());
        for (const auto& name : names) {
            const std::string_view n = name;
            if (n.size() <= 5 || n.substr(n.size() - 5) != ".json" || !valid_task_id(n.substr(0, n.size() - 5))) {
                ec = errc::store_corrupt;
                last_ = errc::invalid_task_id;
                detail_ = root_ + "/" + sub + "/" + name + ": not a record name (<task id>.json)";
                return {};
            }
            const std::string id = name.substr(0, name.size() - 5);
            if constexpr (std::is_same_v<T, queue_item>) {
                // Unchanged since this object parsed it: one stat, no open, no parse.
                struct stat st{};
                if (auto c = cache_.find(id); c != cache_.end() && ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                              S_ISREG(st.st_mode) && c->second.key == key_of(st)) {
                    if (keep(c->second.item)) out.push_back(c->second.item);
                    continue;
                }
            }
            auto r = read_record<T>(dir, sub, id, parse, ec);
            if (ec) return {};
            if (r && keep(*r)) out.push_back(std::move(*r));   // removed since readdir: skip
        }
        if constexpr (std::is_same_v<T, queue_item>) {
            if (cache_.size() > names.size())   // forget records that are gone
                std::erase_if(cache_, [&](const auto& kv) {
                    return !std::binary_search(names.begin(), names.end(), kv.first + ".json");
                });
        }
        return out;
    }

    std::string root_;
    options opt_;
    detail::unique_fd queue_;
    detail::unique_fd sessions_;
    std::unordered_map<std::string, cached> cache_;   // queue/<id>.json, by file identity
    std::error_code last_;
    std::string detail_;
};

static_assert(kugetsu::store<file_store>);

} // namespace kugetsu
