// kugetsu/lock/null_lock.hpp: a lock that does not lock.
//
// null_lock exists so that the original check-then-act race can be reproduced: with it,
// two dispatchers can both count a free slot and both spawn. Never use it to run agents.
#pragma once

#include <system_error>

#include "../concepts.hpp"

namespace kugetsu {

/// Scope: none. Held by a forked child: n/a. Released when the holder dies: n/a.
class null_lock {
public:
    void lock(std::error_code& ec) noexcept { ec.clear(); }
    bool try_lock(std::error_code& ec) noexcept {
        ec.clear();
        return true;
    }
    void unlock() noexcept {}

    /// BasicLockable and Lockable (see concepts.hpp): lock(ec) and try_lock(ec) that throw
    /// std::system_error instead, for `std::scoped_lock guard(l);`.
    void lock() { lock_or_throw(*this); }
    bool try_lock() { return try_lock_or_throw(*this); }
};

static_assert(kugetsu::try_lock<null_lock> && kugetsu::lockable<null_lock>);

} // namespace kugetsu
