// Vocabulary and JSON: ids, validation, round trips, strict rejection at the boundary.
#include <catch2/catch.hpp>

#include <kugetsu/json.hpp>
#include <kugetsu/types.hpp>
#include <kugetsu/version.hpp>

using namespace kugetsu;
using nlohmann::json;

namespace {
queue_item sample_item() {
    queue_item it;
    it.id = "task-1.a_b";
    it.argv = {"claude", "--print", "fix the bug", "ünï"};
    it.timeout = std::chrono::seconds(90);
    it.attempts = 2;
    it.max_attempts = 3;
    it.state = task_state::running;
    it.repo = "/srv/repo";
    it.process = {4242, 987654321, "6f1c-boot"};
    it.owner = {};
    it.enqueued_at = *parse_rfc3339("2026-11-27T18:58:21.123456Z");
    it.updated_at = *parse_rfc3339("2026-11-27T18:59:00Z");
    it.started_at = *parse_rfc3339("2026-11-27T18:58:30Z");
    it.term_sent_at = *parse_rfc3339("2026-11-27T19:00:00Z");
    it.stop_reason = stop_reason::timeout;
    it.exit_code = 143;
    it.last_error = "exec: No such file";
    return it;
}

/// `it` written as JSON text and read back (which must work).
queue_item round_trip(const queue_item& it) {
    std::error_code ec;
    std::string why;
    auto back = parse_item(json(it).dump(), ec, why);
    INFO(why);
    REQUIRE(back);
    CHECK_FALSE(ec);
    return *back;
}

/// parse_item refuses `j` with `expected`, and its reason names `field`.
void check_refused(const json& j, errc expected, std::string_view field) {
    std::error_code ec;
    std::string why;
    CHECK_FALSE(parse_item(j, ec, why));
    CHECK(ec == expected);
    INFO(why);
    CHECK(why.find(field) != std::string::npos);
}
} // namespace

TEST_CASE("task ids allow letters, digits, dot, underscore and dash, 1 to 128 characters") {
    CHECK(valid_task_id("a"));
    CHECK(valid_task_id("Task_1.2-x"));
    CHECK(valid_task_id(std::string(128, 'x')));
    CHECK_FALSE(valid_task_id(""));
    CHECK_FALSE(valid_task_id(std::string(129, 'x')));
    CHECK_FALSE(valid_task_id(std::string(4u << 20, 'x')));   // megabytes long
    CHECK_FALSE(valid_task_id("\x1b[31mred"));
    CHECK_FALSE(valid_task_id(".hidden"));
    CHECK_FALSE(valid_task_id(".."));
    CHECK_FALSE(valid_task_id("a/b"));
    CHECK_FALSE(valid_task_id("../etc/passwd"));
    CHECK_FALSE(valid_task_id(std::string("a\0b", 3)));
    CHECK_FALSE(valid_task_id("tab\there"));
    CHECK_FALSE(valid_task_id("new\nline"));
    CHECK_FALSE(valid_task_id("space here"));
    CHECK_FALSE(valid_task_id("ünicode"));
    // A new task may not start with '-' (a command line would take it for an option); an
    // older store's task that does is still read.
    CHECK(valid_task_id("-x"));
    CHECK_FALSE(valid_new_task_id("-x"));
    CHECK_FALSE(valid_new_task_id("--"));
    CHECK(valid_new_task_id("x-"));
    CHECK(validate(task_spec{"-x", {"true"}}) == errc::invalid_task_id);
}

TEST_CASE("a task spec is refused with the error that names what is wrong") {
    task_spec s{"ok", {"/bin/true"}};
    CHECK_FALSE(validate(s));
    auto with = [&](auto f) { task_spec t = s; f(t); return validate(t); };
    CHECK(with([](task_spec& t) { t.id = "bad/id"; }) == errc::invalid_task_id);
    CHECK(with([](task_spec& t) { t.id = "pm-agent"; }) == errc::reserved_task_id);
    CHECK_FALSE(with([](task_spec& t) { t.id = "pm-agent"; t.role = role::pm; }));
    CHECK(with([](task_spec& t) { t.argv.clear(); }) == errc::invalid_argv);
    CHECK(with([](task_spec& t) { t.argv = {""}; }) == errc::invalid_argv);
    CHECK(with([](task_spec& t) { t.argv = {"x", std::string("a\0b", 3)}; }) == errc::invalid_argv);
    CHECK(with([](task_spec& t) { t.argv = {"x", "\xff\xfe"}; }) == errc::invalid_argv);
    CHECK(with([](task_spec& t) { t.argv = {"x", "\xc0\xaf"}; }) == errc::invalid_argv);   // overlong '/'
    CHECK(with([](task_spec& t) { t.timeout = duration{0}; }) == errc::invalid_limit);
    CHECK(with([](task_spec& t) { t.timeout = duration{-5}; }) == errc::invalid_limit);
    CHECK(with([](task_spec& t) { t.timeout = std::chrono::hours(24 * 366 * 2); }) == errc::invalid_limit);
    CHECK(with([](task_spec& t) { t.max_attempts = 0; }) == errc::invalid_limit);
    CHECK(with([](task_spec& t) { t.max_attempts = -1; }) == errc::invalid_limit);
    CHECK(with([](task_spec& t) { t.max_attempts = 1000; }) == errc::invalid_limit);
    CHECK(validate_cap(0) == errc::invalid_limit);
    CHECK(validate_cap(-1) == errc::invalid_limit);
    CHECK(validate_cap(1 << 20) == errc::invalid_limit);
    CHECK_FALSE(validate_cap(3));
}

TEST_CASE("valid_utf8 accepts well-formed text and refuses malformed bytes") {
    CHECK(valid_utf8("plain"));
    CHECK(valid_utf8("\xc3\xbc \xe2\x82\xac \xf0\x9f\x98\x80"));
    CHECK_FALSE(valid_utf8("\x80"));
    CHECK_FALSE(valid_utf8("\xc3"));                 // truncated
    CHECK_FALSE(valid_utf8("\xe2\x82"));             // truncated
    CHECK_FALSE(valid_utf8("\xed\xa0\x80"));         // surrogate
    CHECK_FALSE(valid_utf8("\xf4\x90\x80\x80"));     // above U+10FFFF
    CHECK_FALSE(valid_utf8("\xe0\x80\xaf"));         // overlong
}

TEST_CASE("RFC 3339 timestamps round-trip in UTC with microseconds") {
    const auto t = *parse_rfc3339("2026-11-27T18:58:21.123456Z");
    CHECK(format_rfc3339(t) == "2026-11-27T18:58:21.123456Z");
    CHECK(parse_rfc3339("2026-11-27T18:58:21Z") == parse_rfc3339("2026-11-27T18:58:21.000000Z"));
    CHECK(parse_rfc3339("2026-11-27T18:58:21+00:00") == parse_rfc3339("2026-11-27T18:58:21Z"));
    CHECK(*parse_rfc3339("1970-01-01T00:00:00Z") == timestamp{});
    CHECK_FALSE(parse_rfc3339("2026-11-27 18:58:21Z"));
    CHECK_FALSE(parse_rfc3339("2026-11-27T18:58:21+01:00"));
    CHECK_FALSE(parse_rfc3339("2026-02-30T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339("2026-13-01T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339("2026-11-27T18:58:21.Z"));
    CHECK_FALSE(parse_rfc3339(""));
    CHECK_FALSE(parse_rfc3339("2026-11-27T18:58:21Zjunk"));
}

TEST_CASE("a queue item survives a JSON round trip unchanged") {
    const queue_item it = sample_item();
    const json j = it;
    const auto back = std::optional<queue_item>(round_trip(it));
    CHECK(back->id == it.id);
    CHECK(back->argv == it.argv);
    CHECK(back->timeout == it.timeout);
    CHECK(back->attempts == 2);
    CHECK(back->state == task_state::running);
    CHECK(back->process == it.process);
    CHECK_FALSE(back->owner);
    CHECK(back->enqueued_at == it.enqueued_at);
    CHECK(back->started_at == it.started_at);
    CHECK_FALSE(back->finished_at);
    CHECK(back->term_sent_at == it.term_sent_at);
    CHECK(back->stop_reason == stop_reason::timeout);
    CHECK(back->exit_code == 143);
    CHECK(back->last_error == it.last_error);
    CHECK(j["pid"] == 4242);
    CHECK(j["state"] == "running");
    CHECK(j.get<queue_item>().id == it.id);
}

TEST_CASE("a queue item with a missing, extra or wrong-typed field is refused, naming the field") {
    const json good = sample_item();
    auto refuse = [&](auto mutate, errc expected, std::string_view field) {
        json j = good;
        mutate(j);
        check_refused(j, expected, field);
    };
    refuse([](json& j) { j.erase("state"); }, errc::invalid_record, "state");
    refuse([](json& j) { j["surprise"] = 1; }, errc::invalid_record, "surprise");
    refuse([](json& j) { j["attempts"] = "2"; }, errc::invalid_record, "attempts");
    refuse([](json& j) { j["attempts"] = 7; }, errc::invalid_record, "attempts");
    refuse([](json& j) { j["attempts"] = -1; }, errc::invalid_record, "attempts");
    refuse([](json& j) { j["max_attempts"] = 1e20; }, errc::invalid_record, "max_attempts");
    refuse([](json& j) { j["state"] = "exploded"; }, errc::invalid_record, "state");
    refuse([](json& j) { j["id"] = "../../etc/passwd"; }, errc::invalid_task_id, "id");
    refuse([](json& j) { j["argv"] = json::array(); }, errc::invalid_argv, "argv");
    refuse([](json& j) { j["argv"] = {1, 2}; }, errc::invalid_record, "argv");
    refuse([](json& j) { j["version"] = 2; }, errc::unsupported_version, "version");
    refuse([](json& j) { j["kind"] = "session"; }, errc::invalid_record, "kind");
    refuse([](json& j) { j["enqueued_at"] = "yesterday"; }, errc::invalid_record, "enqueued_at");
    refuse([](json& j) { j["pid"] = 1; }, errc::invalid_record, "pid");
    refuse([](json& j) { j["process"]["extra"] = true; }, errc::invalid_record, "process");
    refuse([](json& j) { j["process"] = nullptr; j["pid"] = nullptr; }, errc::invalid_record, "process");
    refuse([](json& j) { j["stop_reason"] = "bored"; }, errc::invalid_record, "stop_reason");
}

TEST_CASE("text that is not JSON, or not an object, is refused without throwing") {
    for (std::string_view text : {"", "{", "null", "[]", "\"x\"", "{\"version\":1", "\xff\xfe"}) {
        std::error_code ec;
        std::string why;
        CHECK_FALSE(parse_item(text, ec, why));
        CHECK(ec == errc::invalid_record);
        CHECK_FALSE(parse_session(text, ec, why));
        CHECK_FALSE(parse_event(text, ec, why));
    }
    CHECK_THROWS_AS(json::object().get<queue_item>(), kugetsu::error);
}

TEST_CASE("a session round-trips and must be keyed by its task id, or pm-agent for the PM") {
    session s{"t1", role::dev, "t1", {77, 5, "b"}, "/w/t1", *parse_rfc3339("2026-01-01T00:00:00Z")};
    std::error_code ec;
    std::string why;
    auto back = parse_session(json(s).dump(), ec, why);
    REQUIRE(back);
    CHECK(back->process == s.process);
    CHECK(back->workspace == "/w/t1");
    json j = s;
    j["id"] = "other";
    CHECK_FALSE(parse_session(j, ec, why));
    session pm{"pm-agent", role::pm, "pm-1", {78, 5, "b"}, "", {}};
    CHECK(parse_session(json(pm), ec, why));
    json bad = pm;
    bad["id"] = "pm-1";
    CHECK_FALSE(parse_session(bad, ec, why));
}

TEST_CASE("an event has type, task_id and an RFC 3339 timestamp, plus the fields that are known") {
    event e{.type = event_type::task_error, .task_id = "t9", .time = *parse_rfc3339("2026-11-27T00:00:00Z"), .attempt = 3,
            .pid = 1234, .exit_code = 2, .reason = event_reason::exit_code};
    const json j = e;
    CHECK(j["type"] == "task_error");
    CHECK(j["task_id"] == "t9");
    CHECK(j["timestamp"] == "2026-11-27T00:00:00.000000Z");
    CHECK(j["attempt"] == 3);
    CHECK(j["pid"] == 1234);
    CHECK(j["exit_code"] == 2);
    CHECK(j["reason"] == "exit_code");
    CHECK_FALSE(j.contains("seq"));   // not (yet) in a store: no number
    event q;
    q.type = event_type::task_queued;
    q.task_id = "t9";
    const json jq = q;
    CHECK_FALSE(jq.contains("pid"));
    CHECK_FALSE(jq.contains("reason"));
    std::error_code ec;
    std::string why;
    auto back = parse_event(j.dump(), ec, why);
    REQUIRE(back);
    CHECK(back->exit_code == 2);
    CHECK(back->reason == event_reason::exit_code);
    json bad = j;
    bad["type"] = "task_exploded";
    CHECK_FALSE(parse_event(bad, ec, why));
    // A reason outside the vocabulary (or an empty one: none is written as no field) is refused,
    // and the error names the field.
    for (const char* r : {"bored", ""}) {
        bad = j;
        bad["reason"] = r;
        CHECK_FALSE(parse_event(bad, ec, why));
        CHECK(ec == errc::invalid_record);
        CHECK(why.find("reason") != std::string::npos);
    }
    // Every reason's name reads back as itself.
    for (auto r : all_event_reasons) {
        if (r == event_reason::none) continue;
        bad = j;
        bad["reason"] = std::string(to_string(r));
        auto got = parse_event(bad, ec, why);
        REQUIRE(got);
        CHECK(got->reason == r);
    }
}

TEST_CASE("an event a store numbered carries its seq, which must be a positive integer exact in a double") {
    event e;
    e.type = event_type::task_started;
    e.task_id = "t9";
    e.time = *parse_rfc3339("2026-11-27T00:00:00Z");
    e.pid = 7;
    e.seq = 41;
    const json j = e;
    CHECK(j["seq"] == 41);
    std::error_code ec;
    std::string why;
    auto back = parse_event(j.dump(), ec, why);
    REQUIRE(back);
    CHECK(back->seq == 41);
    for (const json& bad : {json(0), json(-1), json(1.5), json("41"), json(max_event_seq + 1)}) {
        INFO(bad.dump());
        json k = j;
        k["seq"] = bad;
        CHECK_FALSE(parse_event(k, ec, why));
        CHECK(why.find("seq") != std::string::npos);
    }
    json top = j;
    top["seq"] = max_event_seq;
    CHECK(parse_event(top, ec, why)->seq == max_event_seq);
}

TEST_CASE("error codes have a category, a message and stable values") {
    const std::error_code ec = errc::invalid_task_id;
    CHECK(std::string(ec.category().name()) == "kugetsu");
    CHECK(ec.value() == 101);
    CHECK(ec.message().find("task id") != std::string::npos);
    CHECK(std::error_code(errc::store_corrupt).value() == 304);
    CHECK(std::error_code(errc::store_busy).value() == 308);
    CHECK(std::error_code(errc::limits_mismatch).value() == 309);
    CHECK(std::error_code(errc::limits_mismatch).message().find("limits") != std::string::npos);
}

TEST_CASE("a restarted item's runs survive a JSON round trip; an item never restarted has no such fields") {
    queue_item it = sample_item();
    {
        const json j = it;
        CHECK_FALSE(j.contains("runs"));
        CHECK_FALSE(j.contains("restarts"));
    }
    past_run r1;
    r1.attempts = 3;
    r1.state = task_state::error;
    r1.process = {77, 5, "b"};
    r1.enqueued_at = *parse_rfc3339("2026-11-27T10:00:00Z");
    r1.started_at = *parse_rfc3339("2026-11-27T10:00:01Z");
    r1.finished_at = *parse_rfc3339("2026-11-27T10:00:02Z");
    r1.exit_code = 2;
    r1.last_error = "exit 2";
    past_run r2;
    r2.state = task_state::cancelled;
    r2.enqueued_at = *parse_rfc3339("2026-11-27T11:00:00Z");
    it.runs = {r1, r2};
    it.restarts = 5;   // the earliest runs dropped
    const json j = it;
    CHECK(round_trip(it) == it);

    auto refuse = [&](auto mutate, std::string_view field) {
        json k = j;
        mutate(k);
        check_refused(k, errc::invalid_record, field);
    };
    refuse([](json& k) { k["runs"][0]["state"] = "running"; }, "runs\"[0]: field \"state\"");
    refuse([](json& k) { k["runs"][1]["surprise"] = 1; }, "surprise");
    refuse([](json& k) { k["runs"][1]["exit_code"] = 300; }, "exit_code");
    refuse([](json& k) { k["runs"] = json::object(); }, "runs");
    refuse([](json& k) { k["restarts"] = 1; }, "runs");   // more runs than restarts
    refuse([](json& k) { k["restarts"] = 0; }, "restarts");
    refuse([](json& k) {
        k["runs"] = json::array();
        for (std::size_t i = 0; i <= max_kept_runs; ++i) k["runs"].push_back(json::object());
        k["restarts"] = 1000;
    }, "runs");   // more than max_kept_runs
}

TEST_CASE("the version string is the version numbers") {
    CHECK(std::string(kugetsu::version) == std::to_string(KUGETSU_VERSION_MAJOR) + "." +
                                               std::to_string(KUGETSU_VERSION_MINOR) + "." +
                                               std::to_string(KUGETSU_VERSION_PATCH));
}
