// kugetsu/notify/multi_notifier.hpp: sends each event to several notifiers, in order.
//
// It is a durable_notifier when one of its members is: relay() relays to those members.
//
//   kugetsu::multi_notifier n{kugetsu::jsonl_notifier("events.jsonl"),
//                             kugetsu::callback_notifier([](const kugetsu::event& e) { ... })};
#pragma once

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>

#include "../concepts.hpp"
#include "null_notifier.hpp"

namespace kugetsu {

template <notifier... Ns>
class multi_notifier {
public:
    explicit multi_notifier(Ns... ns) : ns_(std::move(ns)...) {}

    void notify(const event& e) noexcept {
        std::apply([&](auto&... n) { (n.notify(e), ...); }, ns_);
    }

    /// Relays the store's outbox to each durable member (the others get notify() only).
    /// Returns the lowest number the durable members hold; ec: the first failure.
    std::uint64_t relay(const event_source& source, std::error_code& ec) noexcept
        requires(durable_notifier<Ns> || ...)
    {
        ec.clear();
        std::uint64_t low = UINT64_MAX;
        auto one = [&](auto& n) {
            if constexpr (durable_notifier<std::decay_t<decltype(n)>>) {
                std::error_code nec;
                low = std::min(low, n.relay(source, nec));
                if (nec && !ec) ec = nec;
            }
        };
        std::apply([&](auto&... n) { (one(n), ...); }, ns_);
        return low;
    }

    template <std::size_t I>
    auto& get() noexcept { return std::get<I>(ns_); }

private:
    std::tuple<Ns...> ns_;
};

template <class... Ns>
multi_notifier(Ns...) -> multi_notifier<Ns...>;

static_assert(kugetsu::notifier<multi_notifier<null_notifier, null_notifier>>);

} // namespace kugetsu
