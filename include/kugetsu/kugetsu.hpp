// kugetsu/kugetsu.hpp: the umbrella header: the dispatcher, every model that needs no
// optional dependency, and the ready-made aliases.
//
//   kugetsu::dispatcher       flock_lock, fork_spawner, jsonl_notifier, file_store,
//                             system_clock, git_worktree_workspace: real agents on one machine
//   kugetsu::test_dispatcher  null_lock, fake_spawner, callback_notifier, memory_store,
//                             manual_clock, null_workspace: for unit tests of host code
//   kugetsu::open_dispatcher(home, options): a kugetsu::dispatcher over a state directory
//
// Not included: the Boost.Interprocess locks (lock/boost_*.hpp, target kugetsu::boost) and
// the simulator (sim/).
#pragma once

#include <string>
#include <utility>

#include <sys/stat.h>

#include "clock/manual_clock.hpp"
#include "clock/system_clock.hpp"
#include "concepts.hpp"
#include "dispatcher.hpp"
#include "error.hpp"
#include "fwd.hpp"
#include "json.hpp"
#include "lock/flock_lock.hpp"
#include "lock/null_lock.hpp"
#include "notify/callback_notifier.hpp"
#include "notify/jsonl_notifier.hpp"
#include "notify/multi_notifier.hpp"
#include "notify/null_notifier.hpp"
#include "spawn/fake_spawner.hpp"
#include "spawn/fork_spawner.hpp"
#include "store/file_store.hpp"
#include "store/memory_store.hpp"
#include "types.hpp"
#include "workspace/directory_workspace.hpp"
#include "workspace/git_worktree_workspace.hpp"
#include "workspace/null_workspace.hpp"

namespace kugetsu {

using dispatcher = basic_dispatcher<flock_lock, fork_spawner, jsonl_notifier, file_store, system_clock,
                                    git_worktree_workspace>;

using test_dispatcher = basic_dispatcher<null_lock, fake_spawner, callback_notifier, memory_store,
                                         manual_clock, null_workspace>;

/// The files of a state directory HOME.
struct home_layout {
    std::string home;
    std::string lock() const { return home + "/lock"; }
    std::string logs() const { return home + "/logs"; }
    std::string run() const { return home + "/run"; }
    std::string queue() const { return home + "/queue"; }
    std::string sessions() const { return home + "/sessions"; }
    /// Held (shared flock) by every running daemon: supervisors skip their on-exit reaper then.
    std::string daemon_lock() const { return home + "/daemon.lock"; }
    std::string events() const { return home + "/events.jsonl"; }
    std::string worktrees() const { return home + "/worktrees"; }
};

/// A dispatcher over the state directory HOME (created 0700 if missing): the lock file
/// HOME/lock, records under HOME/queue and HOME/sessions, agent logs in HOME/logs, slot files
/// in HOME/run, events appended to HOME/events.jsonl, git worktrees under HOME/worktrees.
/// Throws kugetsu::error: invalid options, or HOME cannot be created or opened.
inline dispatcher open_dispatcher(const std::string& home, dispatcher_options options = {}) {
    const home_layout h{home};
    file_store store(home);
    std::error_code ec;
    store.open(ec);
    if (ec) throw error(ec, store.last_error_detail());
    return dispatcher(flock_lock(h.lock()), fork_spawner(h.logs(), h.run()), jsonl_notifier(h.events()),
                      std::move(store), system_clock{}, git_worktree_workspace(h.worktrees()), options);
}

} // namespace kugetsu
