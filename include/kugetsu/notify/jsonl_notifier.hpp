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
// FAILURES never stop dispatching and are never thrown: the event is dropped, failures() is
// incremented, the optional error handler is called, and last_error_detail() names the file
// and the step. A failed open is tried again on the next event.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
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

    std::string path_;
    error_handler on_error_;
    detail::unique_fd fd_;
    std::shared_ptr<std::atomic<std::uint64_t>> failures_;
    std::string detail_;
};

static_assert(kugetsu::notifier<jsonl_notifier>);

} // namespace kugetsu
