// kugetsu/notify/jsonl_notifier.hpp: appends each event as one JSON line to a file.
//
// WHOLE LINES OR NOTHING. Each event is one line appended under an exclusive flock on the
// file (every jsonl_notifier, in every process, takes it), so lines of concurrent writers
// never interleave, even when a write comes back short and is completed by another. EINTR
// is retried. If an append fails part-way (a disk that fills up takes part of a line, then
// says ENOSPC), the torn part is cut off again: ftruncate back to where the line began,
// which is safe because no other notifier appends while the lock is held. If even that
// fails, the next event starts with a newline, so a torn line never runs into a whole one.
// A reader that follows the file while an append fails (tail -f) may see a torn line that
// is then cut off; readers should skip a line that is not valid JSON.
//
// NO REDIRECTION. The file is opened O_RDWR|O_APPEND|O_CREAT|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC
// (0600) and must be a regular file with one link, owned by the effective user and
// writable by nobody else: a symbolic link (ELOOP), a FIFO (which would block the
// dispatcher), a hard link to another file or someone else's file is refused
// (errc::unsafe_state), and nothing is written.
//
// A DURABLE NOTIFIER (concepts.hpp). Events a store committed (they carry a sequence number)
// come through relay(): under the file's flock it finds the highest "seq" in the file (a
// scan back from its end, skipped when the file is as this object left it), then appends
// every committed event after it, in order, from the store's outbox. So the file holds every
// event of every process, in sequence order, once; an event lost to a crash (a process
// killed after its commit, before its append) is appended by the next relay of any process.
// notify() ignores events with a sequence number (relay() brings them) and appends the
// others (events not from a store). A file without sequence numbers (a kugetsu 0.1 file) is
// appended to from the store's first event.
//
// COMPACTION. compact(drop) rewrites the file without the events `drop` names (clean's
// pruning), keeping the last line, whose number is the relay's position: under the flock it
// writes the kept lines to a temporary file beside it, fsyncs it and renames it over the
// file, then fsyncs the directory; on any failure (ENOSPC included) the file is as it was.
// Every notifier, under the flock it takes, checks that its descriptor is still the file's
// (the same inode as the path): one that was replaced is opened again before an append.
//
// FAILURES never stop dispatching and are never thrown. notify(): the event is dropped,
// failures() is incremented, the optional error handler is called. relay(): ec says why and
// the events stay in the store for the next relay. Either way last_error_detail() names the
// file and the step, and a failed open is tried again next time.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"
#include "../json.hpp"

namespace kugetsu {

class jsonl_notifier {
public:
    using error_handler = std::function<void(const std::error_code&, const event&)>;

    explicit jsonl_notifier(std::string path, error_handler on_error = {})
        : path_(std::move(path)), on_error_(std::move(on_error)),
          failures_(std::make_shared<std::atomic<std::uint64_t>>(0)) {}

    jsonl_notifier(jsonl_notifier&&) noexcept = default;
    jsonl_notifier& operator=(jsonl_notifier&&) noexcept = default;

    void notify(const event& e) noexcept {
        if (e.seq != 0) return;   // relay() brings the store's events
        std::error_code ec;
        try {
            std::string line = nlohmann::json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            line.push_back('\n');
            failure f;
            if (!fd_) open_file(f, ec);
            if (!ec) append(line, f, ec);
            if (ec)
                detail_ = path_ + ": " + f.step + ": " + (f.why ? std::string(f.why) : ec.message()) +
                          (f.torn ? " (a torn line stays; the next event starts on a new line)" : "");
        } catch (...) {
            ec = std::make_error_code(std::errc::not_enough_memory);
        }
        if (ec) {
            failures_->fetch_add(1);
            if (on_error_) try {
                    on_error_(ec, e);
                } catch (...) {
                }
        }
    }

    /// Appends the committed events after the highest sequence number in the file (see the
    /// header comment); returns that number after the appends.
    std::uint64_t relay(const event_source& source, std::error_code& ec) noexcept {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        failure f;
        std::uint64_t last = 0;
        try {
            if (!fd_) open_file(f, ec);
            if (!ec) last = relay_locked(source, f, ec);
            if (ec)
                detail_ = path_ + ": " + f.step + ": " + (f.why ? std::string(f.why) : ec.message()) +
                          (f.torn ? " (a torn line stays; the next event starts on a new line)" : "");
        } catch (...) {
            ec = std::make_error_code(std::errc::not_enough_memory);
            detail_ = path_ + ": relay: out of memory";
        }
        if (ec) failures_->fetch_add(1);
        return last;
    }

    /// Rewrites the file without the lines whose event `drop` says to drop, but the last line
    /// (see the header comment). Lines that are not events are kept. Returns how many were
    /// dropped; on failure the file is unchanged and ec says why (last_error_detail()).
    std::size_t compact(const std::function<bool(const event&)>& drop, std::error_code& ec) noexcept {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        failure f;
        std::size_t dropped = 0;
        try {
            if (!fd_) open_file(f, ec);
            if (!ec) dropped = compact_locked(drop, f, ec);
            if (ec) detail_ = path_ + ": compact: " + f.step + ": " + (f.why ? std::string(f.why) : ec.message());
        } catch (...) {
            ec = std::make_error_code(std::errc::not_enough_memory);
            detail_ = path_ + ": compact: out of memory";
        }
        return ec ? 0 : dropped;
    }

    const std::string& path() const noexcept { return path_; }
    /// Events that could not be written.
    std::uint64_t failures() const noexcept { return failures_->load(); }
    /// After a failed event: the file, the step and the error.
    const std::string& last_error_detail() const noexcept { return detail_; }

private:
    struct failure {
        const char* step = "open";
        const char* why = nullptr;   // a refusal: what is wrong with the file
        bool torn = false;           // part of the line stays in the file
    };

    void open_file(failure& f, std::error_code& ec) {
        auto fd = detail::open_path(path_, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0600, ec);
        if (ec == std::errc::too_many_symbolic_link_levels) f.why = "a symbolic link, not followed";
        if (ec) return;
        struct stat st{};
        if (::fstat(fd.get(), &st) != 0) {
            ec = detail::last_error();
            f.step = "fstat";
            return;
        }
        f.why = !S_ISREG(st.st_mode)     ? "not a regular file: refused"
                : st.st_nlink != 1       ? "it has another hard link: refused"
                : !detail::is_private(st) ? "another user's, or writable by others: refused"
                                          : nullptr;
        if (f.why) {
            ec = make_error_code(errc::unsafe_state);
            return;
        }
        fd_ = std::move(fd);
    }

    void append(const std::string& line, failure& f, std::error_code& ec) {
        if (!lock_current(f, ec)) return;
        const int fd = fd_.get();
        detail::scope_exit unlock([fd] { detail::flock_fd(fd, LOCK_UN); });
        append_locked(line, f, ec);
        known_.reset();
    }

    /// Takes the flock on the file the path names now: a descriptor of a file that compact()
    /// replaced is closed and the path opened again (a few times at most: each replacement is
    /// made under the flock, so one that is seen after it was taken is over).
    bool lock_current(failure& f, std::error_code& ec) {
        for (int tries = 0; tries < 8; ++tries) {
            if (!fd_) {
                open_file(f, ec);
                if (ec) return false;
            }
            f.step = "flock";
            if ((ec = detail::flock_fd(fd_.get(), LOCK_EX))) return false;
            struct stat mine{}, now{};
            if (::fstat(fd_.get(), &mine) == 0 && ::lstat(path_.c_str(), &now) == 0 && mine.st_ino == now.st_ino &&
                mine.st_dev == now.st_dev)
                return true;
            detail::flock_fd(fd_.get(), LOCK_UN);
            fd_.reset();   // replaced (or gone): open the path again
            known_.reset();
        }
        f.step = "open";
        ec = std::make_error_code(std::errc::resource_unavailable_try_again);
        return false;
    }

    std::size_t compact_locked(const std::function<bool(const event&)>& drop, failure& f, std::error_code& ec) {
        if (!lock_current(f, ec)) return 0;
        const int fd = fd_.get();
        detail::scope_exit unlock([fd] { detail::flock_fd(fd, LOCK_UN); });
        const std::string tmp = path_ + ".compact.tmp";
        f.step = "create " ".compact.tmp";
        ::unlink(tmp.c_str());   // left by a compaction that died: made only under this flock
        auto out = detail::open_path(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600, ec);
        if (ec) return 0;
        bool renamed = false;
        detail::scope_exit cleanup([&] {
            if (!renamed) ::unlink(tmp.c_str());
        });
        // Line by line; a line is written once the next one is seen, so that the last is kept.
        std::size_t dropped = 0;
        std::string buf, pending, kept;
        bool have_pending = false;
        auto flush_kept = [&]() -> bool {
            if (kept.empty()) return true;
            f.step = "write .compact.tmp";
            ec = detail::write_all(out.get(), kept);
            kept.clear();
            return !ec;
        };
        auto consider = [&](std::string line) -> bool {   // `line` ends with '\n' (but maybe the last)
            if (have_pending) {
                std::error_code pec;
                std::string why;
                const auto e = parse_event(std::string_view(pending).substr(0, pending.size() - (pending.back() == '\n')), pec, why);
                if (e && drop(*e)) ++dropped;
                else kept += pending;
                if (kept.size() > (1u << 20) && !flush_kept()) return false;
            }
            pending = std::move(line);
            have_pending = true;
            return true;
        };
        char chunk[65536];
        off_t at = 0;
        f.step = "read";
        for (;;) {
            const ssize_t n = detail::sys().pread(fd, chunk, sizeof chunk, at);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return ec = detail::last_error(), 0;
            if (n == 0) break;
            at += n;
            buf.append(chunk, static_cast<std::size_t>(n));
            std::size_t start = 0, nl;
            while ((nl = buf.find('\n', start)) != std::string::npos) {
                if (!consider(buf.substr(start, nl + 1 - start))) return 0;
                start = nl + 1;
            }
            buf.erase(0, start);
        }
        if (!buf.empty() && !consider(std::move(buf))) return 0;
        if (have_pending) kept += pending;   // the last line stays
        if (!flush_kept()) return 0;
        if (dropped == 0) return 0;          // nothing to drop: the file stays as it is
        f.step = "fsync .compact.tmp";
        if ((ec = detail::fsync_fd(out.get()))) return 0;
        if ((ec = out.close())) return 0;
        f.step = "rename .compact.tmp";
        if (::rename(tmp.c_str(), path_.c_str()) != 0) return ec = detail::last_error(), 0;
        renamed = true;
        // Durable: the directory's entry (best effort: the events are the store's first).
        const auto slash = path_.rfind('/');
        std::error_code dec;
        auto dir = detail::open_path(slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash),
                                     O_RDONLY | O_DIRECTORY, 0, dec);
        if (!dec) detail::fsync_fd(dir.get());
        known_.reset();
        return dropped;   // (the old descriptor is closed when the flock is let go: below, next use)
    }

    /// Appends whole lines with the flock held; a torn append is cut off again.
    void append_locked(const std::string& line, failure& f, std::error_code& ec) {
        const int fd = fd_.get();
        struct stat st{};
        f.step = "fstat";
        if (::fstat(fd, &st) != 0) {
            ec = detail::last_error();
            return;
        }
        const off_t start = st.st_size;   // where this line begins: no other notifier appends now
        std::string_view out = line;
        std::string joined;
        if (start > 0) {
            // An earlier append that was torn and could not be cut off: end its line first.
            char last = 0;
            ssize_t n;
            f.step = "read";
            while ((n = detail::sys().pread(fd, &last, 1, start - 1)) < 0 && errno == EINTR) {}
            if (n < 0) {
                ec = detail::last_error();
                return;
            }
            if (n == 1 && last != '\n') {
                joined.reserve(line.size() + 1);
                joined.append(1, '\n').append(line);
                out = joined;
            }
        }
        f.step = "write";
        std::size_t written = 0;
        ec = detail::write_all(fd, out, &written);
        if (ec && written > 0) {
            int r;
            while ((r = detail::sys().ftruncate(fd, start)) != 0 && errno == EINTR) {}
            f.torn = r != 0;
        }
    }

    std::uint64_t relay_locked(const event_source& source, failure& f, std::error_code& ec) {
        if (!lock_current(f, ec)) return 0;
        const int fd = fd_.get();
        detail::scope_exit unlock([fd] { detail::flock_fd(fd, LOCK_UN); });
        struct stat st{};
        f.step = "fstat";
        if (::fstat(fd, &st) != 0) return ec = detail::last_error(), 0;
        std::uint64_t last = 0;
        if (known_ && known_->ino == st.st_ino && known_->dev == st.st_dev && known_->size == st.st_size) {
            last = known_->seq;   // as this object left it: no scan
        } else {
            f.step = "read";
            last = last_seq_in_file(fd, st.st_size, ec);
            if (ec) return 0;
        }
        for (;;) {
            f.step = "read the store's events";
            auto batch = source(last, ec);
            if (ec || batch.empty()) break;
            std::string lines;
            for (const auto& e : batch) {
                lines += nlohmann::json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
                lines.push_back('\n');
            }
            append_locked(lines, f, ec);
            if (ec) break;
            last = batch.back().seq;
        }
        if (::fstat(fd, &st) == 0) known_ = file_state{st.st_dev, st.st_ino, st.st_size, last};
        else known_.reset();
        return last;
    }

    /// The highest "seq" of a whole line in the file, reading back from its end (0: none).
    static std::uint64_t last_seq_in_file(int fd, off_t size, std::error_code& ec) {
        std::string tail;
        off_t from = size;
        constexpr off_t chunk = 64 * 1024;
        while (from > 0) {
            const off_t start = from > chunk ? from - chunk : 0;
            std::string buf(static_cast<std::size_t>(from - start), '\0');
            std::size_t got = 0;
            while (got < buf.size()) {
                const ssize_t n = detail::sys().pread(fd, buf.data() + got, buf.size() - got, start + static_cast<off_t>(got));
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) return ec = detail::last_error(), 0;
                if (n == 0) break;
                got += static_cast<std::size_t>(n);
            }
            buf.resize(got);
            tail.insert(0, buf);
            from = start;
            // Whole lines only: the first piece may start mid-line unless it is the file's start.
            std::size_t end = tail.size();
            std::uint64_t best = 0;
            while (end > 0) {
                const std::size_t nl = tail.rfind('\n', end - 1);
                const bool whole = nl != std::string::npos || from == 0;
                const std::size_t begin = nl == std::string::npos ? 0 : nl + 1;
                if (!whole) break;
                if (end > begin) {
                    std::error_code pec;
                    std::string why;
                    if (auto e = parse_event(std::string_view(tail).substr(begin, end - begin), pec, why); e && e->seq)
                        best = std::max(best, e->seq);
                }
                if (best) return best;   // the file is in sequence order: the last numbered line is the highest
                if (nl == std::string::npos) break;
                end = nl;
            }
            if (tail.size() > (std::size_t{64} << 20)) break;   // 64 MiB without a numbered line: none
        }
        return 0;
    }

    std::string path_;
    error_handler on_error_;
    detail::unique_fd fd_;
    std::shared_ptr<std::atomic<std::uint64_t>> failures_;
    std::string detail_;
    struct file_state {
        dev_t dev;
        ino_t ino;
        off_t size;
        std::uint64_t seq;
    };
    std::optional<file_state> known_;   // the file as the last relay left it
};

static_assert(kugetsu::durable_notifier<jsonl_notifier> && kugetsu::with_error_detail<jsonl_notifier>);

} // namespace kugetsu
