// kugetsu/notify/multi_notifier.hpp: sends each event to several notifiers, in order.
//
//   kugetsu::multi_notifier n{kugetsu::jsonl_notifier("events.jsonl"),
//                             kugetsu::callback_notifier([](const kugetsu::event& e) { ... })};
#pragma once

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

    template <std::size_t I>
    auto& get() noexcept { return std::get<I>(ns_); }

private:
    std::tuple<Ns...> ns_;
};

template <class... Ns>
multi_notifier(Ns...) -> multi_notifier<Ns...>;

static_assert(kugetsu::notifier<multi_notifier<null_notifier, null_notifier>>);

} // namespace kugetsu
