// fuzz/event.cpp: one line of HOME/events.jsonl, as parse_event reads it.
//
// Checks: parse_event never throws or crashes; a refusal sets ec and says why; an accepted
// event names a valid task and keeps its numbers in range (a sequence number, when there is
// one, 1 to 2^53-1: exact in a double); it re-serialises, and the result parses back to an
// equal event (its sequence number too) that serialises to the same text (a sequence number 0
// is the same as none: it is not written). A reason outside the vocabulary is refused.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>

#include <kugetsu/json.hpp>

#include "check.hpp"

namespace {

using namespace kugetsu;

auto fields(const event& e) {
    return std::tie(e.type, e.task_id, e.time, e.attempt, e.pid, e.exit_code, e.reason, e.seq);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    std::error_code ec;
    std::string why;
    const auto e = parse_event(text, ec, why);
    if (!e) {
        KUGETSU_FUZZ_CHECK(ec, "refused without an error code");
        KUGETSU_FUZZ_CHECK(!why.empty(), "refused without saying why: " + ec.message());
        KUGETSU_FUZZ_CHECK(valid_utf8(why), "why is not UTF-8: " + why);
        return 0;
    }
    KUGETSU_FUZZ_CHECK(!ec, "accepted with an error: " + ec.message());
    KUGETSU_FUZZ_CHECK(valid_task_id(e->task_id), e->task_id);
    KUGETSU_FUZZ_CHECK(!e->attempt || (*e->attempt >= 0 && *e->attempt <= max_attempts_limit), e->task_id);
    KUGETSU_FUZZ_CHECK(!e->pid || *e->pid > 0, e->task_id);
    KUGETSU_FUZZ_CHECK(!e->exit_code || (*e->exit_code >= -1 && *e->exit_code <= 255), e->task_id);
    KUGETSU_FUZZ_CHECK(e->seq <= max_event_seq, e->task_id + ": seq " + std::to_string(e->seq));

    // As jsonl_notifier writes it.
    const std::string once = nlohmann::json(*e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    const auto back = parse_event(once, ec, why);
    KUGETSU_FUZZ_CHECK(back, "its own serialisation is refused (" + why + "): " + once);
    KUGETSU_FUZZ_CHECK(fields(*back) == fields(*e), "round trip changed the event: " + once);
    KUGETSU_FUZZ_CHECK(nlohmann::json(*back).dump() == once, "serialisation is not stable: " + once);
    return 0;
}
