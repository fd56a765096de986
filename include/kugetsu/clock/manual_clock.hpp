// kugetsu/clock/manual_clock.hpp: a clock that moves only when told, for tests.
//
// Copies share one time, so a test keeps a copy and advances the clock the dispatcher holds.
#pragma once

#include <atomic>
#include <memory>

#include "../concepts.hpp"

namespace kugetsu {

class manual_clock {
public:
    /// Starts at 2026-01-01T00:00:00Z unless told otherwise.
    explicit manual_clock(timestamp start = timestamp{std::chrono::sys_days{std::chrono::year{2026} /
                                                                           std::chrono::January / 1}})
        : t_(std::make_shared<std::atomic<std::int64_t>>(start.time_since_epoch().count())) {}

    timestamp now() noexcept { return timestamp{duration{t_->load()}}; }
    void set(timestamp t) noexcept { t_->store(t.time_since_epoch().count()); }
    void advance(duration d) noexcept { t_->fetch_add(d.count()); }

private:
    std::shared_ptr<std::atomic<std::int64_t>> t_;
};

static_assert(kugetsu::clock<manual_clock>);

} // namespace kugetsu
