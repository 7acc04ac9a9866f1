// A minimal harness for the emulator's C++ test programs (driven by test/simt.test.ts).
// SIMT_TEST(name) { ... } registers a case; `prog` runs every case, `prog a b` the named ones,
// `prog --list` prints the names. A case passes when it returns; CHECK throws on failure. Output, one
// line per case: "ok <name>" or "FAIL <name>: <why>"; "note <key>=<value>" lines carry observations the
// driver aggregates across runs (e.g. which thread order exposed a race). Exit code 1 if any failed.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../simt.h"

namespace simt_test {

struct Case {
  const char* name;
  void (*fn)();
};

inline std::vector<Case>& cases() {
  static std::vector<Case> v;
  return v;
}

struct Register {
  Register(const char* name, void (*fn)()) { cases().push_back(Case{name, fn}); }
};

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const char* file, int line, const std::string& msg) {
  throw Failure(std::string(file) + ":" + std::to_string(line) + ": " + msg);
}

inline void note(const std::string& key, const std::string& value) {
  std::printf("note %s=%s\n", key.c_str(), value.c_str());
  std::fflush(stdout);
}

// Runs f, which must throw simt::Error with every string needles() returns in its message. needles
// is called after f, so it may use what f's kernels recorded (e.g. the line of a call).
template <typename F, typename N>
std::string expect_error(F&& f, N&& needles, const char* file, int line) {
  try {
    f();
  } catch (const simt::Error& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles())
      if (msg.find(n) == std::string::npos) fail(file, line, "error message lacks \"" + n + "\": " + msg);
    std::printf("  (expected) %s\n", msg.c_str());
    return msg;
  }
  fail(file, line, "expected the launch to fail with a simt::Error");
}

// "file.cc:123": what the emulator prints for a call site in this file.
inline std::string at(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

inline bool is_poison(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b == 0xffffffffu;
}

inline int main(int argc, char** argv) {
  std::vector<std::string> want(argv + 1, argv + argc);
  if (want.size() == 1 && want[0] == "--list") {
    for (const Case& c : cases()) std::printf("%s\n", c.name);
    return 0;
  }
  int failed = 0, ran = 0;
  for (const std::string& w : want) {
    bool found = false;
    for (const Case& c : cases()) found = found || w == c.name;
    if (!found) {
      std::printf("FAIL %s: no such case\n", w.c_str());
      ++failed;
    }
  }
  for (const Case& c : cases()) {
    if (!want.empty()) {
      bool selected = false;
      for (const std::string& w : want) selected = selected || w == c.name;
      if (!selected) continue;
    }
    ++ran;
    try {
      c.fn();
      std::printf("ok %s\n", c.name);
    } catch (const std::exception& e) {
      std::printf("FAIL %s: %s\n", c.name, e.what());
      ++failed;
    }
    std::fflush(stdout);
  }
  std::printf("%d case(s), %d failed\n", ran, failed);
  return failed ? 1 : 0;
}

}  // namespace simt_test

#define SIMT_TEST(name)                                                \
  static void name();                                                  \
  static const ::simt_test::Register name##_registration(#name, name); \
  static void name()

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) ::simt_test::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_MSG(cond, msg)                                   \
  do {                                                         \
    if (!(cond)) ::simt_test::fail(__FILE__, __LINE__, (msg)); \
  } while (0)

#define EXPECT_ERROR(stmt, ...)                                                                   \
  ::simt_test::expect_error([&] { stmt; }, [&] { return std::vector<std::string>{__VA_ARGS__}; }, \
                            __FILE__, __LINE__)

#define SIMT_TEST_MAIN \
  int main(int argc, char** argv) { return ::simt_test::main(argc, argv); }
