// fuzz/slot.cpp: the bytes of a slot file (HOME/run/<pid>-<start>.slot), as slot_file.hpp reads
// them: detail::parse_slot_record, and detail::read_slot_record on a file holding them.
//
// Checks: it never crashes (it allocates nothing, throws nothing); only the first line counts
// (what follows the first newline never changes the result, and a line without its newline is
// no record); a record's fields are in range and agree with its kind (held and noexec: version
// 2 and nothing else; exec: version 2 and a time; exited: version 1 without a time or 2 with
// one, a code 0-255); an accepted record is written back by the writers the supervisor and
// the agent use (held_record, noexec_record, exec_record, exit_record; "kugetsu-exit 1 CODE
// T" by hand, as kugetsu 0.1 wrote it) as the same first line, but for leading zeros of its
// numbers (which the parser accepts and the writers never write), and the written line
// parses to the same record; read_slot_record, which reads the first 64 bytes of the file,
// agrees with the parser. Then the writers, given values made from the input (any code,
// any time of up to 18 digits), write records the parser reads back as they were given.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include <sys/mman.h>
#include <unistd.h>

#include <kugetsu/spawn/slot_file.hpp>

#include "check.hpp"

namespace {

using namespace kugetsu;
using detail::slot_record;

bool same(const slot_record& a, const slot_record& b) {
    return a.what == b.what && a.version == b.version && a.exit_code == b.exit_code && a.timed_out == b.timed_out &&
           a.at == b.at;
}

std::string show(std::string_view s) {
    std::string o;
    for (const char c : s.substr(0, 80)) {
        if (c >= 0x20 && c < 0x7f) o += c;
        else {
            char b[8];
            std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned char>(c));
            o += b;
        }
    }
    return o;
}

/// The line with the leading zeros of each run of digits removed (a lone 0 stays).
std::string canonical(std::string_view line) {
    std::string o;
    for (std::size_t i = 0; i < line.size();) {
        if (line[i] < '0' || line[i] > '9') {
            o += line[i++];
            continue;
        }
        std::size_t j = i;
        while (j < line.size() && line[j] >= '0' && line[j] <= '9') ++j;
        std::size_t k = i;
        while (k + 1 < j && line[k] == '0') ++k;
        o.append(line.substr(k, j - k));
        i = j;
    }
    return o;
}

/// What the writers write for a record, with its newline.
std::string written(const slot_record& r) {
    char buf[64];
    const auto us = r.at ? r.at->time_since_epoch().count() : -1;
    switch (r.what) {
    case slot_record::kind::held: return detail::held_record;
    case slot_record::kind::noexec: return detail::noexec_record;
    case slot_record::kind::exec: return std::string(buf, detail::exec_record(buf, us));
    case slot_record::kind::exited:
        if (r.version == 2) return std::string(buf, detail::exit_record(buf, r.exit_code, r.timed_out, us));
        return "kugetsu-exit 1 " + std::to_string(r.exit_code) + (r.timed_out ? " 1\n" : " 0\n");
    case slot_record::kind::none: break;
    }
    return {};
}

/// A file to give read_slot_record (a memfd: no path, no disk).
int slot_file() {
    static const int fd = ::memfd_create("kugetsu-fuzz-slot", MFD_CLOEXEC);
    return fd;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view s(reinterpret_cast<const char*>(data), size);
    const slot_record r = detail::parse_slot_record(s);
    const std::string what = show(s);

    // Fields in range, agreeing with the kind.
    switch (r.what) {
    case slot_record::kind::none:
        KUGETSU_FUZZ_CHECK(r.version == 0 && r.exit_code == -1 && !r.timed_out && !r.at, "none with fields: " + what);
        break;
    case slot_record::kind::held:
    case slot_record::kind::noexec:
        KUGETSU_FUZZ_CHECK(r.version == 2 && r.exit_code == -1 && !r.timed_out && !r.at, "held/noexec with fields: " + what);
        break;
    case slot_record::kind::exec:
        KUGETSU_FUZZ_CHECK(r.version == 2 && r.exit_code == -1 && !r.timed_out && r.at &&
                               r.at->time_since_epoch().count() >= 0 &&
                               r.at->time_since_epoch().count() <= 999'999'999'999'999'999,
                           "exec out of range: " + what);
        break;
    case slot_record::kind::exited:
        KUGETSU_FUZZ_CHECK(r.exit_code >= 0 && r.exit_code <= 255, "exit code out of range: " + what);
        KUGETSU_FUZZ_CHECK((r.version == 1 && !r.at) ||
                               (r.version == 2 && r.at && r.at->time_since_epoch().count() >= 0 &&
                                r.at->time_since_epoch().count() <= 999'999'999'999'999'999),
                           "exit record's version and time disagree: " + what);
        break;
    }

    // Only the first line counts.
    const auto nl = s.find('\n');
    if (nl == std::string_view::npos) {
        KUGETSU_FUZZ_CHECK(r.what == slot_record::kind::none, "a line without its newline was read as a record: " + what);
    } else {
        const std::string_view head = s.substr(0, nl + 1);
        KUGETSU_FUZZ_CHECK(same(detail::parse_slot_record(head), r), "the bytes after the first line changed it: " + what);
        std::string other(head);
        other += "kugetsu-exit 2 7 1 123\nkugetsu-held 2\n";
        other.append(s.substr(nl + 1, 16));
        KUGETSU_FUZZ_CHECK(same(detail::parse_slot_record(other), r), "other bytes after the first line changed it: " + what);

        // Round trip through the writers.
        if (r.what != slot_record::kind::none) {
            const std::string w = written(r);
            KUGETSU_FUZZ_CHECK(w == canonical(head), "written back as " + show(w) + ", read from " + what);
            KUGETSU_FUZZ_CHECK(same(detail::parse_slot_record(w), r), "its written form reads differently: " + show(w));
        }
    }

    // What fork_spawner's poll() sees: the first 64 bytes of the file.
    if (const int fd = slot_file(); fd >= 0 && size <= 4096) {
        if (::ftruncate(fd, 0) == 0 && (size == 0 || ::pwrite(fd, data, size, 0) == static_cast<ssize_t>(size))) {
            const slot_record f = detail::read_slot_record(fd);
            KUGETSU_FUZZ_CHECK(same(f, detail::parse_slot_record(s.substr(0, 64))),
                               "read_slot_record disagrees with the parser: " + what);
            KUGETSU_FUZZ_CHECK(f.what == slot_record::kind::none || same(f, r),
                               "read_slot_record read another record than the first line: " + what);
        }
    }

    // The writers, on values made from the input, write what the parser reads back.
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < size && i < 8; ++i) v = v << 8 | data[i];
    const auto us = static_cast<std::int64_t>(v % 1'000'000'000'000'000'000ULL);   // up to 18 digits
    const int code = size > 8 ? data[8] : 0;
    const bool timed_out = size > 9 && (data[9] & 1);
    char buf[64];
    const std::string_view exec(buf, detail::exec_record(buf, us));
    const auto e = detail::parse_slot_record(exec);
    KUGETSU_FUZZ_CHECK(e.what == slot_record::kind::exec && e.at && e.at->time_since_epoch().count() == us,
                       "exec_record(" + std::to_string(us) + ") reads back differently: " + show(exec));
    const std::string_view exit(buf, detail::exit_record(buf, code, timed_out, us));
    const auto x = detail::parse_slot_record(exit);
    KUGETSU_FUZZ_CHECK(x.what == slot_record::kind::exited && x.version == 2 && x.exit_code == code &&
                           x.timed_out == timed_out && x.at && x.at->time_since_epoch().count() == us,
                       "exit_record reads back differently: " + show(exit));
    return 0;
}
