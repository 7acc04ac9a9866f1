// A minimal harness for the emulator's C++ test programs (driven by test/simt.test.ts).
// SIMT_TEST(name) { ... } registers a case; `prog` runs every case, `prog a b` the named ones,
// `prog --list` prints the names. A case passes when it returns; CHECK throws on failure. Output, one
// line per case: "ok <name>" or "FAIL <name>: <why>"; "note <key>=<value>" lines carry observations the
// driver aggregates across runs (e.g. which thread order exposed a race). Exit code 1 if any failed.
//
// The kernel families' test programs (native/cuda/<family>/tests/) also compile with nvcc as real GPU
// programs from the same source (scripts/gpu-check-kernels.sh): everything a kernel reads or writes
// lives in a simt_test::Buffer (managed memory under nvcc, host memory under g++, where the emulator
// runs kernels on the host), and simt_test::sync() follows the launches before the host reads results
// (cudaDeviceSynchronize plus the error check under nvcc; nothing under g++, where launches are
// synchronous). What only the emulator can check (EXPECT_ERROR of its violations) is absent under nvcc.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#else
#include "../simt.h"
#endif

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

// The kernel programs' report to their driver: per tensor of the running case, the worst error
// against the reference and the worst ratio to the naive low-precision error. record_error keeps
// them; flush_error_notes prints them as "note max_err_<tensor>" / "note naive_ratio_<tensor>" lines
// (what test/cuda-kernels.test.ts aggregates) and starts the next case afresh.
struct ErrorSummary {
  double err = 0, ratio = 0;
};
inline std::map<std::string, ErrorSummary>& error_summary() {
  static std::map<std::string, ErrorSummary> m;
  return m;
}
inline void record_error(const std::string& tensor, double err, double naive) {
  ErrorSummary& s = error_summary()[tensor];
  s.err = std::max(s.err, err);
  if (naive > 0) s.ratio = std::max(s.ratio, err / naive);
}
inline void flush_error_notes() {
  for (const auto& [key, s] : error_summary()) {
    char v[64];
    std::snprintf(v, sizeof v, "%.3g", s.err);
    note("max_err_" + key, v);
    std::snprintf(v, sizeof v, "%.3g", s.ratio);
    note("naive_ratio_" + key, v);
  }
  error_summary().clear();
}

#if !defined(__CUDACC__)
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
#endif

// Waits for the launches so far and turns a CUDA error into a failure of the running case (nvcc);
// nothing under the emulator, whose launches are synchronous and throw themselves.
inline void sync() {
#if defined(__CUDACC__)
  const cudaError_t e = cudaDeviceSynchronize();
  const cudaError_t last = cudaGetLastError();
  const cudaError_t err = e != cudaSuccess ? e : last;
  if (err != cudaSuccess)
    throw Failure(std::string("CUDA error after the launches: ") + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ")");
#endif
}

// A buffer a kernel reads or writes, with the part of std::vector's interface the tests use. Under
// nvcc it is managed memory (cudaMallocManaged: the host fills and reads it, the GPU reads and writes
// it; call sync() between a launch and the host reading its results); under g++ it is host memory, as
// the emulator wants (AddressSanitizer sees its bounds). T must be trivially copyable.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  Buffer(size_t n, const T& value) { assign(n, value); }
  Buffer(const Buffer& o) { copy_from(o.data(), o.size()); }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(const Buffer& o) {
    if (this != &o) copy_from(o.data(), o.size());
    return *this;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    swap(o);
    return *this;
  }
  ~Buffer() { release(); }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  T& operator[](size_t i) { return ptr_[i]; }
  const T& operator[](size_t i) const { return ptr_[i]; }
  T* begin() { return ptr_; }
  T* end() { return ptr_ + size_; }
  const T* begin() const { return ptr_; }
  const T* end() const { return ptr_ + size_; }

  // n elements, value-initialized (the old contents are dropped).
  void resize(size_t n) { assign(n, T{}); }
  void assign(size_t n, const T& value) {
    allocate(n);
    for (size_t i = 0; i < n; ++i) ptr_[i] = value;
  }
  template <typename It, typename = std::enable_if_t<!std::is_integral<It>::value>>
  void assign(It first, It last) {
    allocate(static_cast<size_t>(std::distance(first, last)));
    for (size_t i = 0; first != last; ++first, ++i) ptr_[i] = static_cast<T>(*first);
  }
  void swap(Buffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
#if !defined(__CUDACC__)
    host_.swap(o.host_);
#endif
  }

 private:
  void copy_from(const T* src, size_t n) {
    allocate(n);
    if (n > 0) std::memcpy(static_cast<void*>(ptr_), src, n * sizeof(T));
  }
  void allocate(size_t n) {
    release();
#if defined(__CUDACC__)
    if (n > 0) {
      void* p = nullptr;
      const cudaError_t e = cudaMallocManaged(&p, n * sizeof(T));
      if (e != cudaSuccess)
        throw Failure("cudaMallocManaged(" + std::to_string(n * sizeof(T)) + " bytes): " + cudaGetErrorName(e));
      ptr_ = static_cast<T*>(p);
    }
#else
    host_.resize(n);
    ptr_ = host_.data();
#endif
    size_ = n;
  }
  void release() {
#if defined(__CUDACC__)
    if (ptr_ != nullptr) cudaFree(ptr_);
#else
    std::vector<T>().swap(host_);
#endif
    ptr_ = nullptr;
    size_ = 0;
  }

  T* ptr_ = nullptr;
  size_t size_ = 0;
#if !defined(__CUDACC__)
  std::vector<T> host_;
#endif
};

// "file.cc:123": what the emulator prints for a call site in this file.
inline std::string at(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

// Rows a test driver passes in the file named by $SIMT_SHAPES (e.g. the shapes of a kernel family,
// generated by test/simt-families.ts): one row per line, words "key=value" separated by blanks, and
// `what=` last, taking the rest of the line. Empty lines and lines starting with '#' are skipped.
// No $SIMT_SHAPES: no rows. An unreadable file or a word without '=' throws.
using Row = std::vector<std::pair<std::string, std::string>>;

inline const std::vector<Row>& rows_from_env() {
  static const std::vector<Row> rows = [] {
    std::vector<Row> out;
    const char* path = std::getenv("SIMT_SHAPES");
    if (path == nullptr || *path == 0) return out;
    std::FILE* f = std::fopen(path, "r");
    if (f == nullptr) throw std::runtime_error(std::string("SIMT_SHAPES: cannot read ") + path);
    char buf[1024];
    while (std::fgets(buf, sizeof buf, f) != nullptr) {
      std::string line(buf);
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      Row row;
      size_t i = 0;
      while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        if (i >= line.size()) break;
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos) {
          std::fclose(f);
          throw std::runtime_error("SIMT_SHAPES: a word without '=' in: " + line);
        }
        const std::string key = line.substr(i, eq - i);
        const size_t end = key == "what" ? line.size() : std::min(line.find(' ', eq), line.size());
        row.emplace_back(key, line.substr(eq + 1, end - eq - 1));
        i = end;
      }
      out.push_back(row);
    }
    std::fclose(f);
    return out;
  }();
  return rows;
}

// The value of `key` in a row, or `dflt`.
inline std::string get(const Row& row, const std::string& key, const std::string& dflt = "") {
  for (const auto& kv : row)
    if (kv.first == key) return kv.second;
  return dflt;
}

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

#if !defined(__CUDACC__)
#define EXPECT_ERROR(stmt, ...)                                                                   \
  ::simt_test::expect_error([&] { stmt; }, [&] { return std::vector<std::string>{__VA_ARGS__}; }, \
                            __FILE__, __LINE__)
#endif

#define SIMT_TEST_MAIN \
  int main(int argc, char** argv) { return ::simt_test::main(argc, argv); }
