// kugetsu/fwd.hpp: declarations of the dispatcher and of every policy model, for headers
// that only name them. The ready-made aliases are where everything they name is defined:
// kugetsu::test_dispatcher in kugetsu.hpp, kugetsu::dispatcher in home.hpp.
#pragma once

#include "concepts.hpp"

namespace kugetsu {

template <lock Lock, spawner Spawner, notifier Notifier, store Store, clock Clock, workspace Workspace>
class basic_dispatcher;

class flock_lock;
class null_lock;
class boost_file_lock;
class boost_named_mutex_lock;
class fork_spawner;
class fake_spawner;
class null_notifier;
class callback_notifier;
class jsonl_notifier;
template <notifier... Ns>
class multi_notifier;
class sqlite_store;
class memory_store;
class system_clock;
class manual_clock;
class null_workspace;
class directory_workspace;
class git_worktree_workspace;

} // namespace kugetsu
