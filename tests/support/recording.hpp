// Test support: a store and a spawner that forward to a model and write what is done to them,
// in order, into one shared log, so a test can check the order of commits and releases.
//
//   auto log = std::make_shared<kugetsu::test::op_log>();
//   recording_store<memory_store> st(memory_store{}, log);     // begin, commit durable, put_item a notified...
//   recording_spawner<fake_spawner> sp(fake_spawner{}, log);   // spawn a, release a, abandon a
//
// Log lines: "begin", "commit durable" / "commit visible" (one that failed: "commit failed"),
// "rollback" (only of an open unit), and one line per write: "create_item ID STATE",
// "put_item ID STATE", "put_session ID", "remove_session ID", "append_event TYPE ID",
// "put_limits CAP"; the spawner writes "spawn ID", "release ID", "abandon ID" (the task id of
// the process). Reads are not logged. `watch`, if set, is called with each line as it is
// added (to look at the state at that moment). With `fail_commits` = n, the n commits of
// units that wrote something after the next `pass_commits` such commits fail with EIO, after
// rolling the unit back (as the store concept says of a failed commit). Copies share the log.
#pragma once

#include <cerrno>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <kugetsu/concepts.hpp>

namespace kugetsu::test {

struct op_log {
    std::vector<std::string> lines;
    int pass_commits = 0;   // commits with writes that succeed before fail_commits applies
    int fail_commits = 0;
    std::map<int, std::string> task_of_pid;
    std::function<void(const std::string&)> watch;

    void add(std::string s) {
        lines.push_back(std::move(s));
        if (watch) watch(lines.back());
    }
    void clear() { lines.clear(); }
    /// The index of the first line equal to s at or after `from`, or -1.
    int find(std::string_view s, std::size_t from = 0) const {
        for (std::size_t i = from; i < lines.size(); ++i)
            if (lines[i] == s) return static_cast<int>(i);
        return -1;
    }
    /// The indexes of the lines that start with `prefix`.
    std::vector<int> starting(std::string_view prefix) const {
        std::vector<int> v;
        for (std::size_t i = 0; i < lines.size(); ++i)
            if (lines[i].rfind(prefix, 0) == 0) v.push_back(static_cast<int>(i));
        return v;
    }
    /// The lines that are writes (neither a unit's begin, commit or rollback, nor a spawner's).
    std::vector<std::string> writes() const {
        std::vector<std::string> v;
        for (auto& l : lines)
            if (is_write(l)) v.push_back(l);
        return v;
    }
    static bool is_write(std::string_view l) {
        for (std::string_view p : {"create_item", "put_item", "put_session", "remove_session", "append_event", "put_limits"})
            if (l.rfind(p, 0) == 0) return true;
        return false;
    }
    std::string dump() const {
        std::string s;
        for (auto& l : lines) s += l + "\n";
        return s;
    }
};

template <store Store>
class recording_store {
public:
    recording_store(Store inner, std::shared_ptr<op_log> log) : inner_(std::move(inner)), log_(std::move(log)) {}

    void begin(std::error_code& ec) {
        inner_.begin(ec);
        log_->add(ec ? "begin failed" : "begin");
        wrote_ = false;
    }
    void commit(durability d, std::error_code& ec) {
        if (inner_.in_unit() && wrote_ && log_->fail_commits > 0 && log_->pass_commits-- <= 0) {
            log_->pass_commits = 0;
            --log_->fail_commits;
            inner_.rollback();
            ec = std::error_code(EIO, std::system_category());
            log_->add("commit failed");
            return;
        }
        const bool open = inner_.in_unit();
        inner_.commit(d, ec);
        if (open) log_->add(ec ? "commit failed" : d == durability::durable ? "commit durable" : "commit visible");
    }
    void rollback() noexcept {
        if (inner_.in_unit()) log_->add("rollback");
        inner_.rollback();
    }
    bool in_unit() const noexcept { return inner_.in_unit(); }

    void create_item(const queue_item& it, std::error_code& ec) {
        inner_.create_item(it, ec);
        if (!ec) wrote("create_item " + it.id + " " + std::string(to_string(it.state)));
    }
    void put_item(const queue_item& it, std::error_code& ec) {
        inner_.put_item(it, ec);
        if (!ec) wrote("put_item " + it.id + " " + std::string(to_string(it.state)));
    }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) { return inner_.get_item(id, ec); }
    std::vector<queue_item> list_items(std::error_code& ec) { return inner_.list_items(ec); }
    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) {
        return inner_.items_in_state(st, limit, ec);
    }
    void put_session(const session& se, std::error_code& ec) {
        inner_.put_session(se, ec);
        if (!ec) wrote("put_session " + se.id);
    }
    void remove_session(std::string_view id, std::error_code& ec) {
        inner_.remove_session(id, ec);
        if (!ec) wrote("remove_session " + std::string(id));
    }
    std::vector<session> list_sessions(std::error_code& ec) { return inner_.list_sessions(ec); }
    std::uint64_t append_event(const event& e, std::error_code& ec) {
        auto seq = inner_.append_event(e, ec);
        if (!ec) wrote("append_event " + std::string(to_string(e.type)) + " " + e.task_id);
        return seq;
    }
    std::vector<event> events_after(std::uint64_t seq, std::size_t limit, std::error_code& ec) {
        return inner_.events_after(seq, limit, ec);
    }
    std::optional<limits> get_limits(std::error_code& ec) { return inner_.get_limits(ec); }
    std::vector<queue_item> runnable(std::size_t limit, const std::vector<std::string>& skip, std::error_code& ec) {
        return inner_.runnable(limit, skip, ec);
    }
    queue_schedule get_schedule(std::error_code& ec) { return inner_.get_schedule(ec); }
    void put_schedule(const queue_schedule& sc, std::error_code& ec) {
        inner_.put_schedule(sc, ec);
        if (!ec) wrote("put_schedule");
    }
    void put_limits(const limits& l, std::error_code& ec) {
        inner_.put_limits(l, ec);
        if (!ec) wrote("put_limits " + std::to_string(l.cap));
    }

    const std::vector<quarantined_record>& quarantined() const noexcept
        requires store_with_quarantine<Store>
    {
        return inner_.quarantined();
    }

    Store& inner() noexcept { return inner_; }
    op_log& log() noexcept { return *log_; }

private:
    void wrote(std::string line) {
        wrote_ = true;
        log_->add(std::move(line));
    }

    Store inner_;
    std::shared_ptr<op_log> log_;
    bool wrote_ = false;
};

template <spawner Spawner>
class recording_spawner {
public:
    recording_spawner(Spawner inner, std::shared_ptr<op_log> log) : inner_(std::move(inner)), log_(std::move(log)) {}

    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        auto p = inner_.spawn(r, ec);
        if (!ec) {
            log_->task_of_pid[p.pid] = r.task_id;
            log_->add("spawn " + r.task_id);
        }
        return p;
    }
    void release(const process_ref& p, std::error_code& ec) {
        log_->add("release " + task_of(p));
        inner_.release(p, ec);
    }
    void abandon(const process_ref& p) noexcept {
        try {
            log_->add("abandon " + task_of(p));
        } catch (...) {
        }
        inner_.abandon(p);
    }
    process_status poll(const process_ref& p, std::error_code& ec) { return inner_.poll(p, ec); }
    void signal(const process_ref& p, stop_signal s, std::error_code& ec) { inner_.signal(p, s, ec); }
    process_ref self() { return inner_.self(); }

    Spawner& inner() noexcept { return inner_; }

private:
    std::string task_of(const process_ref& p) const {
        auto i = log_->task_of_pid.find(p.pid);
        return i == log_->task_of_pid.end() ? "pid-" + std::to_string(p.pid) : i->second;
    }

    Spawner inner_;
    std::shared_ptr<op_log> log_;
};

} // namespace kugetsu::test
