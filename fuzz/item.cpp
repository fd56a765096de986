// fuzz/item.cpp: a queue item record (a file under HOME/queue), as parse_item reads it.
//
// Checks: parse_item never throws or crashes; a refusal sets ec and says why; an accepted item
// is one the dispatcher could have written (its spec passes validate(), its counters and
// states agree); it re-serialises, and the result parses back to an equal item that
// serialises to the same text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>

#include <kugetsu/json.hpp>

#include "check.hpp"

namespace {

using namespace kugetsu;

auto fields(const queue_item& i) {
    return std::tie(i.id, i.argv, i.role, i.timeout, i.attempts, i.max_attempts, i.state, i.repo, i.workdir,
                    i.process, i.owner, i.enqueued_at, i.updated_at, i.started_at, i.finished_at,
                    i.term_sent_at, i.kill_sent, i.stop_reason, i.exit_code, i.last_error);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    std::error_code ec;
    std::string why;
    const auto it = parse_item(text, ec, why);
    if (!it) {
        KUGETSU_FUZZ_CHECK(ec, "refused without an error code");
        KUGETSU_FUZZ_CHECK(!why.empty(), "refused without saying why: " + ec.message());
        KUGETSU_FUZZ_CHECK(valid_utf8(why), "why is not UTF-8: " + why);
        return 0;
    }
    KUGETSU_FUZZ_CHECK(!ec, "accepted with an error: " + ec.message());

    // What the dispatcher itself would accept, but for the rule that only new tasks follow:
    // a stored id may start with '-' (older stores made such tasks; valid_new_task_id).
    task_spec spec{it->id, it->argv, it->role, it->timeout, it->max_attempts, it->repo, it->workdir};
    if (!spec.id.empty() && spec.id.front() == '-') spec.id.front() = 'x';
    const auto vec = validate(spec);
    KUGETSU_FUZZ_CHECK(!vec, "accepted an item whose spec validate() refuses (" + vec.message() + "): " + it->id);
    KUGETSU_FUZZ_CHECK(valid_task_id(it->id), it->id);
    KUGETSU_FUZZ_CHECK(!validate_argv(it->argv), it->id);
    KUGETSU_FUZZ_CHECK(!validate_timeout(it->timeout), it->id);
    KUGETSU_FUZZ_CHECK(!validate_attempts(it->max_attempts), it->id);
    KUGETSU_FUZZ_CHECK(it->attempts >= 0 && it->attempts <= it->max_attempts, it->id);
    KUGETSU_FUZZ_CHECK(it->state != task_state::running || it->process, "running without a process");
    KUGETSU_FUZZ_CHECK(!it->process || it->process.pid > 0, it->id);
    KUGETSU_FUZZ_CHECK(!it->exit_code || (*it->exit_code >= -1 && *it->exit_code <= 255), it->id);
    KUGETSU_FUZZ_CHECK(parse_stop_reason(to_string(it->stop_reason)) == it->stop_reason,
                       "stop_reason " + std::to_string(static_cast<int>(it->stop_reason)));

    // Round trip: written as the stores write it, read back equal, written again the same.
    const std::string once = nlohmann::json(*it).dump();
    const auto back = parse_item(once, ec, why);
    KUGETSU_FUZZ_CHECK(back, "its own serialisation is refused (" + why + "): " + once);
    KUGETSU_FUZZ_CHECK(fields(*back) == fields(*it), "round trip changed the item: " + once);
    KUGETSU_FUZZ_CHECK(nlohmann::json(*back).dump() == once, "serialisation is not stable: " + once);
    // The pretty form file_store writes reads back the same too.
    const auto pretty = parse_item(nlohmann::json(*it).dump(2, ' ', false, nlohmann::json::error_handler_t::replace),
                                   ec, why);
    KUGETSU_FUZZ_CHECK(pretty && fields(*pretty) == fields(*it), "pretty form differs: " + once);
    return 0;
}
