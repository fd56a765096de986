// kugetsu/kugetsu.hpp: the umbrella header: the dispatcher, every model that needs no
// optional dependency, and the ready-made alias for tests.
//
//   kugetsu::test_dispatcher  null_lock, fake_spawner, callback_notifier, memory_store,
//                             manual_clock, null_workspace: for unit tests of host code
//
// Not included: the real dispatcher over a state directory, kugetsu::dispatcher and
// kugetsu::open_dispatcher(home), in <kugetsu/home.hpp> with the SQLite store (target
// kugetsu::sqlite); the Boost.Interprocess locks (lock/boost_*.hpp, target kugetsu::boost);
// the simulator (sim/).
#pragma once

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
#include "store/memory_store.hpp"
#include "types.hpp"
#include "version.hpp"
#include "workspace/directory_workspace.hpp"
#include "workspace/git_worktree_workspace.hpp"
#include "workspace/null_workspace.hpp"

namespace kugetsu {

using test_dispatcher = basic_dispatcher<null_lock, fake_spawner, callback_notifier, memory_store,
                                         manual_clock, null_workspace>;

} // namespace kugetsu
