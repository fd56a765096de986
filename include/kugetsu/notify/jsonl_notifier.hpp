// kugetsu/notify/jsonl_notifier.hpp: appends each event as one JSON line to a file.
//
// The file is opened O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC|O_NOFOLLOW (0600) and each event is
// one write() of one complete line, so the lines of concurrent processes appending to the
// same file never interleave (O_APPEND makes "seek to end and write" one step on a local
// filesystem). A short write is completed with further writes; EINTR is retried. A failure
// (ENOSPC, EIO) is counted and passed to the optional error handler, never thrown: a full
// disk never stops dispatching.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <fcntl.h>

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
            if (!fd_) fd_ = detail::open_path(path_, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, 0600, ec);
            if (!ec) {
                std::string line = nlohmann::json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
                line.push_back('\n');
                ec = detail::write_all(fd_.get(), line);
            }
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

private:
    std::string path_;
    error_handler on_error_;
    detail::unique_fd fd_;
    std::shared_ptr<std::atomic<std::uint64_t>> failures_;
};

static_assert(kugetsu::notifier<jsonl_notifier>);

} // namespace kugetsu
