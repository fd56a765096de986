// kugetsu/notify/callback_notifier.hpp: calls a function for every event.
//
// The callback may throw: the exception is caught and counted (failures()), and dispatching
// goes on. Keep the callback short: it runs on the dispatcher's thread, after the lock is
// released.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "../concepts.hpp"

namespace kugetsu {

class callback_notifier {
public:
    explicit callback_notifier(std::function<void(const event&)> f)
        : f_(std::move(f)), failures_(std::make_shared<std::atomic<std::uint64_t>>(0)) {}

    void notify(const event& e) noexcept {
        try {
            if (f_) f_(e);
        } catch (...) {
            failures_->fetch_add(1);
        }
    }

    /// How many calls threw. Copies of this notifier share the count.
    std::uint64_t failures() const noexcept { return failures_->load(); }

private:
    std::function<void(const event&)> f_;
    std::shared_ptr<std::atomic<std::uint64_t>> failures_;
};

static_assert(kugetsu::notifier<callback_notifier>);

} // namespace kugetsu
