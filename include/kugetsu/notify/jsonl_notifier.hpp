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
// FAILURES never stop dispatching and are never thrown. notify(): the event is dropped,
// failures() is incremented, the optional error handler is called. relay(): ec says why and
// the events stay in the store for the next relay. Either way last_error_detail() names the
// file and the step, and a failed open is tried again next time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

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
        const int fd = fd_.get();
        f.step = "flock";
        if ((ec = detail::flock_fd(fd, LOCK_EX))) return;
        detail::scope_exit unlock([fd] { detail::flock_fd(fd, LOCK_UN); });
        append_locked(line, f, ec);
        known_.reset();
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
        const int fd = fd_.get();
        f.step = "flock";
        if ((ec = detail::flock_fd(fd, LOCK_EX))) return 0;
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

static_assert(kugetsu::durable_notifier<jsonl_notifier>);

} // namespace kugetsu
