// fuzz/session.cpp: a session record (a file under HOME/sessions), as parse_session reads it.
//
// Checks: parse_session never throws or crashes; a refusal sets ec and says why; an accepted
// session names a valid task and a live-able process, and is keyed as the dispatcher keys it
// (a dev session by its task id, the PM's as "pm-agent"); it re-serialises, and the result
// parses back to an equal session that serialises to the same text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>

#include <kugetsu/json.hpp>

#include "check.hpp"

namespace {

using namespace kugetsu;

auto fields(const session& s) { return std::tie(s.id, s.role, s.task_id, s.process, s.workspace, s.started_at); }

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    std::error_code ec;
    std::string why;
    const auto s = parse_session(text, ec, why);
    if (!s) {
        KUGETSU_FUZZ_CHECK(ec, "refused without an error code");
        KUGETSU_FUZZ_CHECK(!why.empty(), "refused without saying why: " + ec.message());
        KUGETSU_FUZZ_CHECK(valid_utf8(why), "why is not UTF-8: " + why);
        return 0;
    }
    KUGETSU_FUZZ_CHECK(!ec, "accepted with an error: " + ec.message());
    KUGETSU_FUZZ_CHECK(valid_task_id(s->task_id), s->task_id);
    KUGETSU_FUZZ_CHECK(s->process && s->process.pid > 0, "a session without a process");
    if (s->role == role::pm) {
        KUGETSU_FUZZ_CHECK(s->id == pm_session_id, s->id);
    } else {
        KUGETSU_FUZZ_CHECK(s->id == s->task_id, s->id);
        // A dev task may not be called pm-agent (validate(): reserved_task_id), so no dev
        // session may take the PM's key.
        KUGETSU_FUZZ_CHECK(s->id != pm_session_id, "a dev session under the PM's key");
    }

    const std::string once = nlohmann::json(*s).dump();
    const auto back = parse_session(once, ec, why);
    KUGETSU_FUZZ_CHECK(back, "its own serialisation is refused (" + why + "): " + once);
    KUGETSU_FUZZ_CHECK(fields(*back) == fields(*s), "round trip changed the session: " + once);
    KUGETSU_FUZZ_CHECK(nlohmann::json(*back).dump() == once, "serialisation is not stable: " + once);
    return 0;
}
