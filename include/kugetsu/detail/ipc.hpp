// kugetsu/detail/ipc.hpp: calling Boost.Interprocess without exceptions: its exceptions
// mapped to std::error_code, and EINTR retried (Boost 1.74 does not retry it).
#pragma once

#include <new>
#include <optional>
#include <system_error>

#include <boost/interprocess/exceptions.hpp>

#include "../error.hpp"

namespace kugetsu::detail {

inline std::error_code ipc_error(const boost::interprocess::interprocess_exception& e) noexcept {
    const int native = e.get_native_error();
    if (native != 0) return {native, std::system_category()};
    return make_error_code(errc::lock_failed);
}

/// Calls f() until it returns without EINTR. On another error: ec set (the native errno,
/// ENOMEM for bad_alloc, else errc::lock_failed), nullopt.
template <class F>
auto ipc_call(F&& f, std::error_code& ec) noexcept -> std::optional<decltype(f())> {
    for (;;) {
        try {
            auto r = f();
            ec.clear();
            return r;
        } catch (const boost::interprocess::interprocess_exception& e) {
            ec = ipc_error(e);
        } catch (const std::bad_alloc&) {
            ec = std::make_error_code(std::errc::not_enough_memory);
        } catch (...) {
            ec = make_error_code(errc::lock_failed);
        }
        if (ec != std::errc::interrupted) return std::nullopt;
    }
}

} // namespace kugetsu::detail
