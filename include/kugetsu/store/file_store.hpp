// kugetsu/store/file_store.hpp: the durable store: a state directory of JSON files.
//
//   ROOT/queue/<task id>.json       one queue item per file: the record, the only truth
//   ROOT/sessions/<task id>.json    one dev session per live agent
//   ROOT/sessions/pm-agent.json     the PM's session (never counted toward the cap)
//   ROOT/pending/<key>.<task id>    an empty marker per pending task; <key> is its enqueue
//                                   time (20 digits), so names sort oldest first
//   ROOT/active/<task id>           an empty marker per claimed (notified) or running task
//
// The markers are an index, so that a pass never lists the whole queue: taking the oldest
// k pending tasks reads k records (and the names in pending/), reaping and recovering
// claims read only the active records, and finished records are never read again. A marker
// is only a hint: every record found through one is read and checked. The index keeps one
// invariant, whatever moment a process dies at: a task in a state has that state's marker.
// A write creates (and fsyncs) the marker of the new state before it writes the record, and
// removes the old state's marker after. So a marker can be stale (its record is in another
// state, or gone) but never missing. A stale marker is removed when an indexed read meets
// it (those run under the dispatcher's lock), and a pending marker whose record does not
// exist yet (an enqueue between its two steps) is left alone until it is 10 minutes old.
// A state directory from before the index is indexed once, by the first open(); every
// list_items() also re-creates any missing marker. The names in pending/ are listed once per
// object and then kept up to date from inotify (IN_Q_OVERFLOW: listed again), so that a
// long-lived process (a daemon) takes the oldest pending tasks without listing pending/.
//
// Every write goes to a temp file in the same directory, is fsynced, renamed over the
// record, and the directory is fsynced: after a crash a record is the old or the new one,
// never a mix. Files are opened relative to directory descriptors with O_NOFOLLOW, so a
// symlink planted in the state directory cannot redirect a write. Directories are created
// 0700 and files 0600.
//
// A record that cannot be read (bad JSON, a wrong field, an unknown version, over 1 MiB, a
// name that is not a task id, an id that differs from its name, a symlink, a FIFO or any
// file that is not a regular file) is moved to ROOT/quarantine/, never deleted, and the
// operation goes on without it: every other task keeps working. quarantined() lists what
// was moved, from where, to where and why. A dev session moved there is rebuilt from its
// task's queue record when that task is running, so a live agent always keeps its slot.
// With options::quarantine off, such a record fails the operation instead, with
// errc::store_corrupt, and stays where it is. Either way last_error_detail() names the file.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"
#include "../json.hpp"
#include "memory_store.hpp"

namespace kugetsu {

class file_store {
public:
    struct options {
        bool durable = true;      ///< fsync files and directories (off only for throwaway state)
        bool quarantine = true;   ///< move unreadable records to ROOT/quarantine/ and go on
    };

    /// A record moved out of the way (see the header comment).
    struct quarantined_record {
        std::string path;       ///< where it was: ROOT/queue/NAME or ROOT/sessions/NAME
        std::string moved_to;   ///< where it is now: ROOT/quarantine/...
        std::string why;        ///< what was wrong with it
        std::string task_id;    ///< the id its name gives (a queue record), else empty
        bool session = false;   ///< it was in sessions/
    };

    explicit file_store(std::string root) : file_store(std::move(root), options{}) {}
    file_store(std::string root, options opt) : root_(std::move(root)), opt_(opt) {}

    file_store(file_store&&) noexcept = default;
    file_store& operator=(file_store&&) noexcept = default;

    /// Creates ROOT, ROOT/queue and ROOT/sessions (0700) if missing and opens them. Called by
    /// every operation; call it first to learn early that the directory is unusable.
    void open(std::error_code& ec) {
        ec.clear();
        if (queue_ && sessions_ && pending_ && active_) return;
        if (detail::sys().mkdirat(AT_FDCWD, root_.c_str(), 0700) != 0 && errno != EEXIST) {
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
        if (!ec) sessions_ = open_sub(root.get(), "sessions", ec);
        pending_index_ = {};   // a new pending/ descriptor: watch it afresh
        if (!ec) pending_ = open_sub(root.get(), "pending", ec);
        if (!ec) active_ = open_sub(root.get(), "active", ec);
        if (ec) {
            queue_.reset();   // open() again next time
            return;
        }
        // A state directory from before the index, or whose first indexing was cut short:
        // index it now. ".indexed" (a dot name: never listed) is written once that is done.
        if (::faccessat(pending_.get(), indexed_name, F_OK, AT_SYMLINK_NOFOLLOW) != 0) {
            list_items(ec);
            if (!ec) {
                auto done = detail::open_at(pending_.get(), indexed_name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0600, ec);
                if (!ec && opt_.durable) ec = detail::fsync_fd(pending_.get());
                if (ec) fail(ec, std::string("pending/") + indexed_name, "create");
            }
            if (ec) queue_.reset();
        }
    }

    void create_item(const queue_item& it, std::error_code& ec) {
        const int q = queue_fd(ec);
        if (ec || !check_id(it.id, ec)) return;
        const int made = index_before(it, ec);
        if (ec) return;
        write_record(q, "queue", it.id, nlohmann::json(it).dump(2, ' ', false, nlohmann::json::error_handler_t::replace), /*no_replace=*/true, ec,
                     true, made);
        if (ec == std::errc::file_exists) {
            ec = errc::duplicate_task;
            detail_ = root_ + ": queue/" + it.id + ".json: " + ec.message();
            if (made >= 0) drop_marker(it);   // the marker this call made, for a record that is not its own
        }
        // A new record has no other state's marker to remove (a stale one left by an earlier
        // record of that id is harmless, and removed by the indexed read that meets it).
    }
    /// `visible`: the record is fsynced, the rename is not (see kugetsu::durability). A marker
    /// the write needs is always made durable first.
    void put_item(const queue_item& it, std::error_code& ec, durability d = durability::durable) {
        const int q = queue_fd(ec);
        if (ec || !check_id(it.id, ec)) return;
        const int made = index_before(it, ec);
        if (ec) return;
        write_record(q, "queue", it.id, nlohmann::json(it).dump(2, ' ', false, nlohmann::json::error_handler_t::replace), false, ec,
                     d == durability::durable, made);
        if (!ec) index_after(it);
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
    /// Every record, oldest first; re-creates any marker that is missing (see the header).
    std::vector<queue_item> list_items(std::error_code& ec) {
        auto v = list<queue_item>(queue_fd(ec), "queue", parse_item, ec, [](const queue_item&) { return true; });
        if (ec) return {};
        std::sort(v.begin(), v.end(), detail::older);
        repair_index(v, ec);
        if (ec) return {};
        return v;
    }
    /// Pending, notified and running items are found through the index (never a listing of
    /// the queue); the final states, rarely asked for, by reading every record. Call it with
    /// the dispatcher's lock held: it removes stale markers.
    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) {
        if (st == task_state::pending) return pending_items(limit, ec, 0);
        if (is_active(st)) return active_items(st, limit, ec);
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
    /// `visible`: the unlink is not fsynced (a session back after a power loss names a dead
    /// agent, and the first reap removes it).
    void remove_session(std::string_view id, std::error_code& ec, durability d = durability::durable) {
        const int dir = sessions_fd(ec);
        if (ec) return;
        const std::string name = std::string(id) + ".json";
        if (detail::sys().unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) {
            fail(detail::last_error(), "sessions/" + name, "unlink");
            ec = last_;
            return;
        }
        if (opt_.durable && d == durability::durable)
            if (auto e = detail::fsync_fd(dir)) {
                fail(e, "sessions", "fsync");
                ec = e;
            }
    }
    std::vector<session> list_sessions(std::error_code& ec) {
        return list<session>(sessions_fd(ec), "sessions", parse_session, ec, [](const session&) { return true; });
    }

    const std::string& root() const noexcept { return root_; }
    /// Every record this object has moved to ROOT/quarantine/, oldest first.
    const std::vector<quarantined_record>& quarantined() const noexcept { return quarantined_; }
    /// How the names in ROOT/quarantine/ of files moved from SUB/NAME begin ("queue.t1.json."):
    /// SUB, then NAME with characters outside [A-Za-z0-9._-] replaced by '_' (at most 120).
    static std::string quarantine_prefix(std::string_view sub, std::string_view name) {
        std::string safe;
        for (char c : name.substr(0, 120)) {
            const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                            c == '_' || c == '-';
            safe += ok ? c : '_';
        }
        return std::string(sub) + "." + safe + ".";
    }
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
                      bool no_replace, std::error_code& ec, bool sync_directory = true, int sync_before_rename = -1) {
        if (ec) return;
        if (!valid_task_id(id)) {
            ec = errc::invalid_task_id;
            return;
        }
        const char* step = nullptr;
        ec = detail::atomic_write_at(dir, id + ".json", text, opt_.durable, no_replace, &step, sync_directory, sync_before_rename);
        if (ec && step && std::string_view(step) == "fsync index")   // the marker's directory failed
            fail(ec, sync_before_rename == active_.get() ? "active" : "pending", std::string("fsync (index of ") + sub + "/" + id + ".json)");
        else if (ec)
            fail(ec, std::string(sub) + "/" + id + ".json", step ? step : "write");
    }

    template <class T>
    using parser = std::optional<T> (*)(std::string_view, std::error_code&, std::string&);

    /// Reads SUB/<id>.json: nullopt if there is none (or it was just quarantined).
    template <class T>
    std::optional<T> read_record(int dir, const char* sub, const std::string& id, parser<T> parse, std::error_code& ec) {
        const std::string name = id + ".json";
        // A record replaced while it was being quarantined is read again (see quarantine()).
        for (int round = 0;; ++round) {
            bool again = false;
            auto r = read_once<T>(dir, sub, id, name, parse, again, ec);
            if (!again || round == 2) return r;
        }
    }

    template <class T>
    std::optional<T> read_once(int dir, const char* sub, const std::string& id, const std::string& name,
                               parser<T> parse, bool& again, std::error_code& ec) {
        // O_NONBLOCK: a FIFO planted here must not hang the open.
        auto fd = detail::open_at(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0, ec);
        if (ec == std::errc::no_such_file_or_directory) {
            ec.clear();
            return std::nullopt;
        }
        if (ec == std::errc::too_many_symbolic_link_levels || ec == std::errc::no_such_device_or_address) {
            const char* what = ec == std::errc::too_many_symbolic_link_levels ? "a symbolic link, not a record" : "not a regular file";
            ec.clear();
            again = quarantine(dir, sub, name, nullptr, what, ec) == moved::restored;
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
        if (::fstat(fd.get(), &st) != 0) {
            fail(detail::last_error(), std::string(sub) + "/" + name, "fstat");
            ec = last_;
            return std::nullopt;
        }
        if (!detail::is_private(st)) {
            ec = errc::unsafe_state;
            fail(ec, std::string(sub) + "/" + name, "open");
            return std::nullopt;
        }
        if (!S_ISREG(st.st_mode)) {
            again = quarantine(dir, sub, name, &st, "not a regular file", ec) == moved::restored;
            return std::nullopt;
        }
        const file_key key = key_of(st);
        if constexpr (std::is_same_v<T, queue_item>) {
            if (auto c = cache_.find(id); c != cache_.end() && c->second.key == key) return c->second.item;
        }
        std::string text = detail::read_all(fd.get(), ec, max_record_bytes);
        std::string why;
        if (ec == std::errc::file_too_large) {
            why = "larger than " + std::to_string(max_record_bytes >> 20) + " MiB";
        } else if (ec) {
            fail(ec, std::string(sub) + "/" + name, "read");
            return std::nullopt;
        }
        std::optional<T> r;
        std::error_code pec = ec;
        if (!ec) r = parse(text, pec, why);
        ec.clear();
        if (r && record_id(*r) != id) {
            r.reset();
            pec = errc::invalid_record;
            why = "its id does not match its file name";
        }
        if (!r) {
            const auto e = pec ? pec : make_error_code(errc::invalid_record);
            again = quarantine(dir, sub, name, &st, why + " (" + e.message() + ")", ec) == moved::restored;
            if (ec) last_ = e;
            return std::nullopt;
        }
        if constexpr (std::is_same_v<T, queue_item>) cache_[id] = cached{key, *r};
        return r;
    }

    enum class moved { away, vanished, restored, no };

    /// Moves SUB/NAME to ROOT/quarantine/ and records why. `seen`: the file that was judged
    /// (its inode), if it was opened. Returns
    ///   away      moved, recorded in quarantined();
    ///   vanished  already gone (another process moved or replaced it first);
    ///   restored  the name had been replaced by a new record after it was judged: the new
    ///             record was put back and must be read again;
    ///   no        quarantining is off or failed: ec = store_corrupt, the file stays.
    moved quarantine(int dir, const char* sub, const std::string& name, const struct stat* seen,
                     const std::string& why, std::error_code& ec) {
        const std::string from = root_ + "/" + sub + "/" + name;
        auto refuse = [&](const std::string& also) {
            last_ = errc::invalid_record;
            detail_ = from + ": " + why + also;
            ec = errc::store_corrupt;
            return moved::no;
        };
        if (!opt_.quarantine) return refuse("");
        std::error_code qec;
        const int q = quarantine_fd(qec);
        if (qec) return refuse("; could not open " + root_ + "/quarantine: " + qec.message());
        const std::string to = quarantine_name(sub, name);
        if (detail::sys().renameat(dir, name.c_str(), q, to.c_str()) != 0) {
            if (errno == ENOENT) return moved::vanished;
            return refuse("; could not move it to " + root_ + "/quarantine/" + to + ": " + detail::last_error().message());
        }
        struct stat now{};
        if (seen && (::fstatat(q, to.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != seen->st_ino ||
                     now.st_dev != seen->st_dev)) {
            // A writer renamed a new record over the name after it was read: put that one
            // back, unless an even newer one is there already (then it stays in quarantine).
            if (detail::sys().linkat(q, to.c_str(), dir, name.c_str(), 0) == 0) {
                detail::sys().unlinkat(q, to.c_str(), 0);
                return moved::restored;
            }
        }
        if (opt_.durable) {
            detail::fsync_fd(dir);
            detail::fsync_fd(q);
        }
        const std::string id(id_of_record_name(name));
        const bool session = std::string_view(sub) == "sessions";
        if (!session && !id.empty()) cache_.erase(id);
        quarantined_.push_back({from, root_ + "/quarantine/" + to, why, session ? std::string() : id, session});
        return moved::away;
    }

    /// The task id in a record's file name "<id>.json"; empty if the name is not one.
    static std::string_view id_of_record_name(std::string_view n) noexcept {
        if (n.size() <= 5 || n.substr(n.size() - 5) != ".json" || !valid_task_id(n.substr(0, n.size() - 5))) return {};
        return n.substr(0, n.size() - 5);
    }

    /// SUB.NAME.<UTC time>.<pid>.<n>: quarantine_prefix() then a unique suffix.
    static std::string quarantine_name(const char* sub, const std::string& name) {
        static std::atomic<std::uint64_t> counter{0};
        const std::time_t t = std::time(nullptr);
        std::tm tm{};
        ::gmtime_r(&t, &tm);
        char stamp[32];
        std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        return quarantine_prefix(sub, name) + stamp + "." + std::to_string(::getpid()) + "." + std::to_string(++counter);
    }

    int quarantine_fd(std::error_code& ec) {
        if (quarantine_) return quarantine_.get();
        auto root = detail::open_path(root_, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, ec);
        if (ec) return -1;
        quarantine_ = open_sub(root.get(), "quarantine", ec);
        return quarantine_.get();
    }

    /// A dev session was unreadable: its task's record says which agent it was. Write the
    /// session again, so that agent still counts toward the cap.
    std::optional<session> rebuild_session(const std::string& id, std::error_code& ec) {
        std::optional<queue_item> it;
        if (id == pm_session_id) {
            for (auto& x : active_items(task_state::running, static_cast<std::size_t>(-1), ec))
                if (x.role == role::pm && x.process) it = x;
        } else {
            it = get_item(id, ec);
        }
        if (ec || !it || it->state != task_state::running || !it->process || session_id_for(*it) != id) return std::nullopt;
        session s{id, it->role, it->id, it->process, it->workdir, it->started_at.value_or(it->updated_at)};
        put_session(s, ec);
        if (ec) return std::nullopt;
        return s;
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
    std::vector<T> list(int dir, const char* sub, parser<T> parse, std::error_code& ec, Keep keep) {
        std::vector<T> out;
        if (ec) return out;
        std::vector<std::string> names = names_in(dir, sub, ec);
        if (ec) return out;
        std::sort(names.begin(), names.end());
        for (const auto& name : names) {
            const std::string_view n = name;
            if (id_of_record_name(n).empty()) {
                struct stat st{};
                const bool seen = ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
                if (quarantine(dir, sub, name, seen ? &st : nullptr, "not a record name (<task id>.json)", ec) == moved::no) {
                    last_ = errc::invalid_task_id;
                    return {};
                }
                continue;
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
            const std::size_t moved_before = quarantined_.size();
            auto r = read_record<T>(dir, sub, id, parse, ec);
            if (ec) return {};
            if constexpr (std::is_same_v<T, session>) {
                if (!r && quarantined_.size() > moved_before) r = rebuild_session(id, ec);
                if (ec) return {};
            }
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


    // ---- the index (see the header comment) -------------------------------------------------

    static constexpr const char* indexed_name = ".indexed";
    static constexpr long orphan_age_seconds = 600;

    static constexpr bool is_active(task_state s) noexcept {
        return s == task_state::notified || s == task_state::running;
    }

    bool check_id(const std::string& id, std::error_code& ec) {
        if (valid_task_id(id)) return true;
        ec = errc::invalid_task_id;
        return false;
    }

    /// "<key>.<id>": the enqueue time in microseconds, shifted to be unsigned (times before
    /// 1970 sort first), 20 digits, so that name order is (enqueued_at, id) order.
    static std::string pending_marker(const queue_item& it) {
        const auto us = static_cast<std::uint64_t>(it.enqueued_at.time_since_epoch().count()) + (std::uint64_t(1) << 63);
        char key[24];
        std::snprintf(key, sizeof key, "%020llu", static_cast<unsigned long long>(us));
        return std::string(key) + "." + it.id;
    }
    /// The task id in a pending marker's name; empty if the name is not one.
    static std::string_view id_of_pending_marker(std::string_view n) noexcept {
        if (n.size() < 22 || n[20] != '.') return {};
        for (char c : n.substr(0, 20))
            if (c < '0' || c > '9') return {};
        const auto id = n.substr(21);
        return valid_task_id(id) ? id : std::string_view{};
    }

    /// Creates DIR/NAME if missing, and fsyncs DIR when it was made (unless `sync` is false: the
    /// caller's record write fsyncs it before its rename). True if this call made it.
    bool ensure_marker(int dir, const char* sub, const std::string& name, std::error_code& ec, bool sync = true) {
        // O_NONBLOCK: whatever is planted under the name (a FIFO) must not hang the open; a
        // name that exists, whatever it is, is a marker.
        auto fd = detail::open_at(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK, 0600, ec);
        if (ec == std::errc::file_exists) {
            ec.clear();
            return false;
        }
        if (ec) {
            fail(ec, std::string(sub) + "/" + name, "create marker");
            ec = last_;
            return false;
        }
        if (auto e = fd.close()) {
            fail(e, std::string(sub) + "/" + name, "close marker");
            ec = e;
            return true;
        }
        if (opt_.durable && sync)
            if (auto e = detail::fsync_fd(dir)) {
                fail(e, sub, "fsync");
                ec = e;
            }
        return true;
    }
    /// Removes a marker. A failure leaves a stale marker: harmless (see the header).
    void unlink_marker(int dir, const std::string& name) noexcept {
        detail::sys().unlinkat(dir, name.c_str(), 0);
        if (dir == pending_.get()) pending_index_.names.erase(name);   // inotify says so too, later
    }

    /// Before a record is written in state it.state: that state's marker exists. Returns the
    /// directory of a marker this call made (the write fsyncs it before its rename), or -1.
    int index_before(const queue_item& it, std::error_code& ec) {
        if (it.state == task_state::pending)
            return ensure_marker(pending_.get(), "pending", pending_marker(it), ec, false) ? pending_.get() : -1;
        if (is_active(it.state)) return ensure_marker(active_.get(), "active", it.id, ec, false) ? active_.get() : -1;
        return -1;
    }
    /// After it was written: the other states' markers go.
    void index_after(const queue_item& it) noexcept try {
        if (it.state != task_state::pending) unlink_marker(pending_.get(), pending_marker(it));
        if (!is_active(it.state)) unlink_marker(active_.get(), it.id);
    } catch (...) {   // out of memory for a name: a stale marker, harmless
    }
    void drop_marker(const queue_item& it) noexcept try {
        if (it.state == task_state::pending) unlink_marker(pending_.get(), pending_marker(it));
        else if (is_active(it.state)) unlink_marker(active_.get(), it.id);
    } catch (...) {
    }

    /// The names in a directory, dot names (temp files, ".indexed") left out, unsorted.
    std::vector<std::string> names_in(int dir, const char* sub, std::error_code& ec) {
        std::vector<std::string> names;
        // A fresh open file description: readdir on a dup would move the shared offset.
        auto fd = detail::open_at(dir, ".", O_RDONLY | O_DIRECTORY, 0, ec);
        if (ec) {
            fail(ec, sub, "open");
            return names;
        }
        DIR* d = ::fdopendir(fd.get());
        if (!d) {
            ec = detail::last_error();
            fail(ec, sub, "fdopendir");
            return names;
        }
        fd.release();
        std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
        for (;;) {
            errno = 0;
            const dirent* e = ::readdir(d);
            if (!e) {
                if (errno) {
                    ec = detail::last_error();
                    fail(ec, sub, "readdir");
                    names.clear();
                }
                return names;
            }
            const std::string_view name = e->d_name;
            if (name.empty() || name.front() == '.') continue;   // ".", "..", temp files
            names.emplace_back(name);
        }
    }

    /// The oldest `limit` pending items: marker names in order, each record read and checked.
    std::vector<queue_item> pending_items(std::size_t limit, std::error_code& ec, int round) {
        std::vector<queue_item> out;
        const int q = queue_fd(ec);
        if (ec || limit == 0) return out;
        const auto& names = pending_names(ec);
        if (ec) return out;
        bool misplaced = false;
        std::string name;   // the marker at hand; the next one is the first name after it
        for (auto next = names.begin(); out.size() < limit && next != names.end(); next = names.upper_bound(name)) {
            name = *next;   // a copy: the checks below may remove it from `names`
            const std::string id(id_of_pending_marker(name));
            if (id.empty()) continue;   // not a marker: not ours, left alone
            auto it = read_record<queue_item>(q, "queue", id, parse_item, ec);
            if (ec) return {};
            if (!it) {   // an enqueue between its two steps, or a record gone (quarantined)
                struct stat st{};
                if (::fstatat(pending_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                    st.st_mtim.tv_sec + orphan_age_seconds < std::time(nullptr))
                    unlink_marker(pending_.get(), name);
                continue;
            }
            if (it->state == task_state::pending && pending_marker(*it) == name) {
                out.push_back(std::move(*it));
                continue;
            }
            unlink_marker(pending_.get(), name);   // stale
            if (it->state == task_state::pending) {   // its enqueue time was changed by hand
                ensure_marker(pending_.get(), "pending", pending_marker(*it), ec);
                if (ec) return {};
                misplaced = true;
            }
        }
        if (misplaced && round == 0) return pending_items(limit, ec, 1);   // in its place now
        return out;
    }

    /// The names in pending/, in order: listed the first time, then kept up to date from an
    /// inotify watch on the directory (listed again if the watch is lost or overflows, and
    /// every time if inotify is not available).
    const std::set<std::string, std::less<>>& pending_names(std::error_code& ec) {
        auto& p = pending_index_;
        if (!p.tried) {
            p.tried = true;
            const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
            if (fd >= 0) {
                p.watch = detail::unique_fd(fd);
                // The watch is on the directory this object opened (O_NOFOLLOW), through its
                // descriptor, never on a path someone could swap.
                const std::string self = "/proc/self/fd/" + std::to_string(pending_.get());
                if (::inotify_add_watch(fd, self.c_str(), IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR) < 0)
                    p.watch.reset();
            }
        }
        if (p.watch) read_pending_events();
        if (!p.valid) {
            auto v = names_in(pending_.get(), "pending", ec);
            if (ec) {
                p.names.clear();
                return p.names;
            }
            p.names = std::set<std::string, std::less<>>(std::make_move_iterator(v.begin()), std::make_move_iterator(v.end()));
            p.valid = bool(p.watch);   // without a watch: listed again next time
        }
        return p.names;
    }

    void read_pending_events() noexcept {
        auto& p = pending_index_;
        alignas(inotify_event) char buf[16384];
        for (;;) {
            const ssize_t n = ::read(p.watch.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                if (n < 0 && errno != EAGAIN) p.valid = false;
                return;
            }
            for (const char* at = buf; at < buf + n;) {
                const auto* e = reinterpret_cast<const inotify_event*>(at);
                at += sizeof(inotify_event) + e->len;
                if (e->mask & (IN_Q_OVERFLOW | IN_IGNORED)) {   // events lost, or the watch is gone
                    p.valid = false;
                    if (e->mask & IN_IGNORED) {
                        p.watch.reset();
                        return;
                    }
                    continue;
                }
                if (!p.valid || e->len == 0) continue;
                const std::string_view name(e->name);   // NUL-padded
                if (name.empty() || name.front() == '.') continue;
                try {
                    if (e->mask & (IN_CREATE | IN_MOVED_TO)) p.names.emplace(name);
                    else if (auto i = p.names.find(name); i != p.names.end()) p.names.erase(i);
                } catch (...) {   // out of memory: list again next time
                    p.valid = false;
                }
            }
        }
    }

    /// The items in state st (notified or running), oldest first, at most `limit`.
    std::vector<queue_item> active_items(task_state st, std::size_t limit, std::error_code& ec) {
        std::vector<queue_item> out;
        const int q = queue_fd(ec);
        if (ec) return out;
        std::vector<std::string> names = names_in(active_.get(), "active", ec);
        if (ec) return out;
        for (const auto& name : names) {
            if (!valid_task_id(name)) continue;   // not a marker: left alone
            auto it = read_record<queue_item>(q, "queue", name, parse_item, ec);
            if (ec) return {};
            if (!it || !is_active(it->state)) {   // stale: only a lock holder makes a task active
                unlink_marker(active_.get(), name);
                continue;
            }
            if (it->state == st) out.push_back(std::move(*it));
        }
        const auto n = std::min(limit, out.size());
        std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), detail::older);
        out.resize(n);
        return out;
    }

    /// Re-creates the marker of every pending or active item in `items` that has none.
    void repair_index(const std::vector<queue_item>& items, std::error_code& ec) {
        std::vector<std::string> pending, active;
        bool listed = false;
        for (const auto& it : items) {
            if (it.state != task_state::pending && !is_active(it.state)) continue;
            if (!listed) {
                pending = names_in(pending_.get(), "pending", ec);
                if (!ec) active = names_in(active_.get(), "active", ec);
                if (ec) return;
                std::sort(pending.begin(), pending.end());
                std::sort(active.begin(), active.end());
                listed = true;
            }
            const bool p = it.state == task_state::pending;
            const std::string name = p ? pending_marker(it) : it.id;
            const auto& have = p ? pending : active;
            if (std::binary_search(have.begin(), have.end(), name)) continue;
            ensure_marker(p ? pending_.get() : active_.get(), p ? "pending" : "active", name, ec);
            if (ec) return;
        }
    }

    static constexpr std::size_t max_record_bytes = 1 << 20;

    std::string root_;
    options opt_;
    detail::unique_fd queue_;
    detail::unique_fd sessions_;
    detail::unique_fd pending_;
    detail::unique_fd active_;
    detail::unique_fd quarantine_;
    struct pending_index {
        detail::unique_fd watch;   ///< inotify on pending/
        bool tried = false;
        bool valid = false;        ///< names is what pending/ holds
        std::set<std::string, std::less<>> names;
    };
    pending_index pending_index_;
    std::vector<quarantined_record> quarantined_;
    std::unordered_map<std::string, cached> cache_;   // queue/<id>.json, by file identity
    std::error_code last_;
    std::string detail_;
};

static_assert(kugetsu::store<file_store>);
static_assert(kugetsu::store_with_durability<file_store>);

} // namespace kugetsu
