// kugetsu-micro-bench: micro-benchmarks of the pieces a dispatcher's time goes to (issue 6).
// Benchmarks, not tests: nothing here asserts a figure.
//
//   BM_lock_acquire_release/<model>       lock(ec) + unlock() of an uncontended lock
//   BM_atomic_write/<disk|tmpfs>/durable:<0|1>
//                                         detail::atomic_write_at of a ~0.5 KiB queue record
//   BM_start_critical_section/...         basic_dispatcher::start() over file_store with a
//                                         spawner that starts nothing (no process cost)
//   BM_process_queue_pass_*/pending:N     one process_queue() pass with N pending tasks
//   BM_daemon_wake_no_slot/pending:N      what `kugetsu daemon` does per wake-up while the cap
//                                         is full: process_queue() + next_wake()
//   BM_enqueue/<store>                    basic_dispatcher::enqueue()
//
// Flags (besides Google Benchmark's own, e.g. --benchmark_filter=pass --benchmark_min_time=0.01):
//   --dir=PATH        the directory on the normal disk for file benchmarks (default: the build
//                     tree's bench/ directory, i.e. the disk the build lives on)
//   --tmpfs_dir=PATH  the tmpfs directory (default /dev/shm); "" skips the tmpfs variants
//   --sizes=10,1000,100000   the pending-queue sizes of the pass benchmarks
// Each file benchmark's label names the filesystem type it ran on (ext4, tmpfs, ...): the
// cost of durable writes depends entirely on it.
//
// Fixtures (N pending records for the pass benchmarks) are written once per size with
// non-durable writes into a temporary directory under --dir, reused by every benchmark of
// that size, and removed at exit. 100,000 records take a few seconds to write.
#include <benchmark/benchmark.h>

#include <kugetsu/kugetsu.hpp>
#if KUGETSU_BENCH_BOOST
#include <kugetsu/lock/boost_file_lock.hpp>
#include <kugetsu/lock/boost_named_mutex_lock.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef KUGETSU_BENCH_DEFAULT_DIR
#define KUGETSU_BENCH_DEFAULT_DIR "/var/tmp"
#endif

namespace fs = std::filesystem;
using namespace kugetsu;

namespace {

// ---- settings and helpers ----------------------------------------------------------------

struct settings {
    std::string dir = KUGETSU_BENCH_DEFAULT_DIR;
    std::string tmpfs_dir = "/dev/shm";
    std::vector<long> sizes = {10, 1000, 100000};
};
settings cfg;

std::string scratch_root;   // mkdtemp under cfg.dir: fixtures and per-benchmark homes
std::string tmpfs_root;     // mkdtemp under cfg.tmpfs_dir

[[noreturn]] void die(const std::string& what) {
    std::cerr << "kugetsu-micro-bench: " << what << "\n";
    std::exit(1);
}

void check(const std::error_code& ec, const std::string& what) {
    if (ec) die(what + ": " + ec.message());
}

std::string make_temp_dir(const std::string& parent) {
    std::string t = parent + "/kugetsu-micro.XXXXXX";
    if (!::mkdtemp(t.data())) die("mkdtemp under " + parent + ": " + std::strerror(errno));
    return t;
}

/// A fresh, private (0700) directory under `root` for one benchmark.
std::string fresh_home(const std::string& root, const std::string& name) {
    static int n = 0;
    const std::string p = root + "/" + name + "." + std::to_string(++n);
    if (::mkdir(p.c_str(), 0700) != 0) die("mkdir " + p + ": " + std::strerror(errno));
    return p;
}

/// The filesystem type of a path, for the label: durable writes cost what the disk makes them.
std::string fs_type(const std::string& path) {
    struct statfs s{};
    if (::statfs(path.c_str(), &s) != 0) return "?";
    switch (static_cast<unsigned long>(s.f_type)) {
    case 0x01021994UL: return "tmpfs";
    case 0xEF53UL: return "ext4";
    case 0x58465342UL: return "xfs";
    case 0x9123683EUL: return "btrfs";
    case 0x794c7630UL: return "overlayfs";
    case 0x2FC12FC1UL: return "zfs";
    default: {
        char b[32];
        std::snprintf(b, sizeof b, "fs 0x%lx", static_cast<unsigned long>(s.f_type));
        return b;
    }
    }
}

timestamp base_time() {
    static const timestamp t = system_clock{}.now() - std::chrono::hours(1);
    return t;
}

/// A realistic pending record: what `kugetsu enqueue --id ID -- /bin/true` writes.
queue_item pending_item(const std::string& id, long order) {
    queue_item it;
    it.id = id;
    it.argv = {"/bin/true"};
    it.workdir = "/tmp";
    it.enqueued_at = it.updated_at = base_time() + std::chrono::microseconds(order);
    return it;
}

std::string pending_id(long i) {
    char b[32];
    std::snprintf(b, sizeof b, "p%07ld", i);
    return b;
}

// ---- a spawner that starts nothing ----------------------------------------------------------

/// spawn() makes up a pid; the "agent" counts as running until end(pid). poll() of an ended
/// pid says exited 0. No process, no pipe, no /proc: the dispatcher's own cost only.
class noop_spawner {
public:
    process_ref spawn(const spawn_request&, std::error_code& ec) {
        ec.clear();
        const int pid = next_pid_++;
        live_.insert(pid);
        return ref(pid);
    }
    void release(const process_ref&, std::error_code& ec) { ec.clear(); }
    void abandon(const process_ref& p) noexcept { live_.erase(p.pid); }
    process_status poll(const process_ref& p, std::error_code& ec) {
        ec.clear();
        if (p == self_ || live_.count(p.pid)) return {process_state::running, -1, false};
        return {process_state::exited, 0, false};
    }
    void signal(const process_ref&, stop_signal, std::error_code& ec) { ec.clear(); }
    process_ref self() { return self_; }

    static process_ref ref(int pid) { return {pid, static_cast<std::uint64_t>(pid) * 10, "bench-boot"}; }
    void add_live(int pid) { live_.insert(pid); }
    void end(int pid) { live_.erase(pid); }

private:
    std::set<int> live_;
    int next_pid_ = 100000;
    process_ref self_{1, 1, "bench-boot"};
};
static_assert(kugetsu::spawner<noop_spawner>);

template <class Lock, class Store>
using bench_dispatcher = basic_dispatcher<Lock, noop_spawner, null_notifier, Store, system_clock, null_workspace>;

using file_dispatcher = bench_dispatcher<flock_lock, file_store>;
using memory_dispatcher = bench_dispatcher<null_lock, memory_store>;

file_dispatcher open_file_dispatcher(const std::string& home, bool durable, int cap = 3) {
    file_store st(home, {.durable = durable, .quarantine = true});
    std::error_code ec;
    st.open(ec);
    check(ec, "open " + home);
    return file_dispatcher(flock_lock(home + "/lock"), noop_spawner{}, null_notifier{}, std::move(st), system_clock{},
                           null_workspace{}, {.cap = cap});
}

// ---- BM_lock_acquire_release ---------------------------------------------------------------

template <class Lock>
void lock_loop(benchmark::State& state, Lock& l) {
    std::error_code ec;
    l.lock(ec);   // first use opens or creates the file or semaphore: not measured
    check(ec, "lock");
    l.unlock();
    for (auto _ : state) {
        l.lock(ec);
        benchmark::ClobberMemory();
        l.unlock();
    }
    check(ec, "lock");
}

void BM_lock_flock(benchmark::State& state) {
    flock_lock l(scratch_root + "/flock.lock");
    lock_loop(state, l);
    state.SetLabel(fs_type(scratch_root));
}
void BM_lock_null(benchmark::State& state) {
    null_lock l;
    lock_loop(state, l);
}
#if KUGETSU_BENCH_BOOST
void BM_lock_boost_file(benchmark::State& state) {
    boost_file_lock l(scratch_root + "/boost.lock");
    lock_loop(state, l);
    state.SetLabel(fs_type(scratch_root));
}
void BM_lock_boost_named_mutex(benchmark::State& state) {
    const std::string name = "kugetsu-micro-bench-" + std::to_string(::getpid());
    {
        boost_named_mutex_lock l(name);
        lock_loop(state, l);
    }
    std::error_code ec;
    boost_named_mutex_lock::remove(name, ec);
}
#endif

// ---- BM_atomic_write -----------------------------------------------------------------------

/// The record a running task has: the biggest a pass writes.
std::string sample_record() {
    queue_item it = pending_item("t-20261127T213457-aa5cd953", 0);
    it.state = task_state::running;
    it.attempts = 1;
    it.process = noop_spawner::ref(4242);
    it.started_at = it.updated_at;
    return nlohmann::json(it).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

void BM_atomic_write(benchmark::State& state, const std::string* root, bool durable) {
    const std::string dir = fresh_home(*root, "atomic");
    std::error_code ec;
    auto fd = detail::open_path(dir, O_RDONLY | O_DIRECTORY, 0, ec);
    check(ec, "open " + dir);
    const std::string text = sample_record();
    for (auto _ : state) {
        ec = detail::atomic_write_at(fd.get(), "record.json", text, durable);
        if (ec) break;
    }
    check(ec, "atomic_write_at in " + dir);
    state.SetLabel(fs_type(dir) + ", " + std::to_string(text.size()) + " B");
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

// ---- BM_start_critical_section -------------------------------------------------------------
//
// One start() of a new task with a free slot, over file_store, flock_lock and the no-op
// spawner: lock; reap (list sessions; list queue/ for orphaned claims); count; create the
// record (claimed); attempt: put it notified, spawn, put the session, release, put it running;
// unlock. Four durable writes with durable:1. Between iterations (not timed) the agent "ends"
// and its session and record are removed, so every start sees the same state: `history`
// finished records in queue/ and no live agent.
//   cold:0  one dispatcher for all iterations: records are parsed once, then only stat'ed
//   cold:1  a new dispatcher (new file_store, empty parse cache) per iteration: what every
//           `kugetsu start` process pays, minus exec and the dynamic loader
void BM_start_critical_section(benchmark::State& state) {
    const bool durable = state.range(0) != 0;
    const long history = state.range(1);
    const bool cold = state.range(2) != 0;
    const std::string home = fresh_home(scratch_root, "start");
    {
        file_store fill(home, {.durable = false, .quarantine = true});
        std::error_code ec;
        fill.open(ec);
        check(ec, "open " + home);
        for (long i = 0; i < history; ++i) {
            queue_item it = pending_item("h" + std::to_string(i), i);
            it.state = task_state::completed;
            it.attempts = 1;
            it.exit_code = 0;
            it.process = noop_spawner::ref(static_cast<int>(10 + i));
            it.started_at = it.finished_at = it.updated_at;
            fill.create_item(it, ec);
            check(ec, "fill " + home);
        }
    }
    std::unique_ptr<file_dispatcher> d;
    if (!cold) {
        d = std::make_unique<file_dispatcher>(open_file_dispatcher(home, durable));
        std::error_code ec;
        d->reap(ec);   // warm the parse cache
        check(ec, "reap");
    }
    std::error_code oec;
    auto rec = detail::open_path(home + "/queue", O_RDONLY | O_DIRECTORY, 0, oec);
    check(oec, "open " + home + "/queue");
    auto ses = detail::open_path(home + "/sessions", O_RDONLY | O_DIRECTORY, 0, oec);
    check(oec, "open " + home + "/sessions");
    long n = 0;
    for (auto _ : state) {
        if (cold) d = std::make_unique<file_dispatcher>(open_file_dispatcher(home, durable));
        task_spec spec{"s" + std::to_string(n++), {"/bin/true"}, role::dev, {}, {}, {}, "/tmp"};
        std::error_code ec;
        const auto r = d->start(spec, ec);
        state.PauseTiming();
        if (ec || r.status != start_status::started) die("start: " + (ec ? ec.message() : std::string("no slot")));
        d->spawner().end(r.item.process.pid);
        ::unlinkat(ses.get(), (spec.id + ".json").c_str(), 0);
        ::unlinkat(rec.get(), (spec.id + ".json").c_str(), 0);
        if (cold) d.reset();
        state.ResumeTiming();
    }
    state.SetLabel(fs_type(home));
}

// ---- the process_queue() pass --------------------------------------------------------------
//
// What a "pass" is: one call of process_queue(), the unit of work of `kugetsu daemon` (which
// then calls next_wake() and sleeps). Its cost has a part that depends on the queue and a
// part that depends on what it does, so two cases are measured at each queue size N:
//
//   no_slot     the cap (3) is full: 3 agents live, N tasks pending. The pass takes the
//               lock, reaps (polls the 3 sessions, reads their records, lists queue/ for
//               claims of dead processes), counts, finds no free slot, unlocks. It writes
//               nothing, so every iteration sees the same state. This is what a daemon pays
//               on every wake-up that changes nothing (a task enqueued while the cap is
//               full) and the floor of every pass: the queue-size-dependent part.
//   start_one   2 agents live, N pending: the pass that follows an agent's end. As above, then
//               lists queue/ again for the oldest pending task, marks it notified (1 write),
//               and start_item()s it: lock, reap the sessions, read the record, one attempt
//               (2 record writes, 1 session write; the spawner starts nothing). Between
//               iterations (not timed) the started task is put back to pending and its
//               session removed, so the same task is started each time. durable:1 fsyncs
//               as the daemon does; durable:0 shows what is not the disk.
//
// The dispatcher lives across iterations, as in a daemon: records are parsed once (in the
// untimed warm-up pass) and later passes only stat them. `cold` instead builds a new
// dispatcher per iteration, i.e. the first pass of a fresh process (`kugetsu daemon --once`,
// and the reap inside every `kugetsu start`, `status`, `wait`): it opens and parses every
// record. The _memory variants run the same passes over memory_store and null_lock: the
// dispatcher's own algorithm, without the filesystem.

/// N pending records (p0000000...) and three running background agents (bg0..bg2) in a home
/// under scratch_root, written once per N with non-durable writes and shared by the
/// benchmarks of that size.
struct pass_fixture {
    std::string home;
    queue_item first;   // the oldest pending task, as written
};

const pass_fixture& fixture(long n) {
    static std::map<long, pass_fixture> all;
    if (auto i = all.find(n); i != all.end()) return i->second;
    pass_fixture f;
    f.home = scratch_root + "/pending-" + std::to_string(n);
    const auto t0 = std::chrono::steady_clock::now();
    file_store st(f.home, {.durable = false, .quarantine = true});
    std::error_code ec;
    for (long i = 0; i < n; ++i) {
        st.create_item(pending_item(pending_id(i), 1000 + i), ec);
        check(ec, "fixture " + f.home + ": " + st.last_error_detail());
    }
    for (int k = 0; k < 3; ++k) {
        queue_item it = pending_item("bg" + std::to_string(k), k);
        it.state = task_state::running;
        it.attempts = 1;
        it.process = noop_spawner::ref(10 + k);
        it.started_at = it.updated_at;
        st.create_item(it, ec);
        check(ec, "fixture " + f.home);
    }
    f.first = pending_item(pending_id(0), 1000);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[fixture: %ld pending records in %s, written in %.1f s]\n", n, f.home.c_str(), s);
    return all.emplace(n, std::move(f)).first->second;
}

/// Makes exactly bg0..bg(k-1) live sessions (and their spawner's agents) in the fixture,
/// removes any other session, and puts the first pending task back to pending.
template <class D, class Store>
void set_background(D& d, Store& st, int k) {
    std::error_code ec;
    for (const auto& s : st.list_sessions(ec)) {
        st.remove_session(s.id, ec);
        check(ec, "remove session");
    }
    check(ec, "list sessions");
    for (int i = 0; i < 3; ++i) {
        const std::string id = "bg" + std::to_string(i);
        queue_item it = pending_item(id, i);
        it.attempts = 1;
        it.process = noop_spawner::ref(10 + i);
        it.started_at = it.updated_at;
        it.state = i < k ? task_state::running : task_state::completed;
        st.put_item(it, ec);
        check(ec, "put background item");
        if (i < k) {
            st.put_session({id, role::dev, id, it.process, "", it.updated_at}, ec);
            check(ec, "put background session");
            d.spawner().add_live(10 + i);
        } else {
            d.spawner().end(10 + i);
        }
    }
}

template <class D>
void run_pass(D& d, benchmark::State& state, int expect_started) {
    std::error_code ec;
    const auto r = d.process_queue(ec);
    if (ec) die("process_queue: " + d.last_error_detail());
    if (r.started != expect_started) {
        state.SkipWithError("the pass did not do what it should (see the fixture)");
    }
}

/// The warm no_slot pass; `wake` adds next_wake(), i.e. one whole daemon wake-up.
void BM_pass_no_slot_file(benchmark::State& state, bool wake) {
    const auto& f = fixture(state.range(0));
    auto d = open_file_dispatcher(f.home, true);
    set_background(d, d.store(), 3);
    run_pass(d, state, 0);   // warm-up: parses every record once
    std::error_code ec;
    for (auto _ : state) {
        d.process_queue(ec);
        if (wake) benchmark::DoNotOptimize(d.next_wake(ec));
    }
    check(ec, "pass");
    run_pass(d, state, 0);
    state.SetLabel(fs_type(f.home));
}

void BM_process_queue_pass_no_slot(benchmark::State& state) { BM_pass_no_slot_file(state, false); }
void BM_daemon_wake_no_slot(benchmark::State& state) { BM_pass_no_slot_file(state, true); }

void BM_process_queue_pass_no_slot_cold(benchmark::State& state) {
    const auto& f = fixture(state.range(0));
    {
        auto d = open_file_dispatcher(f.home, false);
        set_background(d, d.store(), 3);
    }
    for (auto _ : state) {
        auto d = open_file_dispatcher(f.home, true);
        for (int k = 0; k < 3; ++k) d.spawner().add_live(10 + k);
        run_pass(d, state, 0);
        state.PauseTiming();   // the destructor (freeing the parse cache) is not the pass
        { auto gone = std::move(d); }
        state.ResumeTiming();
    }
    state.SetLabel(fs_type(f.home));
}

void BM_process_queue_pass_start_one(benchmark::State& state) {
    const auto& f = fixture(state.range(0));
    const bool durable = state.range(1) != 0;
    auto d = open_file_dispatcher(f.home, durable);
    set_background(d, d.store(), 2);
    std::error_code ec;
    d.store().put_item(f.first, ec);
    check(ec, "reset " + f.first.id);
    d.reap(ec);   // warm-up: parses every record once
    check(ec, "reap");
    for (auto _ : state) {
        const auto r = d.process_queue(ec);
        state.PauseTiming();
        if (ec || r.started != 1) die("start_one pass: " + (ec ? d.last_error_detail() : std::string("started ") + std::to_string(r.started)));
        // Put the task back: agent ended, session gone, record pending as written.
        auto it = d.store().get_item(f.first.id, ec);
        d.spawner().end(it->process.pid);
        d.store().remove_session(f.first.id, ec);
        d.store().put_item(f.first, ec);
        check(ec, "reset");
        state.ResumeTiming();
    }
    set_background(d, d.store(), 3);
    state.SetLabel(fs_type(f.home));
}

/// The same passes over memory_store: the dispatcher's algorithm alone.
struct memory_fixture {
    memory_store st;
    queue_item first;
};
memory_fixture& mem_fixture(long n) {
    static std::map<long, memory_fixture> all;
    if (auto i = all.find(n); i != all.end()) return i->second;
    memory_fixture f;
    std::error_code ec;
    for (long i = 0; i < n; ++i) f.st.create_item(pending_item(pending_id(i), 1000 + i), ec);
    f.first = pending_item(pending_id(0), 1000);
    return all.emplace(n, std::move(f)).first->second;
}

void BM_process_queue_pass_memory(benchmark::State& state) {
    auto& f = mem_fixture(state.range(0));
    const bool start_one = state.range(1) != 0;
    memory_dispatcher d(null_lock{}, noop_spawner{}, null_notifier{}, f.st, system_clock{}, null_workspace{}, {.cap = 3});
    set_background(d, d.store(), start_one ? 2 : 3);
    std::error_code ec;
    for (auto _ : state) {
        const auto r = d.process_queue(ec);
        if (start_one) {
            state.PauseTiming();
            if (ec || r.started != 1) die("memory start_one pass");
            auto it = d.store().get_item(f.first.id, ec);
            d.spawner().end(it->process.pid);
            d.store().remove_session(f.first.id, ec);
            d.store().put_item(f.first, ec);
            state.ResumeTiming();
        }
    }
    check(ec, "memory pass");
}

// ---- BM_enqueue ----------------------------------------------------------------------------
//
// enqueue() of a new task: validate, build the record, create_item (file_store: temp file,
// fsync, link to the name, fsync the directory), and the task_queued event (null_notifier
// here; the CLI appends one line to events.jsonl). The queue grows with the iterations, as
// it does for users (create_item never lists the directory).

template <class D>
void enqueue_loop(benchmark::State& state, D& d) {
    long n = 0;
    std::error_code ec;
    for (auto _ : state) {
        task_spec spec{"e" + std::to_string(n++), {"/bin/true"}, role::dev, {}, {}, {}, "/tmp"};
        d.enqueue(spec, ec);
        if (ec) break;
    }
    if (ec) die("enqueue: " + d.last_error_detail());
}

void BM_enqueue_file(benchmark::State& state, const std::string* root, bool durable) {
    const std::string home = fresh_home(*root, "enqueue");
    auto d = open_file_dispatcher(home, durable);
    enqueue_loop(state, d);
    state.SetLabel(fs_type(home));
}

void BM_enqueue_memory(benchmark::State& state) {
    memory_dispatcher d(null_lock{}, noop_spawner{}, null_notifier{}, memory_store{}, system_clock{}, null_workspace{});
    enqueue_loop(state, d);
}

// ---- main ----------------------------------------------------------------------------------

std::vector<long> parse_sizes(const std::string& s) {
    std::vector<long> v;
    std::size_t i = 0;
    while (i < s.size()) {
        std::size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        const long n = std::atol(s.substr(i, j - i).c_str());
        if (n < 1) die("--sizes: not a list of whole numbers >= 1: " + s);
        v.push_back(n);
        i = j + 1;
    }
    return v;
}

/// Every benchmark is timed, and its iterations chosen, on the wall clock: a durable write
/// spends its time waiting for the disk, not on the CPU, and Google Benchmark would otherwise
/// run hundreds of 5 ms iterations to gather --benchmark_min_time of CPU time.
benchmark::internal::Benchmark* add(const std::string& name, auto&&... args) {
    return benchmark::RegisterBenchmark(name.c_str(), args...)->UseRealTime();
}

void register_all() {
    add("BM_lock_acquire_release/flock_lock", BM_lock_flock);
#if KUGETSU_BENCH_BOOST
    add("BM_lock_acquire_release/boost_file_lock", BM_lock_boost_file);
    add("BM_lock_acquire_release/boost_named_mutex_lock", BM_lock_boost_named_mutex);
#endif
    add("BM_lock_acquire_release/null_lock", BM_lock_null);

    struct where {
        const char* name;
        const std::string* root;
    };
    std::vector<where> roots = {{"disk", &scratch_root}};
    if (!tmpfs_root.empty()) roots.push_back({"tmpfs", &tmpfs_root});
    for (const auto& w : roots)
        for (bool durable : {false, true})
            add(std::string("BM_atomic_write/") + w.name + "/durable:" + (durable ? "1" : "0"),
                              BM_atomic_write, w.root, durable)
                ->Unit(benchmark::kMicrosecond);

    add("BM_start_critical_section", BM_start_critical_section)
        ->ArgNames({"durable", "history", "cold"})
        ->ArgsProduct({{0, 1}, {0, 1000}, {0, 1}})
        ->Unit(benchmark::kMicrosecond);

    auto sized = [](benchmark::internal::Benchmark* b) {
        for (long n : cfg.sizes) b->Arg(n);
        return b->ArgName("pending")->Unit(benchmark::kMicrosecond);
    };
    sized(add("BM_process_queue_pass_no_slot", BM_process_queue_pass_no_slot));
    sized(add("BM_daemon_wake_no_slot", BM_daemon_wake_no_slot));
    sized(add("BM_process_queue_pass_no_slot_cold", BM_process_queue_pass_no_slot_cold))
        ->Unit(benchmark::kMillisecond);
    {
        auto* b = add("BM_process_queue_pass_start_one", BM_process_queue_pass_start_one);
        for (long n : cfg.sizes)
            for (long durable : {0, 1}) b->Args({n, durable});
        b->ArgNames({"pending", "durable"})->Unit(benchmark::kMicrosecond);
    }
    {
        auto* b = add("BM_process_queue_pass_memory", BM_process_queue_pass_memory);
        for (long n : cfg.sizes)
            for (long one : {0, 1}) b->Args({n, one});
        b->ArgNames({"pending", "start_one"})->Unit(benchmark::kMicrosecond);
    }

    for (const auto& w : roots)
        for (bool durable : {false, true})
            add(std::string("BM_enqueue/file_store/") + w.name + "/durable:" + (durable ? "1" : "0"),
                              BM_enqueue_file, w.root, durable)
                ->Unit(benchmark::kMicrosecond);
    add("BM_enqueue/memory_store", BM_enqueue_memory)->Unit(benchmark::kMicrosecond);
}

void remove_scratch() {
    std::error_code ec;
    if (!scratch_root.empty()) fs::remove_all(scratch_root, ec);
    if (!tmpfs_root.empty()) fs::remove_all(tmpfs_root, ec);
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    // Our own flags: what Google Benchmark left.
    int out = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const char* flag) -> const char* {
            const std::size_t n = std::strlen(flag);
            return a.compare(0, n, flag) == 0 ? argv[i] + n : nullptr;
        };
        if (const char* v = value("--dir=")) cfg.dir = v;
        else if (const char* v = value("--tmpfs_dir=")) cfg.tmpfs_dir = v;
        else if (const char* v = value("--sizes=")) cfg.sizes = parse_sizes(v);
        else argv[out++] = argv[i];
    }
    argc = out;
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 64;

    scratch_root = make_temp_dir(cfg.dir);
    if (!cfg.tmpfs_dir.empty() && ::access(cfg.tmpfs_dir.c_str(), W_OK) == 0) tmpfs_root = make_temp_dir(cfg.tmpfs_dir);
    std::atexit(remove_scratch);
    benchmark::AddCustomContext("kugetsu.disk_dir", scratch_root + " (" + fs_type(scratch_root) + ")");
    if (!tmpfs_root.empty()) benchmark::AddCustomContext("kugetsu.tmpfs_dir", tmpfs_root + " (" + fs_type(tmpfs_root) + ")");

    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
