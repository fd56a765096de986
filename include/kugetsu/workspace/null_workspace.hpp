// kugetsu/workspace/null_workspace.hpp: the default workspace: none.
//
// Use it when agents should run where the dispatcher runs: prepare() returns "" (the agent
// inherits the dispatcher's working directory) and remove() does nothing, so nothing is
// ever created, kept or deleted. Agents of concurrent tasks share that directory.
#pragma once

#include <string>
#include <system_error>

#include "../concepts.hpp"
#include "../types.hpp"

namespace kugetsu {

/// Creates: nothing. Kept after remove: n/a. Fails: never.
class null_workspace {
public:
    /// Returns "": the agent inherits the working directory.
    std::string prepare(const queue_item&, std::error_code& ec) noexcept {
        ec.clear();
        return {};
    }

    void remove(const queue_item&, std::error_code& ec) noexcept { ec.clear(); }

    /// Nothing outlives a prepare (workspace_with_effects).
    bool has_effects(const queue_item&) const noexcept { return false; }
};

static_assert(kugetsu::workspace_with_effects<null_workspace>);

} // namespace kugetsu
