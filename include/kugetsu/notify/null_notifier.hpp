// kugetsu/notify/null_notifier.hpp: drops every event.
#pragma once

#include "../concepts.hpp"

namespace kugetsu {

class null_notifier {
public:
    void notify(const event&) noexcept {}
};

static_assert(kugetsu::notifier<null_notifier>);

} // namespace kugetsu
