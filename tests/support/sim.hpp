// Shared by the simulator's tests: how many runs of an exploration broke an invariant of a
// kind, and a one-line account of an exploration for INFO and RC_LOG.
#pragma once

#include <cstdint>
#include <string>

#include <kugetsu/sim/explore.hpp>
#include <kugetsu/sim/report.hpp>

namespace kugetsu::test {

inline std::uint64_t count(const sim::exploration& ex, const std::string& kind) {
    auto it = ex.by_kind.find(kind);
    return it == ex.by_kind.end() ? 0 : it->second;
}

inline std::string describe(const sim::exploration& ex) {
    std::string s = std::to_string(ex.schedules) + " schedules, " + std::to_string(ex.kills) + " kills; ";
    for (auto& [k, n] : ex.by_kind) s += k + "=" + std::to_string(n) + " ";
    if (ex.shortest)
        s += "first: " + ex.shortest->first.kind + " " + ex.shortest->first.detail + " (replay " +
             sim::detail::schedule_text(ex.shortest->schedule) + ")";
    return s;
}

} // namespace kugetsu::test
