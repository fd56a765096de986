// kugetsu/clock/system_clock.hpp: the real wall clock, as an object.
#pragma once

#include <chrono>

#include "../concepts.hpp"

namespace kugetsu {

class system_clock {
public:
    timestamp now() noexcept {
        return std::chrono::floor<std::chrono::microseconds>(std::chrono::system_clock::now());
    }
};

static_assert(kugetsu::clock<system_clock>);

} // namespace kugetsu
