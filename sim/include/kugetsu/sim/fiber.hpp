// kugetsu/sim/fiber.hpp: the simulator's fiber layer: each actor runs on a stack of its own,
// and control passes between the scheduler and one actor at a time, on one OS thread.
//
//   fiber_switch sw;                     // the scheduler's side, one per world
//   fiber f;                             // an actor's stack (empty until it first runs)
//   sw.resume(f, [&] { body(); });       // runs body until it calls sw.suspend(f), or ends
//   ... inside body: sw.suspend(f);      // back to the scheduler; returns at the next resume
//
// The stack is made at the first resume (so no fiber is ever destroyed before it ran: Boost
// unwinds such a fiber with an exception on its own stack), taken from a per-thread
// stack_pool, and given back when the body returns. A body must return (the world unwinds
// every started actor with an exception before it is destroyed).
//
// Actors switch stacks with Boost.Context's fiber: in user space, with no syscall (glibc's
// swapcontext makes a sigprocmask syscall on every switch). AddressSanitizer must be told
// when the stack changes under it, or it reports false errors when an exception unwinds a
// fiber (google/sanitizers#189): Boost 1.74 does that only in its ucontext back end, which
// Debian's libboost_context is not built with, so this layer announces each switch itself.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define KUGETSU_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KUGETSU_SIM_ASAN 1
#endif
#endif
#if defined(KUGETSU_SIM_ASAN)
#include <sanitizer/common_interface_defs.h>
#define KUGETSU_SIM_FIBER_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define KUGETSU_SIM_FIBER_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define KUGETSU_SIM_FIBER_START(save, bottom, size) ((void)0)
#define KUGETSU_SIM_FIBER_FINISH(save, bottom, size) ((void)0)
#endif
#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>

namespace kugetsu::sim {

/// Fixed-size actor stacks, kept for reuse on each thread: a run creates several actors and
/// an exploration many thousand runs; allocating each stack anew (and faulting its pages in)
/// would cost more than the steps. A StackAllocator for boost::context::fiber.
class stack_pool {
public:
    static constexpr std::size_t size = 256 * 1024;
    stack_pool() = default;
    /// Stores each stack's lowest address in *base (AddressSanitizer needs it).
    explicit stack_pool(const char** base) noexcept : base_(base) {}
    boost::context::stack_context allocate() {
        auto& free = cache().stacks;
        char* base;
        if (free.empty()) {
            base = static_cast<char*>(::operator new(size, std::align_val_t{64}));
        } else {
            base = free.back();
            free.pop_back();
        }
        boost::context::stack_context sc;
        sc.size = size;
        sc.sp = base + size;   // stacks grow down
        if (base_) *base_ = base;
        return sc;
    }
    void deallocate(boost::context::stack_context& sc) noexcept {
        char* base = static_cast<char*>(sc.sp) - size;
        auto& free = cache().stacks;
        if (free.size() < free.capacity()) {   // reserved: push_back cannot throw
            free.push_back(base);
            return;
        }
        ::operator delete(base, std::align_val_t{64});
    }

private:
    struct cache_t {
        std::vector<char*> stacks;
        cache_t() { stacks.reserve(64); }
        ~cache_t() {
            for (char* p : stacks) ::operator delete(p, std::align_val_t{64});
        }
    };
    static cache_t& cache() {
        thread_local cache_t c;
        return c;
    }
    const char** base_ = nullptr;
};

/// An actor's stack and where it resumes. Empty until its first resume; done once its body
/// has returned.
class fiber {
public:
    bool started() const noexcept { return started_; }

private:
    friend class fiber_switch;
    boost::context::fiber ctx_;          ///< where it resumes (empty while it runs, and once done)
    const char* stack_base_ = nullptr;   ///< its stack's lowest address (for AddressSanitizer)
#if defined(KUGETSU_SIM_ASAN)
    void* fake_stack_ = nullptr;         ///< AddressSanitizer's bookkeeping while switched away
#endif
    bool started_ = false;
};

/// The scheduler's side of the switch: where the running fiber goes back to. One per
/// scheduler; not copyable (a running fiber's lambda points at it).
class fiber_switch {
public:
    fiber_switch() = default;
    fiber_switch(const fiber_switch&) = delete;
    fiber_switch& operator=(const fiber_switch&) = delete;

    /// From the scheduler: runs f until it suspends or its body returns. At the first resume,
    /// `body` is what it runs (it must not throw: the world catches everything in it); later
    /// ones ignore it.
    template <class Body>
    void resume(fiber& f, Body&& body) {
        if (!f.started_) {
            f.ctx_ = boost::context::fiber(std::allocator_arg, stack_pool{&f.stack_base_},
                                           [this, b = std::forward<Body>(body)](boost::context::fiber&& scheduler) mutable {
                                               KUGETSU_SIM_FIBER_FINISH(nullptr, &main_bottom_, &main_size_);
                                               scheduler_ = std::move(scheduler);
                                               b();
                                               // This stack is done with: no fake stack to keep.
                                               KUGETSU_SIM_FIBER_START(nullptr, main_bottom_, main_size_);
                                               return std::move(scheduler_);
                                           });
            f.started_ = true;
        }
        KUGETSU_SIM_FIBER_START(&main_fake_stack_, f.stack_base_, stack_pool::size);
        f.ctx_ = std::move(f.ctx_).resume();   // back when it suspends, or is done
        KUGETSU_SIM_FIBER_FINISH(main_fake_stack_, nullptr, nullptr);
    }

    /// From f's own stack: back to the scheduler; returns when the scheduler resumes f.
    void suspend(fiber& f) {
        KUGETSU_SIM_FIBER_START(&f.fake_stack_, main_bottom_, main_size_);
        scheduler_ = std::move(scheduler_).resume();
        KUGETSU_SIM_FIBER_FINISH(f.fake_stack_, &main_bottom_, &main_size_);
        (void)f;
    }

private:
    boost::context::fiber scheduler_;   ///< while a fiber runs: where resume() returns
#if defined(KUGETSU_SIM_ASAN)
    void* main_fake_stack_ = nullptr;   ///< AddressSanitizer's bookkeeping of the scheduler's stack
    const void* main_bottom_ = nullptr;
    std::size_t main_size_ = 0;
#endif
};

} // namespace kugetsu::sim
