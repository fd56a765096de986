// A host program that uses kugetsu, built by both consumer projects (find_package and
// add_subdirectory), linked with kugetsu::sqlite. Exits non-zero if the lock models or the
// lock concept do not behave as documented, or if a dispatcher over a state directory
// (home.hpp: SQLite) does not keep what it was given.
//
// Usage: find_package_consumer [lock-file]   (or add_subdirectory_consumer)
#include <kugetsu/concepts.hpp>
#include <kugetsu/home.hpp>
#include <kugetsu/lock/flock_lock.hpp>
#include <kugetsu/lock/null_lock.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>

#include <unistd.h>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "FAILED: %s\n", what);
        ++failures;
    }
}

// A host's own code written against the concept, not against a model.
template <kugetsu::lock Lock>
bool run_locked(Lock& l, int& counter) {
    std::error_code ec;
    l.lock(ec);
    if (ec) return false;
    ++counter;
    l.unlock();
    return true;
}

struct not_a_lock {
    void lock() {}
};

static_assert(kugetsu::lock<kugetsu::flock_lock>);
static_assert(kugetsu::lock<kugetsu::null_lock>);
static_assert(!kugetsu::lock<not_a_lock>);
static_assert(!kugetsu::lock<int>);

} // namespace

int main(int argc, char** argv) {
    std::error_code ec;
    const std::string path = argc > 1
        ? std::string(argv[1])
        : (std::filesystem::temp_directory_path() /
           ("kugetsu-consumer-" + std::to_string(::getpid()) + ".lock")).string();
    std::filesystem::remove(path, ec);

    {
        kugetsu::flock_lock first(path);
        kugetsu::flock_lock second(path);

        first.lock(ec);
        check(!ec, "flock_lock::lock succeeds");

        ec.clear();
        check(!second.try_lock(ec), "a second flock_lock on the same file cannot be taken");
        check(!ec, "try_lock on a held lock reports 'not taken', not an error");

        first.unlock();
        ec.clear();
        check(second.try_lock(ec), "after unlock, the second flock_lock can be taken");
        check(!ec, "try_lock on a free lock reports no error");
        second.unlock();

        int counter = 0;
        check(run_locked(first, counter) && counter == 1, "a concept-constrained template runs flock_lock");
    }

    {
        kugetsu::null_lock a;
        kugetsu::null_lock b;
        a.lock(ec);
        check(!ec, "null_lock::lock succeeds");
        check(b.try_lock(ec) && !ec, "null_lock excludes nothing");
        b.unlock();
        a.unlock();

        int counter = 0;
        check(run_locked(a, counter) && counter == 1, "a concept-constrained template runs null_lock");
    }

    std::filesystem::remove(path, ec);

    {   // A state directory through kugetsu::sqlite: the limits are kept, a task is queued.
        char tmpl[] = "/tmp/kugetsu-consumer-home-XXXXXX";
        check(::mkdtemp(tmpl) != nullptr, "mkdtemp");
        const std::string home = std::string(tmpl) + "/home";
        {
            kugetsu::dispatcher d = kugetsu::open_dispatcher(home, {.cap = 2});
            d.enqueue({"hello", {"true"}}, ec);
            check(!ec, "enqueue into a new HOME");
        }
        kugetsu::dispatcher again = kugetsu::open_dispatcher(home);   // default options: cap 3
        check(again.limits(ec).cap == 2 && !ec, "the HOME keeps the cap it was created with");
        auto it = again.store().get_item("hello", ec);
        check(it && it->state == kugetsu::task_state::pending, "the queued task is pending in state.db");
        std::filesystem::remove_all(tmpl, ec);
    }
    if (failures == 0) std::puts("kugetsu consumer: all checks passed");
    return failures == 0 ? 0 : 1;
}
