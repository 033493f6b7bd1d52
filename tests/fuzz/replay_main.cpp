/// @file replay_main.cpp
/// @brief A main() for a fuzz target built without libFuzzer: runs LLVMFuzzerTestOneInput on every
///        file of the folders (or files) named on the command line, so the committed corpus and crash
///        regressions run under ctest in the normal ASan+UBSan test build, with any compiler.
///
/// A crash or sanitizer report fails the test as it would in the fuzzer. A missing folder is noted
/// (a target may have no regressions yet); no input at all is an error (the test would check
/// nothing).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path p(argv[i]);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && e.path().filename() != ".gitkeep") files.push_back(e.path());
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "replay: %s does not exist (no inputs from it)\n", argv[i]);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "replay: no inputs found; the corpus folder is missing or empty\n");
    return 2;
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", f.string().c_str(), bytes.size());
    // A copy in a buffer of exactly the input's size, so ASan sees reads past the end.
    std::vector<std::uint8_t> exact(bytes.begin(), bytes.end());
    LLVMFuzzerTestOneInput(exact.empty() ? nullptr : exact.data(), exact.size());
  }
  std::printf("replay: %zu inputs, no crash\n", files.size());
  return 0;
}
