// fuzz/check.hpp: what every fuzz target shares: a check that holds in every build type
// (assert() vanishes under NDEBUG) and stops the run with a message, which libFuzzer reports
// as a crash and the replay programs as a failed test.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

/// KUGETSU_FUZZ_CHECK(cond, what): `what` (anything a std::string is made from) says what the
/// input was, so that a failure can be understood without a debugger.
#define KUGETSU_FUZZ_CHECK(cond, what)                                                           \
    do {                                                                                          \
        if (!(cond)) ::kugetsu_fuzz::check_failed(#cond, __FILE__, __LINE__, std::string(what));  \
    } while (0)

namespace kugetsu_fuzz {

[[noreturn]] inline void check_failed(const char* cond, const char* file, int line, const std::string& what) {
    std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", file, line, cond, what.c_str());
    std::fflush(stderr);
    std::abort();
}

} // namespace kugetsu_fuzz
