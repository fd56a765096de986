// fuzz/replay_main.cpp: main() for the replay build of a fuzz target (any compiler, no
// libFuzzer): runs every file of the given corpus directories (and files) through
// LLVMFuzzerTestOneInput, in name order, once each. A failed check aborts the program; the
// last "replay:" line names the input. Exits 1 if it found no input at all, so that a wrong
// path cannot pass.
//
//   kugetsu-replay-<target> DIR|FILE...
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool run_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
        return false;
    }
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", p.c_str(), bytes.size());
    std::fflush(stderr);
    // A copy in its own allocation, as libFuzzer passes it: a read past the end is caught by ASan.
    std::vector<std::uint8_t> data(bytes.begin(), bytes.end());
    LLVMFuzzerTestOneInput(data.empty() ? nullptr : data.data(), data.size());
    return true;
}

} // namespace

int main(int argc, char** argv) {
    std::size_t runs = 0;
    bool ok = true;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path arg = argv[i];
        std::error_code ec;
        if (std::filesystem::is_directory(arg, ec)) {
            std::vector<std::filesystem::path> files;
            for (const auto& e : std::filesystem::directory_iterator(arg, ec))
                if (e.is_regular_file()) files.push_back(e.path());
            if (ec) {
                std::fprintf(stderr, "replay: cannot list %s: %s\n", arg.c_str(), ec.message().c_str());
                ok = false;
            }
            std::sort(files.begin(), files.end());
            for (const auto& f : files) {
                ok = run_file(f) && ok;
                ++runs;
            }
        } else {
            ok = run_file(arg) && ok;
            ++runs;
        }
    }
    std::printf("replay: %zu inputs\n", runs);
    if (runs == 0) std::fprintf(stderr, "replay: no input given (usage: %s DIR|FILE...)\n", argv[0]);
    return ok && runs > 0 ? 0 : 1;
}
