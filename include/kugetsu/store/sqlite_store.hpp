// kugetsu/store/sqlite_store.hpp: the store in one SQLite database (HOME/state.db): a unit of
// work is one transaction, committed with at most one fdatasync. Target kugetsu::sqlite
// (Debian's libsqlite3-dev, 3.40).
//
// USE IT with a lock shared by every dispatcher on the database (flock_lock on HOME/lock):
// the lock decides who runs a critical section at once and wakes waiters at once; the store
// makes what a critical section writes atomic and durable in one commit.
//
//   sqlite_store s(home + "/state.db");
//   s.open(ec);                 // creates it 0600 (its directory must be private), migrates
//
// HOW A UNIT OF WORK MAPS ONTO SQLITE.
//   begin()            BEGIN IMMEDIATE: this connection becomes the one writer; another
//                      waits in the busy handler (sleeps of 50 us growing to 2 ms, up to
//                      options::busy_timeout, then errc::store_busy naming the file).
//   reads and writes   prepared statements kept for the life of the store; reads inside the
//                      transaction see its writes, nobody else does.
//   commit(visible)    COMMIT. The WAL is written, not synced (synchronous=NORMAL).
//   commit(durable)    COMMIT, then one fdatasync of the WAL (its sqlite3_file, through the
//                      VFS). So one durable sync per unit, however much it wrote.
//   rollback()         ROLLBACK; so does the death of the process (the WAL frames of an
//                      uncommitted transaction are never part of the database).
// An operation outside a unit runs in a unit of its own, committed durably.
//
// THE BELL. After every commit that wrote something (after its sync, for a durable one) the
// store writes one byte to `<database>-bell`. A process that sleeps on inotify (a daemon, a
// waiter, `events --follow`) watches that file, not the WAL: SQLite writes the WAL before the
// commit is visible (visibility is a write to the -shm mapping, which inotify never sees), so
// a waiter woken by the WAL could read too early and then sleep through the commit. The bell
// rings only once the commit can be read. Its content means nothing.
//
// The database is in WAL mode (readers never wait for the writer), with a schema version
// (PRAGMA user_version) and forward migrations run at open() in one transaction; a database
// written by a newer kugetsu (a higher version) is refused with errc::unsupported_version,
// one that is not kugetsu's (PRAGMA application_id) with errc::store_corrupt. Its directory
// must belong to the effective user and be writable by nobody else, and the database, its WAL
// and its shared-memory file are created 0600 and checked (errc::unsafe_state names the file).
// SQLite opens its files O_CLOEXEC and with O_NOFOLLOW on the database; never open state.db
// yourself while a store is open: closing any descriptor of it drops SQLite's POSIX locks.
// A connection must not be used in a forked child (fork_spawner's children never touch it).
//
// SCHEMA (version 1). Rows keep kugetsu's JSON records (json.hpp), validated strictly on
// every read, beside the columns the queries need:
//   tasks(id PRIMARY KEY, state, enqueued_us, record)   index (state, enqueued_us, id): a
//                                                       pass seeks its state, never scans
//                                                       finished tasks
//   sessions(id PRIMARY KEY, task_id, record)
//   events(seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id, record)   the outbox
//   quarantine(n, source, task_id, raw, why, at_us)     rows that failed validation
//   limits(one row: cap, max_attempts, kill_grace_ms)
//   meta(key, value)                                    e.g. imported_from_files
//
// QUARANTINE. A row that fails validation (bad JSON, a wrong field, an id or state that
// disagrees with its columns) is moved, in the unit that found it (or a unit of its own for
// a read outside one), to `quarantine` with its raw text and the reason; a task row also
// gets a task_error event, reason "quarantined", in the same unit. It is never skipped
// silently or deleted. quarantined() lists the moves of committed units. A session row that
// is moved is rebuilt from its task when the task is running with a known process, so the
// live agent keeps its slot. With options::quarantine off, such a row is errc::store_corrupt
// instead and stays. A database SQLite reports as corrupt (SQLITE_CORRUPT, SQLITE_NOTADB)
// is errc::store_corrupt naming the file; check() runs PRAGMA integrity_check and validates
// every row.
//
// Errors name the database file and the step in last_error_detail(). SQLite's I/O errors
// carry errno (sqlite3_system_errno): ENOSPC, EIO, EACCES. Not thread-safe: one store per
// thread (the connection is opened SQLITE_OPEN_NOMUTEX). Move-only.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"
#include "../json.hpp"

namespace kugetsu {

namespace detail {

/// "kugetsu-unix": SQLite's default VFS, but a WAL that already exists is opened without
/// SQLITE_OPEN_CREATE. The unix VFS fsyncs the directory at the first sync of every journal or
/// WAL it opened with that flag, i.e. once per process, although the WAL's directory entry
/// became durable when the WAL was made (sqlite_store makes it, then fsyncs the directory).
/// Everything else is the default VFS's own code: the files it opens are its files.
inline const char* sqlite_vfs_name() noexcept {
    static const char* name = [] () -> const char* {
        static sqlite3_vfs inner_copy{};
        static sqlite3_vfs vfs{};
        sqlite3_vfs* inner = sqlite3_vfs_find(nullptr);
        if (!inner) return nullptr;
        inner_copy = *inner;
        vfs = *inner;
        vfs.zName = "kugetsu-unix";
        vfs.pAppData = &inner_copy;
        vfs.pNext = nullptr;
        vfs.xOpen = [](sqlite3_vfs* self, sqlite3_filename path, sqlite3_file* f, int flags, int* out) -> int {
            auto* in = static_cast<sqlite3_vfs*>(self->pAppData);
            if ((flags & SQLITE_OPEN_WAL) && (flags & SQLITE_OPEN_CREATE) && path) {
                struct stat st{};
                if (::lstat(path, &st) == 0 && S_ISREG(st.st_mode)) flags &= ~SQLITE_OPEN_CREATE;
            }
            return in->xOpen(in, path, f, flags, out);
        };
        if (sqlite3_vfs_register(&vfs, 0) != SQLITE_OK) return nullptr;
        return vfs.zName;
    }();
    return name;
}

} // namespace detail

struct sqlite_store_options {
    std::chrono::milliseconds busy_timeout{30000};
    bool quarantine = true;       ///< move rows that fail validation aside (else: store_corrupt)
    std::string vfs;              ///< SQLite VFS name ("": the default); tests inject faults with one
    /// false: begin() and commit() do nothing and every statement commits on its own. Only
    /// for the negative tests that show the cap needs the critical section (the `kugetsu`
    /// command's KUGETSU_TEST_NO_LOCK): units are then neither atomic nor exclusive.
    bool units = true;
};

class sqlite_store {
public:
    /// The schema version this code writes (PRAGMA user_version).
    static constexpr int schema_version = 3;
    /// PRAGMA application_id of a kugetsu database: "KUGS".
    static constexpr std::int32_t application_id = 0x4b554753;

    using options = sqlite_store_options;

    /// What check() found.
    struct check_report {
        std::vector<std::string> integrity;   ///< PRAGMA integrity_check's lines other than "ok"
        std::vector<std::string> bad_rows;    ///< rows that fail validation: table, key, why
        int tasks = 0, sessions = 0, events = 0, quarantined = 0;
        bool ok() const noexcept { return integrity.empty() && bad_rows.empty(); }
    };

    explicit sqlite_store(std::string path, options o = {}) : path_(std::move(path)), opt_(std::move(o)) {}
    sqlite_store(sqlite_store&& o) noexcept { *this = std::move(o); }
    sqlite_store& operator=(sqlite_store&& o) noexcept {
        if (this != &o) {
            close();
            path_ = std::move(o.path_);
            opt_ = std::move(o.opt_);
            db_ = std::exchange(o.db_, nullptr);
            stmts_ = std::exchange(o.stmts_, {});
            unit_ = std::exchange(o.unit_, false);
            quarantined_ = std::move(o.quarantined_);
            bell_ = std::move(o.bell_);
            changes_at_begin_ = o.changes_at_begin_;
            unit_quarantined_ = std::move(o.unit_quarantined_);
            detail_ = std::move(o.detail_);
            busy_since_ = o.busy_since_;
            // The busy handler was registered with the address of `o`: point it here, or a
            // moved store's BEGIN consults a dead object and may fail at once (SQLITE_BUSY).
            if (db_) sqlite3_busy_handler(db_, &sqlite_store::on_busy, this);
            if (db_) sqlite3_wal_hook(db_, &sqlite_store::on_wal, this);
            wal_frames_ = o.wal_frames_;
        }
        return *this;
    }
    sqlite_store(const sqlite_store&) = delete;
    sqlite_store& operator=(const sqlite_store&) = delete;
    ~sqlite_store() { close(); }

    /// Opens (creating it 0600 if missing) and migrates the database. Every operation opens
    /// it first if needed; call this to learn of a problem up front.
    void open(std::error_code& ec) {
        ec.clear();
        if (db_) return;
        open_db(ec);
        if (ec) close();
    }
    void open() {
        std::error_code ec;
        open(ec);
        if (ec) throw error(ec, detail_);
    }
    bool is_open() const noexcept { return db_ != nullptr; }
    const std::string& path() const noexcept { return path_; }
    /// After a failure: the file, the step and SQLite's message.
    const std::string& last_error_detail() const noexcept { return detail_; }

    // ---- the unit of work -----------------------------------------------------------------

    void begin(std::error_code& ec) {
        if (!ready(ec)) return;
        if (!opt_.units) return;
        if (unit_) return fail(ec, errc::invalid_transition, "begin: a unit is already open");
        if (!exec_stmt(stmt::begin, "begin", ec)) return;
        unit_ = true;
        changes_at_begin_ = sqlite3_total_changes64(db_);
    }

    void commit(durability d, std::error_code& ec) {
        ec.clear();
        detail_.clear();
        if (!unit_) return;
        if (!exec_stmt(stmt::commit, "commit", ec)) {
            rollback();
            return;
        }
        unit_ = false;
        for (auto& q : unit_quarantined_) quarantined_.push_back(std::move(q));
        unit_quarantined_.clear();
        if (d == durability::durable) sync_wal(ec);
        if (sqlite3_total_changes64(db_) != changes_at_begin_) ring();
        // A host that never calls checkpoint() (or a daemon that is never idle): here, rather
        // than let the WAL grow without end.
        if (wal_frames_ >= checkpoint_frames_inline) {
            std::error_code cec;
            checkpoint(cec);
        }
    }

    /// Frames in the WAL after which a checkpoint is due (see checkpoint()).
    static constexpr int checkpoint_frames = 64;
    static constexpr int checkpoint_frames_inline = 1000;

    /// True when the WAL holds checkpoint_frames or more (as this connection last saw it).
    bool checkpoint_due() const noexcept { return wal_frames_ >= checkpoint_frames; }

    /// Copies the WAL into the database and truncates it (PRAGMA wal_checkpoint(TRUNCATE)),
    /// without waiting for anyone: while another process reads or writes, it does nothing.
    /// Every store does it when it closes with checkpoint_due(); a daemon does it when it is
    /// idle, outside its critical section. Costs two fsyncs (the WAL, the database).
    void checkpoint(std::error_code& ec) {
        ec.clear();
        detail_.clear();
        if (!db_ || unit_) return;
        no_wait_ = true;
        int log = 0, done = 0;
        const int rc = sqlite3_wal_checkpoint_v2(db_, "main", SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
        no_wait_ = false;
        busy_since_.reset();
        if (rc == SQLITE_OK) wal_frames_ = 0;
        else if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) fail_rc(ec, rc, "checkpoint");
    }

    void rollback() noexcept {
        unit_quarantined_.clear();
        if (!unit_ || !db_) return;
        unit_ = false;
        if (sqlite3_get_autocommit(db_)) return;   // SQLite already rolled back (an I/O error)
        sqlite3_stmt* s = stmts_[static_cast<std::size_t>(stmt::rollback)];
        if (!s && sqlite3_prepare_v3(db_, "ROLLBACK", -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
            sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
            return;
        }
        stmts_[static_cast<std::size_t>(stmt::rollback)] = s;
        sqlite3_step(s);
        sqlite3_reset(s);
    }

    /// True between begin() and the end of the unit (and, with options::units off, never).
    bool in_unit() const noexcept { return unit_; }

    // ---- tasks ----------------------------------------------------------------------------

    void create_item(const queue_item& it, std::error_code& ec) {
        write_unit(ec, [&] {
            const int rc = write_task(stmt::insert_task, it, ec);
            if (ec) return;
            if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
                ec = errc::duplicate_task;
                detail_ = path_ + ": a task \"" + it.id + "\" already exists";
                return;
            }
            if (rc != SQLITE_DONE) fail_rc(ec, rc, "insert task \"" + it.id + "\"");
        });
    }

    void put_item(const queue_item& it, std::error_code& ec) {
        write_unit(ec, [&] {
            const int rc = write_task(stmt::upsert_task, it, ec);
            if (!ec && rc != SQLITE_DONE) fail_rc(ec, rc, "write task \"" + it.id + "\"");
        });
    }

    /// Deletes the task's row (its events stay).
    void remove_item(std::string_view id, std::error_code& ec) {
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::remove_task, ec);
            if (!s) return;
            bind_text(s, 1, id);
            if (const int rc = step_done(s); rc != SQLITE_DONE) fail_rc(ec, rc, "remove task \"" + std::string(id) + "\"");
        });
    }

    /// Deletes the events of every task that no longer exists, except the last event of all
    /// (a relay's position). One scan of the events table.
    void prune_events(std::error_code& ec) {
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::prune_events, ec);
            if (!s) return;
            if (const int rc = step_done(s); rc != SQLITE_DONE) fail_rc(ec, rc, "prune events");
        });
    }

    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) {
        std::optional<queue_item> out;
        read_tasks(ec, stmt::get_task, [&](sqlite3_stmt* s) { bind_text(s, 1, id); },
                   [&](queue_item&& it) { out = std::move(it); });
        return out;
    }

    std::vector<queue_item> list_items(std::error_code& ec) {
        std::vector<queue_item> v;
        read_tasks(ec, stmt::list_tasks, [](sqlite3_stmt*) {}, [&](queue_item&& it) { v.push_back(std::move(it)); });
        return v;
    }

    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) {
        std::vector<queue_item> v;
        if (limit == 0) {
            ec.clear();
            return v;
        }
        const auto lim = limit > static_cast<std::size_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(limit);
        read_tasks(ec, stmt::tasks_in_state,
                   [&](sqlite3_stmt* s) {
                       sqlite3_bind_int(s, 1, static_cast<int>(st));
                       sqlite3_bind_int64(s, 2, lim);
                   },
                   [&](queue_item&& it) { v.push_back(std::move(it)); });
        return v;
    }

    std::vector<queue_item> runnable(std::size_t limit, const std::vector<std::string>& skip, std::error_code& ec) {
        std::vector<queue_item> v;
        if (limit == 0) {
            ec.clear();
            return v;
        }
        const auto lim = limit > static_cast<std::size_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(limit);
        const std::string groups = nlohmann::json(skip).dump();
        read_tasks(ec, stmt::runnable,
                   [&](sqlite3_stmt* s) {
                       sqlite3_bind_int(s, 1, static_cast<int>(task_state::pending));
                       sqlite3_bind_int64(s, 2, lim);
                       bind_text(s, 3, groups);
                   },
                   [&](queue_item&& it) { v.push_back(std::move(it)); });
        return v;
    }

    // ---- sessions -------------------------------------------------------------------------

    void put_session(const session& se, std::error_code& ec) {
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::upsert_session, ec);
            if (!s) return;
            const std::string rec = nlohmann::json(se).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
            bind_text(s, 1, se.id);
            bind_text(s, 2, se.task_id);
            bind_text(s, 3, rec);
            if (const int rc = step_done(s); rc != SQLITE_DONE) fail_rc(ec, rc, "write session \"" + se.id + "\"");
        });
    }

    void remove_session(std::string_view id, std::error_code& ec) {
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::delete_session, ec);
            if (!s) return;
            bind_text(s, 1, id);
            if (const int rc = step_done(s); rc != SQLITE_DONE)
                fail_rc(ec, rc, "remove session \"" + std::string(id) + "\"");
        });
    }

    std::vector<session> list_sessions(std::error_code& ec) {
        std::vector<session> v;
        if (!ready(ec)) return v;
        std::vector<bad_row> bad;
        {
            sqlite3_stmt* s = prepare(stmt::list_sessions, ec);
            if (!s) return v;
            int rc;
            while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const std::string id = col_text(s, 0), task_id = col_text(s, 1), rec = col_text(s, 2);
                std::string why;
                auto se = parse_session(rec, ec, why);
                if (se && se->id != id) se.reset(), why = "its id is not its key";
                if (se && se->task_id != task_id) se.reset(), why = "its task_id disagrees with its column";
                ec.clear();
                if (se) v.push_back(std::move(*se));
                else bad.push_back({"sessions", id, task_id, rec, why});
            }
            sqlite3_reset(s);
            if (rc != SQLITE_DONE) return fail_rc(ec, rc, "read sessions"), std::vector<session>{};
        }
        if (!bad.empty()) {
            if (!opt_.quarantine) return corrupt(ec, bad.front()), std::vector<session>{};
            move_to_quarantine(bad, ec, [&](const bad_row& b) {
                // The live agent keeps its slot: rebuild its session from a running task.
                std::error_code iec;
                auto it = get_item(b.task_id, iec);
                if (iec || !it || it->state != task_state::running || !it->process) return;
                session se{b.key, it->role, it->id, it->process, it->workdir, it->started_at.value_or(it->updated_at)};
                std::error_code pec;
                put_session(se, pec);
                if (!pec) v.push_back(std::move(se));
            });
            if (ec) return {};
            std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.id < b.id; });
        }
        return v;
    }

    // ---- events and limits ----------------------------------------------------------------

    std::uint64_t append_event(const event& e, std::error_code& ec) {
        std::uint64_t seq = 0;
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::insert_event, ec);
            if (!s) return;
            event copy = e;
            copy.seq = 0;   // the row's key is its number
            const std::string rec = nlohmann::json(copy).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            bind_text(s, 1, e.task_id);
            bind_text(s, 2, rec);
            if (const int rc = step_done(s); rc != SQLITE_DONE) return fail_rc(ec, rc, "append event");
            seq = static_cast<std::uint64_t>(sqlite3_last_insert_rowid(db_));
        });
        return ec ? 0 : seq;
    }

    std::vector<event> events_after(std::uint64_t seq, std::size_t limit, std::error_code& ec) {
        std::vector<event> v;
        if (!ready(ec)) return v;
        std::vector<bad_row> bad;
        {
            sqlite3_stmt* s = prepare(stmt::events_after, ec);
            if (!s) return v;
            sqlite3_bind_int64(s, 1, static_cast<std::int64_t>(std::min<std::uint64_t>(seq, INT64_MAX)));
            sqlite3_bind_int64(s, 2, limit > static_cast<std::size_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(limit));
            int rc;
            while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const auto n = sqlite3_column_int64(s, 0);
                const std::string rec = col_text(s, 1);
                std::string why;
                auto e = parse_event(rec, ec, why);
                ec.clear();
                if (e && e->seq) e.reset(), why = "a number in its record";
                if (e) {
                    e->seq = static_cast<std::uint64_t>(n);
                    v.push_back(std::move(*e));
                } else {
                    bad.push_back({"events", std::to_string(n), col_text(s, 2), rec, why});
                }
            }
            sqlite3_reset(s);
            if (rc != SQLITE_DONE) return fail_rc(ec, rc, "read events"), std::vector<event>{};
        }
        if (!bad.empty()) {
            if (!opt_.quarantine) return corrupt(ec, bad.front()), std::vector<event>{};
            move_to_quarantine(bad, ec, [](const bad_row&) {});
            if (ec) return {};
            if (v.empty()) return events_after(seq, limit, ec);   // the batch was all bad: read on
        }
        return v;
    }

    std::optional<limits> get_limits(std::error_code& ec) {
        std::optional<limits> out;
        if (!ready(ec)) return out;
        sqlite3_stmt* s = prepare(stmt::get_limits, ec);
        if (!s) return out;
        const int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            limits l;
            l.cap = clamp_int(sqlite3_column_int64(s, 0));
            l.max_attempts = clamp_int(sqlite3_column_int64(s, 1));
            l.kill_grace = std::chrono::milliseconds(sqlite3_column_int64(s, 2));
            out = l;
        }
        sqlite3_reset(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail_rc(ec, rc, "read limits");
        return out;
    }

    void put_limits(const limits& l, std::error_code& ec) {
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::put_limits, ec);
            if (!s) return;
            sqlite3_bind_int64(s, 1, l.cap);
            sqlite3_bind_int64(s, 2, l.max_attempts);
            sqlite3_bind_int64(s, 3, std::chrono::duration_cast<std::chrono::milliseconds>(l.kill_grace).count());
            if (const int rc = step_done(s); rc != SQLITE_DONE) fail_rc(ec, rc, "write limits");
        });
    }

    /// The schedule: meta "schedule" (a default one if none). A value that cannot be read is
    /// errc::store_corrupt naming it (it is kept as it is).
    queue_schedule get_schedule(std::error_code& ec) {
        const std::string text = get_meta("schedule", ec);
        if (ec || text.empty()) return {};
        std::string why;
        auto sc = parse_schedule(std::string_view(text), ec, why);
        if (!sc || sc->validate()) {
            ec = errc::store_corrupt;
            detail_ = path_ + ": meta \"schedule\" cannot be read: " + (why.empty() ? "a value out of range" : why);
            return {};
        }
        return *sc;
    }
    void put_schedule(const queue_schedule& sc, std::error_code& ec) {
        if (sc.validate()) {
            ec = errc::invalid_group;
            detail_ = path_ + ": a schedule with an invalid group or cap";
            return;
        }
        put_meta("schedule", nlohmann::json(sc).dump(), ec);
    }

    // ---- beyond the concept -----------------------------------------------------------------

    const std::vector<quarantined_record>& quarantined() const noexcept { return quarantined_; }

    /// A value of the meta table ("" if none).
    std::string get_meta(std::string_view key, std::error_code& ec) {
        std::string out;
        if (!ready(ec)) return out;
        sqlite3_stmt* s = prepare(stmt::get_meta, ec);
        if (!s) return out;
        bind_text(s, 1, key);
        const int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) out = col_text(s, 0);
        sqlite3_reset(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail_rc(ec, rc, "read meta");
        return out;
    }
    void put_meta(std::string_view key, std::string_view value, std::error_code& ec) {
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::put_meta, ec);
            if (!s) return;
            bind_text(s, 1, key);
            bind_text(s, 2, value);
            if (const int rc = step_done(s); rc != SQLITE_DONE) fail_rc(ec, rc, "write meta");
        });
    }

    /// Adds a quarantine row directly (an importer's unreadable record), in the open unit.
    void quarantine_raw(std::string source, std::string task_id, std::string raw, std::string why, std::error_code& ec) {
        write_unit(ec, [&] {
            insert_quarantine(source, task_id, raw, why, ec);
            if (!ec) unit_quarantined_.push_back({task_id, std::move(source), path_ + ": table quarantine", std::move(why), 0});
        });
    }

    /// Rows in the quarantine table (everything ever moved there, by any process).
    struct quarantine_row {
        std::int64_t n = 0;
        std::string source, task_id, why;
        timestamp at{};
    };
    std::vector<quarantine_row> quarantine_rows(std::error_code& ec) {
        std::vector<quarantine_row> v;
        if (!ready(ec)) return v;
        sqlite3_stmt* s = prepare(stmt::list_quarantine, ec);
        if (!s) return v;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            v.push_back({sqlite3_column_int64(s, 0), col_text(s, 1), col_text(s, 2), col_text(s, 3),
                         timestamp(std::chrono::microseconds(sqlite3_column_int64(s, 4)))});
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) fail_rc(ec, rc, "read quarantine");
        return v;
    }

    /// Deletes the quarantine rows about a task (its record, session and event rows kept
    /// there): `kugetsu remove` of a quarantined task. Returns how many.
    int remove_quarantined(std::string_view task_id, std::error_code& ec) {
        int n = 0;
        write_unit(ec, [&] {
            sqlite3_stmt* s = prepare(stmt::delete_quarantined, ec);
            if (!s) return;
            bind_text(s, 1, task_id);
            if (const int rc = step_done(s); rc != SQLITE_DONE) return fail_rc(ec, rc, "delete quarantine rows of \"" + std::string(task_id) + "\"");
            n = sqlite3_changes(db_);
        });
        return n;
    }

    /// A number that changes whenever another connection commits (PRAGMA data_version):
    /// a waiter that saw no change since its last pass need not pass again.
    std::int64_t data_version(std::error_code& ec) {
        if (!ready(ec)) return 0;
        sqlite3_stmt* s = prepare(stmt::data_version, ec);
        if (!s) return 0;
        std::int64_t v = 0;
        const int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
        if (rc != SQLITE_ROW) fail_rc(ec, rc, "data_version");
        return v;
    }

    /// PRAGMA integrity_check, then every row validated (nothing is moved).
    check_report check(std::error_code& ec) {
        check_report r;
        if (!ready(ec)) return r;
        sqlite3_stmt* s = nullptr;
        int rc = sqlite3_prepare_v2(db_, "PRAGMA integrity_check", -1, &s, nullptr);
        if (rc != SQLITE_OK) return fail_rc(ec, rc, "integrity_check"), r;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            std::string line = col_text(s, 0);
            if (line != "ok") r.integrity.push_back(std::move(line));
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return fail_rc(ec, rc, "integrity_check"), r;
        auto scan = [&](const char* sql, auto&& each) {
            sqlite3_stmt* q = nullptr;
            int qrc = sqlite3_prepare_v2(db_, sql, -1, &q, nullptr);
            if (qrc != SQLITE_OK) return fail_rc(ec, qrc, sql);
            while ((qrc = sqlite3_step(q)) == SQLITE_ROW) each(q);
            sqlite3_finalize(q);
            if (qrc != SQLITE_DONE) fail_rc(ec, qrc, sql);
        };
        scan("SELECT id, state, record FROM tasks", [&](sqlite3_stmt* q) {
            ++r.tasks;
            std::string why;
            if (!validate_task_row(col_text(q, 0), sqlite3_column_int(q, 1), col_text(q, 2), why))
                r.bad_rows.push_back("tasks \"" + col_text(q, 0) + "\": " + why);
        });
        if (ec) return r;
        scan("SELECT id, task_id, record FROM sessions", [&](sqlite3_stmt* q) {
            ++r.sessions;
            std::error_code pec;
            std::string why;
            auto se = parse_session(col_text(q, 2), pec, why);
            if (se && (se->id != col_text(q, 0) || se->task_id != col_text(q, 1))) se.reset(), why = "key disagrees";
            if (!se) r.bad_rows.push_back("sessions \"" + col_text(q, 0) + "\": " + why);
        });
        if (ec) return r;
        scan("SELECT seq, record FROM events", [&](sqlite3_stmt* q) {
            ++r.events;
            std::error_code pec;
            std::string why;
            auto e = parse_event(col_text(q, 1), pec, why);
            if (e && e->seq) e.reset(), why = "a number in its record";   // as events_after() judges it
            if (!e) r.bad_rows.push_back("events " + std::to_string(sqlite3_column_int64(q, 0)) + ": " + why);
        });
        if (ec) return r;
        scan("SELECT count(*) FROM quarantine", [&](sqlite3_stmt* q) { r.quarantined = sqlite3_column_int(q, 0); });
        return r;
    }

    /// The raw connection, for tests and tools (never use it across fork()).
    sqlite3* handle() noexcept { return db_; }

private:
    enum class stmt : std::size_t {
        begin, commit, rollback, insert_task, upsert_task, get_task, list_tasks, tasks_in_state,
        upsert_session, delete_session, list_sessions, insert_event, events_after, get_limits, put_limits,
        get_meta, put_meta, insert_quarantine, delete_task, delete_event, list_quarantine, data_version, remove_task,
        runnable, prune_events, delete_quarantined, count_
    };

    static const char* sql_of(stmt s) noexcept {
        switch (s) {
        case stmt::begin: return "BEGIN IMMEDIATE";
        case stmt::commit: return "COMMIT";
        case stmt::rollback: return "ROLLBACK";
        case stmt::insert_task:
            return "INSERT INTO tasks(id, state, enqueued_us, record, priority, grp) VALUES(?1, ?2, ?3, ?4, ?5, ?6)";
        case stmt::upsert_task:
            return "INSERT INTO tasks(id, state, enqueued_us, record, priority, grp) VALUES(?1, ?2, ?3, ?4, ?5, ?6) "
                   "ON CONFLICT(id) DO UPDATE SET state = excluded.state, enqueued_us = excluded.enqueued_us, "
                   "record = excluded.record, priority = excluded.priority, grp = excluded.grp";
        case stmt::get_task: return "SELECT id, state, record FROM tasks WHERE id = ?1";
        case stmt::list_tasks: return "SELECT id, state, record FROM tasks ORDER BY enqueued_us, id";
        case stmt::tasks_in_state:
            return "SELECT id, state, record FROM tasks WHERE state = ?1 ORDER BY enqueued_us, id LIMIT ?2";
        case stmt::upsert_session:
            return "INSERT INTO sessions(id, task_id, record) VALUES(?1, ?2, ?3) "
                   "ON CONFLICT(id) DO UPDATE SET task_id = excluded.task_id, record = excluded.record";
        case stmt::delete_session: return "DELETE FROM sessions WHERE id = ?1";
        case stmt::list_sessions: return "SELECT id, task_id, record FROM sessions ORDER BY id";
        case stmt::insert_event: return "INSERT INTO events(task_id, record) VALUES(?1, ?2)";
        case stmt::events_after: return "SELECT seq, record, task_id FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2";
        case stmt::get_limits: return "SELECT cap, max_attempts, kill_grace_ms FROM limits WHERE id = 1";
        case stmt::put_limits:
            return "INSERT INTO limits(id, cap, max_attempts, kill_grace_ms) VALUES(1, ?1, ?2, ?3) "
                   "ON CONFLICT(id) DO UPDATE SET cap = excluded.cap, max_attempts = excluded.max_attempts, "
                   "kill_grace_ms = excluded.kill_grace_ms";
        case stmt::get_meta: return "SELECT value FROM meta WHERE key = ?1";
        case stmt::put_meta:
            return "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";
        case stmt::insert_quarantine:
            return "INSERT INTO quarantine(source, task_id, raw, why, at_us) VALUES(?1, ?2, ?3, ?4, ?5)";
        case stmt::delete_task: return "DELETE FROM tasks WHERE id = ?1 AND record = ?2";
        case stmt::delete_event: return "DELETE FROM events WHERE seq = ?1";
        case stmt::list_quarantine: return "SELECT n, source, ifnull(task_id, ''), why, at_us FROM quarantine ORDER BY n";
        case stmt::data_version: return "PRAGMA data_version";
        case stmt::remove_task: return "DELETE FROM tasks WHERE id = ?1";
        case stmt::delete_quarantined: return "DELETE FROM quarantine WHERE task_id = ?1";
        case stmt::prune_events:
            return "DELETE FROM events WHERE task_id NOT IN (SELECT id FROM tasks) "
                   "AND seq < (SELECT max(seq) FROM events)";
        case stmt::runnable:
            return "SELECT id, state, record FROM tasks WHERE state = ?1 AND grp NOT IN (SELECT value FROM json_each(?3)) "
                   "ORDER BY priority DESC, enqueued_us, id LIMIT ?2";
        case stmt::count_: break;
        }
        return "";
    }

    struct bad_row {
        std::string table, key, task_id, raw, why;
    };

    // ---- opening ----------------------------------------------------------------------------

    void open_db(std::error_code& ec) {
        const auto slash = path_.rfind('/');
        const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
        {
            auto d = detail::open_path(dir, O_RDONLY | O_DIRECTORY, 0, ec);
            if (ec) return fail(ec, ec, "open directory " + dir);
            struct stat dst{};
            if (::fstat(d.get(), &dst) != 0) return fail(ec, detail::last_error(), "fstat " + dir);
            if (auto why = detail::why_not_private(dst); !why.empty())
                return refuse_file(ec, dir + " (the directory of the database): " + why + ": refused");
        }
        // Created 0600 before SQLite opens it (SQLite gives its WAL and -shm files the same
        // mode); the descriptor is closed before SQLite holds any lock on the file.
        {
            struct stat st{};
            if (::lstat(path_.c_str(), &st) == 0)
                if (auto why = detail::why_unsafe_file(st); !why.empty())
                    return refuse_file(ec, path_ + ": " + why + ": refused");
            int fd;
            while ((fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600)) < 0 &&
                   errno == EINTR) {}
            if (fd < 0 && (errno == ELOOP || errno == EISDIR)) return refuse_file(ec, path_ + ": " + std::strerror(errno) + ": refused");
            if (fd < 0) return fail(ec, detail::last_error(), "open " + path_);
            detail::unique_fd f(fd);
            if (::fstat(fd, &st) != 0) return fail(ec, detail::last_error(), "fstat " + path_);
            if (auto why = detail::why_unsafe_file(st); !why.empty()) return refuse_file(ec, path_ + ": " + why + ": refused");
        }
        // SQLite refuses a link at the database itself (SQLITE_OPEN_NOFOLLOW) but opens its
        // other files by name: one planted there (in a private directory: by this user) would
        // have SQLite write through it. Refused up front.
        for (const char* suffix : {"-wal", "-shm", "-journal", "-bell"}) {
            const std::string f = path_ + suffix;
            struct stat st{};
            if (::lstat(f.c_str(), &st) == 0)
                if (auto why = detail::why_unsafe_file(st); !why.empty())
                    return refuse_file(ec, f + ": " + why + " (planted beside the database?): refused");
        }
        const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX;
        const char* vfs = opt_.vfs.empty() ? detail::sqlite_vfs_name() : opt_.vfs.c_str();
        int rc = sqlite3_open_v2(path_.c_str(), &db_, flags, vfs);
        if (rc != SQLITE_OK) {
            fail_rc(ec, rc, "open");
            return;
        }
        sqlite3_extended_result_codes(db_, 1);
        sqlite3_busy_handler(db_, &sqlite_store::on_busy, this);
        sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
        sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
        // Identify the file before changing anything in it (WAL mode rewrites the header of
        // another program's database). A read: it waits for no unit.
        std::int64_t version = 0;
        if (!identify(version, ec)) return;
        // A kugetsu database (or a new one): its WAL is made here, once: an empty file is a WAL with nothing
        // in it. Its directory entry is made durable now, so no later process needs to.
        {
            const std::string wal = path_ + "-wal";
            struct stat st{};
            if (::lstat(wal.c_str(), &st) != 0 && errno == ENOENT) {
                int fd;
                while ((fd = ::open(wal.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0 && errno == EINTR) {}
                if (fd >= 0) {
                    ::close(fd);
                    if (auto d = detail::open_path(dir, O_RDONLY | O_DIRECTORY, 0, ec); !ec) detail::fsync_fd(d.get());
                    ec.clear();
                }
            }
        }
        // Switching a new database to WAL needs its exclusive lock for a moment, and SQLite
        // answers SQLITE_BUSY at once (no busy handler) while another process opening the same
        // new HOME holds it: retried, as the busy handler would, up to the busy timeout.
        for (int n = 0;; ++n) {
            if (exec("PRAGMA journal_mode=WAL", "journal_mode", ec, "wal")) break;
            if (ec != errc::store_busy || !on_busy(this, n)) return;
            ec.clear();
        }
        busy_since_.reset();
        if (!exec("PRAGMA synchronous=NORMAL", "synchronous", ec)) return;
        // The WAL outlives every connection (no directory entry to make again) and closing a
        // connection never checkpoints. Checkpoints are the store's own (see checkpoint()):
        // SQLite's automatic one leaves the WAL's frames in place, and a process that opens the
        // database alone (a `kugetsu enqueue` with no daemon) must then read them all to
        // rebuild the WAL index: a cost that grew with every task (1,667 reads after 300).
        {
            int persist = 1;
            sqlite3_file_control(db_, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
            sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
            sqlite3_wal_autocheckpoint(db_, 0);
            sqlite3_wal_hook(db_, &sqlite_store::on_wal, this);
        }
        if (!exec("PRAGMA foreign_keys=OFF", "foreign_keys", ec)) return;
        {
            const std::string bell = path_ + "-bell";
            int fd;
            while ((fd = ::open(bell.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600)) < 0 && errno == EINTR) {}
            if (fd < 0) return fail(ec, detail::last_error(), "open " + bell);
            bell_ = detail::unique_fd(fd);
            struct stat st{};
            if (::fstat(fd, &st) != 0) return fail(ec, detail::last_error(), "fstat " + bell);
            if (auto why = detail::why_unsafe_file(st, /*one_link=*/false); !why.empty())
                return refuse_file(ec, bell + ": " + why + ": refused");
        }
        for (const char* suffix : {"-wal", "-shm"}) {
            const std::string f = path_ + suffix;
            struct stat st{};
            if (::lstat(f.c_str(), &st) == 0)
                if (auto why = detail::why_unsafe_file(st, /*one_link=*/false); !why.empty())
                    return refuse_file(ec, f + ": " + why + ": refused");
        }
        if (version != schema_version) migrate(ec);   // up to date: no write lock, so opening never waits
    }

    void migrate(std::error_code& ec) {
        if (!exec("BEGIN IMMEDIATE", "begin (migrate)", ec)) return;
        detail::scope_exit undo([&] { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); });
        std::int64_t version = 0;   // again, in the transaction: another process may have migrated
        if (!identify(version, ec)) return;
        // Forward migrations, each from version i to i + 1.
        static constexpr const char* steps[] = {
            // 0 -> 1
            "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);"
            "CREATE TABLE limits(id INTEGER PRIMARY KEY CHECK (id = 1), cap INTEGER NOT NULL,"
            " max_attempts INTEGER NOT NULL, kill_grace_ms INTEGER NOT NULL);"
            "CREATE TABLE tasks(id TEXT PRIMARY KEY NOT NULL, state INTEGER NOT NULL,"
            " enqueued_us INTEGER NOT NULL, record TEXT NOT NULL);"
            "CREATE INDEX tasks_by_state ON tasks(state, enqueued_us, id);"
            "CREATE TABLE sessions(id TEXT PRIMARY KEY NOT NULL, task_id TEXT NOT NULL, record TEXT NOT NULL);"
            "CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, record TEXT NOT NULL);"
            "CREATE TABLE quarantine(n INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, task_id TEXT,"
            " raw BLOB, why TEXT NOT NULL, at_us INTEGER NOT NULL);",
            // 1 -> 2: task records may hold "restarts" and "runs" (restart), and events may be
            // task_removed: no table changes, but a version-1 program must not read them.
            "",
            // 2 -> 3: scheduling. Records may hold "priority", "group" and "after", and be in
            // state waiting (6); the schedule is meta "schedule". The columns copy the record's
            // priority and group, so that a pass reads pending tasks in the order it takes them.
            "ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"
            "ALTER TABLE tasks ADD COLUMN grp TEXT NOT NULL DEFAULT '';"
            "CREATE INDEX tasks_runnable ON tasks(state, priority DESC, enqueued_us, id);",
        };
        static_assert(std::size(steps) == schema_version);
        for (std::int64_t v = version; v < schema_version; ++v) {
            char* err = nullptr;
            const int rc = sqlite3_exec(db_, steps[v], nullptr, nullptr, &err);
            if (rc != SQLITE_OK) {
                const std::string msg = err ? err : sqlite3_errstr(rc);
                sqlite3_free(err);
                fail_rc(ec, rc, "migrate to version " + std::to_string(v + 1) + ": " + msg);
                return;
            }
        }
        if (version != schema_version) {
            if (!exec(("PRAGMA user_version=" + std::to_string(schema_version)).c_str(), "user_version", ec)) return;
            if (!exec(("PRAGMA application_id=" + std::to_string(application_id)).c_str(), "application_id", ec)) return;
        }
        if (!exec("COMMIT", "commit (migrate)", ec)) return;
        undo.release();
        if (version != schema_version) sync_wal(ec);
    }

    /// Reads the schema version; false (ec set) if the database is not kugetsu's or is newer.
    bool identify(std::int64_t& version, std::error_code& ec) {
        // One read transaction (a snapshot): another process may be creating the schema of a
        // new HOME meanwhile, and its version and its tables must be read from the same state.
        const bool own = sqlite3_get_autocommit(db_) != 0;
        if (own && !exec("BEGIN", "identify", ec)) return false;
        detail::scope_exit end([&] {
            if (own) sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
        });
        version = pragma_int("user_version", ec);
        if (ec) return false;
        const std::int64_t app = pragma_int("application_id", ec);
        if (ec) return false;
        if (version > schema_version) {
            ec = errc::unsupported_version;
            detail_ = path_ + ": schema version " + std::to_string(version) + " was written by a newer kugetsu (this one knows " +
                      std::to_string(schema_version) + ")";
            return false;
        }
        if (version == 0) {
            const std::int64_t tables = count_rows("SELECT count(*) FROM sqlite_schema", ec);
            if (ec) return false;
            if (tables != 0 || (app != 0 && app != application_id)) {
                ec = errc::store_corrupt;
                detail_ = path_ + ": not a kugetsu state database (it has other tables or application id " +
                          std::to_string(app) + ")";
                return false;
            }
        } else if (app != application_id) {
            ec = errc::store_corrupt;
            detail_ = path_ + ": not a kugetsu state database (application id " + std::to_string(app) + ")";
            return false;
        }
        return true;
    }

    std::int64_t pragma_int(const char* name, std::error_code& ec) {
        return count_rows((std::string("PRAGMA ") + name).c_str(), ec);
    }
    std::int64_t count_rows(const char* sql, std::error_code& ec) {
        sqlite3_stmt* s = nullptr;
        int rc = sqlite3_prepare_v2(db_, sql, -1, &s, nullptr);
        if (rc != SQLITE_OK) return fail_rc(ec, rc, sql), 0;
        std::int64_t v = 0;
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail_rc(ec, rc, sql);
        return v;
    }

    bool exec(const char* sql, const char* what, std::error_code& ec, const char* expect = nullptr) {
        sqlite3_stmt* s = nullptr;
        int rc = sqlite3_prepare_v2(db_, sql, -1, &s, nullptr);
        if (rc != SQLITE_OK) return fail_rc(ec, rc, what), false;
        std::string got;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            if (got.empty()) got = col_text(s, 0);
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return fail_rc(ec, rc, what), false;
        if (expect && got != expect) {
            ec = errc::store_corrupt;
            detail_ = path_ + ": " + what + ": \"" + got + "\", not \"" + expect + "\" (WAL needs a local filesystem)";
            return false;
        }
        return true;
    }

    void close() noexcept {
        if (!db_) return;
        rollback();
        if (checkpoint_due()) {
            std::error_code ec;
            checkpoint(ec);
        }
        for (auto& s : stmts_) {
            if (s) sqlite3_finalize(s);
            s = nullptr;
        }
        sqlite3_close_v2(db_);
        db_ = nullptr;
    }

    // Every operation starts here: its detail describes it only.
    bool ready(std::error_code& ec) {
        ec.clear();
        detail_.clear();
        if (!db_) open(ec);
        return !ec;
    }

    // ---- statements -------------------------------------------------------------------------

    sqlite3_stmt* prepare(stmt which, std::error_code& ec) {
        auto& s = stmts_[static_cast<std::size_t>(which)];
        if (!s) {
            const int rc = sqlite3_prepare_v3(db_, sql_of(which), -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
            if (rc != SQLITE_OK) {
                s = nullptr;
                fail_rc(ec, rc, std::string("prepare ") + sql_of(which));
                return nullptr;
            }
        }
        return s;
    }

    bool exec_stmt(stmt which, const char* what, std::error_code& ec) {
        busy_since_.reset();
        sqlite3_stmt* s = prepare(which, ec);
        if (!s) return false;
        const int rc = step_done(s);
        if (rc != SQLITE_DONE) return fail_rc(ec, rc, what), false;
        return true;
    }

    /// Steps a statement that returns no rows, then resets it and clears its bindings.
    int step_done(sqlite3_stmt* s) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) rc = SQLITE_DONE;   // PRAGMAs may return a row
        // The extended code of a failed step (a constraint's kind) is the statement's error.
        if (rc != SQLITE_DONE) rc = sqlite3_extended_errcode(db_);
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        return rc;
    }

    /// Runs `write` in the open unit, or in a unit of its own (committed durably).
    template <class F>
    void write_unit(std::error_code& ec, F&& write) {
        if (!ready(ec)) return;
        if (unit_) return write();
        begin(ec);
        if (ec) return;
        write();
        if (ec) return rollback();
        commit(durability::durable, ec);
    }

    /// Binds a task row (id, state, enqueue time, record) to an insert or upsert and steps it:
    /// SQLite's result (ec only for an invalid id or a failed prepare).
    int write_task(stmt which, const queue_item& it, std::error_code& ec) {
        if (!check_id(it.id, ec)) return SQLITE_MISUSE;
        sqlite3_stmt* s = prepare(which, ec);
        if (!s) return SQLITE_MISUSE;
        const std::string rec = record_of(it);
        bind_text(s, 1, it.id);
        sqlite3_bind_int(s, 2, static_cast<int>(it.state));
        sqlite3_bind_int64(s, 3, us(it.enqueued_at));
        bind_text(s, 4, rec);
        sqlite3_bind_int(s, 5, it.priority);
        bind_text(s, 6, it.group);
        return step_done(s);
    }

    template <class Bind, class Each>
    void read_tasks(std::error_code& ec, stmt which, Bind&& bind, Each&& each) {
        if (!ready(ec)) return;
        std::vector<bad_row> bad;
        sqlite3_stmt* s = prepare(which, ec);
        if (!s) return;
        bind(s);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            const std::string id = col_text(s, 0), rec = col_text(s, 2);
            const int state = sqlite3_column_int(s, 1);
            std::string why;
            if (auto it = task_of_row(id, state, rec, why)) each(std::move(*it));
            else bad.push_back({"tasks", id, id, rec, why});
        }
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_DONE) return fail_rc(ec, rc, "read tasks");
        if (bad.empty()) return;
        if (!opt_.quarantine) return corrupt(ec, bad.front());
        move_to_quarantine(bad, ec, [](const bad_row&) {});
    }

    static std::optional<queue_item> task_of_row(const std::string& id, int state, const std::string& rec, std::string& why) {
        std::error_code pec;
        auto it = parse_item(rec, pec, why);
        if (!it) return std::nullopt;
        if (it->id != id) return why = "its id is not its key", std::nullopt;
        if (static_cast<int>(it->state) != state) return why = "its state disagrees with its column", std::nullopt;
        return it;
    }
    static bool validate_task_row(const std::string& id, int state, const std::string& rec, std::string& why) {
        return task_of_row(id, state, rec, why).has_value();
    }

    /// Moves rows that failed validation to the quarantine table, in the open unit or in a
    /// unit of its own; a task row also gets its task_error event. `after(row)` runs for each
    /// row moved, in the same unit.
    template <class After>
    void move_to_quarantine(const std::vector<bad_row>& rows, std::error_code& ec, After&& after) {
        const bool own = !unit_;
        if (own) {
            begin(ec);
            if (ec) return;
        }
        for (const auto& b : rows) {
            // Checked again inside the writer's transaction: a row rewritten since it was read
            // (a reader outside a unit) is never moved.
            sqlite3_stmt* del = nullptr;
            if (b.table == "tasks") {
                del = prepare(stmt::delete_task, ec);
                if (!del) break;
                bind_text(del, 1, b.key);
                bind_text(del, 2, b.raw);
            } else if (b.table == "sessions") {
                del = prepare(stmt::delete_session, ec);
                if (!del) break;
                bind_text(del, 1, b.key);
            } else {
                del = prepare(stmt::delete_event, ec);
                if (!del) break;
                sqlite3_bind_int64(del, 1, std::stoll(b.key));
            }
            const int rc = step_done(del);
            if (rc != SQLITE_DONE) {
                fail_rc(ec, rc, "quarantine " + b.table + " \"" + b.key + "\"");
                break;
            }
            if (sqlite3_changes(db_) == 0) continue;   // rewritten or gone meanwhile
            const std::string source = path_ + ": " + b.table + " \"" + b.key + "\"";
            insert_quarantine(source, b.task_id, b.raw, b.why, ec);
            if (ec) break;
            quarantined_record q{b.table == "tasks" ? b.task_id : std::string(), source,
                                 path_ + ": table quarantine, row " + std::to_string(sqlite3_last_insert_rowid(db_)),
                                 b.why, 0};
            if (b.table == "tasks" && valid_task_id(b.task_id)) {
                event e;
                e.type = event_type::task_error;
                e.task_id = b.task_id;
                e.time = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
                e.reason = event_reason::quarantined;
                q.event_seq = append_event(e, ec);
                if (ec) break;
            }
            unit_quarantined_.push_back(std::move(q));
            after(b);
        }
        if (own) {
            if (ec) rollback();
            else commit(durability::durable, ec);
        }
    }

    void insert_quarantine(const std::string& source, const std::string& task_id, const std::string& raw,
                           const std::string& why, std::error_code& ec) {
        sqlite3_stmt* s = prepare(stmt::insert_quarantine, ec);
        if (!s) return;
        bind_text(s, 1, source);
        if (task_id.empty()) sqlite3_bind_null(s, 2);
        else bind_text(s, 2, task_id);
        sqlite3_bind_blob64(s, 3, raw.data(), raw.size(), SQLITE_TRANSIENT);
        bind_text(s, 4, why);
        sqlite3_bind_int64(s, 5, us(std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now())));
        if (const int rc = step_done(s); rc != SQLITE_DONE) fail_rc(ec, rc, "insert quarantine");
    }

    void corrupt(std::error_code& ec, const bad_row& b) {
        ec = errc::store_corrupt;
        detail_ = path_ + ": " + b.table + " \"" + b.key + "\": " + b.why;
    }

    /// One fdatasync of the WAL: what makes a commit durable.
    void sync_wal(std::error_code& ec) {
        sqlite3_file* f = nullptr;
        int rc = sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
        if (rc != SQLITE_OK) return fail_rc(ec, rc, "sync: journal pointer");
        if (!f || !f->pMethods) return;   // no WAL open (nothing was written)
        rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
        if (rc != SQLITE_OK) {
            ec = rc == SQLITE_IOERR_FSYNC && sqlite3_system_errno(db_) ? detail::errno_code(sqlite3_system_errno(db_))
                                                                       : detail::errno_code(EIO);
            detail_ = path_ + "-wal: fdatasync: " + ec.message() + " (the commit is visible, maybe not durable)";
        }
    }

    /// One byte into the bell: an inotify IN_MODIFY once the commit is visible.
    void ring() noexcept {
        if (!bell_) return;
        const char b = 'c';
        while (::pwrite(bell_.get(), &b, 1, 0) < 0 && errno == EINTR) {}
    }

    static int on_wal(void* self, sqlite3*, const char*, int frames) noexcept {
        static_cast<sqlite_store*>(self)->wal_frames_ = frames;
        return SQLITE_OK;
    }

    static int on_busy(void* self, int count) noexcept {
        auto* s = static_cast<sqlite_store*>(self);
        if (s->no_wait_) return 0;
        const auto now = std::chrono::steady_clock::now();
        if (count == 0 || !s->busy_since_) s->busy_since_ = now;
        if (now - *s->busy_since_ >= s->opt_.busy_timeout) return 0;
        const auto sleep = std::chrono::microseconds(std::min(2000, 50 << std::min(count, 5)));
        std::this_thread::sleep_for(sleep);
        return 1;
    }

    // ---- errors -------------------------------------------------------------------------

    void fail(std::error_code& ec, std::error_code e, std::string what) {
        ec = e;
        detail_ = std::move(what) + ": " + e.message();
    }

    /// errc::unsafe_state, with `why` naming the file and the test it failed (said once).
    void refuse_file(std::error_code& ec, std::string why) {
        ec = errc::unsafe_state;
        detail_ = std::move(why);
    }

    void fail_rc(std::error_code& ec, int rc, const std::string& what) {
        const int primary = rc & 0xff;
        const int sys = db_ ? sqlite3_system_errno(db_) : 0;
        const char* msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        switch (primary) {
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB: ec = errc::store_corrupt; break;
        case SQLITE_BUSY:
        case SQLITE_LOCKED: ec = errc::store_busy; break;
        case SQLITE_FULL: ec = detail::errno_code(ENOSPC); break;
        case SQLITE_NOMEM: ec = detail::errno_code(ENOMEM); break;
        case SQLITE_READONLY: ec = detail::errno_code(EROFS); break;
        case SQLITE_PERM:
        case SQLITE_AUTH: ec = detail::errno_code(EACCES); break;
        case SQLITE_IOERR:
        case SQLITE_CANTOPEN: ec = detail::errno_code(sys ? sys : EIO); break;
        case SQLITE_CONSTRAINT: ec = errc::invalid_record; break;
        default: ec = detail::errno_code(EIO); break;
        }
        detail_ = path_ + ": " + what + ": " + (msg ? msg : "?") + (sys && primary == SQLITE_IOERR ? std::string(" (") + std::strerror(sys) + ")" : "");
        if (primary == SQLITE_BUSY)
            detail_ += " (waited " + std::to_string(opt_.busy_timeout.count()) + " ms for another process's transaction)";
        if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
            detail_ += ": the database is damaged; `kugetsu check` runs SQLite's integrity check";
    }

    bool check_id(const std::string& id, std::error_code& ec) {
        if (valid_task_id(id)) return true;
        ec = errc::invalid_task_id;
        detail_ = path_ + ": task id \"" + detail::utf8_prefix(id, 160) + "\" is invalid";
        return false;
    }

    // ---- values -------------------------------------------------------------------------

    static std::string record_of(const queue_item& it) {
        return nlohmann::json(it).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    }
    static std::int64_t us(timestamp t) noexcept { return t.time_since_epoch().count(); }
    static int clamp_int(std::int64_t v) noexcept {
        return static_cast<int>(std::clamp<std::int64_t>(v, INT32_MIN, INT32_MAX));
    }
    static void bind_text(sqlite3_stmt* s, int i, std::string_view v) {
        sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    }
    static std::string col_text(sqlite3_stmt* s, int i) {
        const auto* p = static_cast<const char*>(sqlite3_column_blob(s, i));
        const int n = sqlite3_column_bytes(s, i);
        return p ? std::string(p, static_cast<std::size_t>(n)) : std::string();
    }

    std::string path_;
    options opt_;
    sqlite3* db_ = nullptr;
    std::array<sqlite3_stmt*, static_cast<std::size_t>(stmt::count_)> stmts_{};
    bool unit_ = false;
    std::vector<quarantined_record> quarantined_;
    std::vector<quarantined_record> unit_quarantined_;
    std::string detail_;
    std::optional<std::chrono::steady_clock::time_point> busy_since_;
    detail::unique_fd bell_;
    sqlite3_int64 changes_at_begin_ = 0;
    int wal_frames_ = 0;      // frames in the WAL after this connection's last commit
    bool no_wait_ = false;    // the busy handler gives up at once (a checkpoint never waits)
};

static_assert(kugetsu::store<sqlite_store>);
static_assert(kugetsu::store_with_quarantine<sqlite_store>);
static_assert(kugetsu::store_with_removal<sqlite_store>);
static_assert(kugetsu::with_error_detail<sqlite_store>);

} // namespace kugetsu
