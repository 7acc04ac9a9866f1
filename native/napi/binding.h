// Helpers shared by the binding's files (native/napi/ only): the error boundary, handle unwrapping
// and plain-object readers. Each op family registers its functions from its own file through
// register_op_families (families.cc), so adding a family never touches the stream machinery.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../cpu/stream.h"
#include "attnkit/error.h"

namespace attnkit::napi {

// A JavaScript Error with `code` = "ERR_ATTNKIT_" + code and `op`.
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& op,
                       const std::string& message);

// Runs fn, converting attnkit::Error into a JavaScript error with code and op.
template <typename F>
auto boundary(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw make_error(env, e.code(), e.op(), e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, "OOM", "", "out of memory");
  }
}

// Throws attnkit::Error(code, op, "op: msg").
[[noreturn]] void fail(const std::string& code, const std::string& op, const std::string& msg);

cpu::StoragePtr unwrap(const Napi::Value& v, const char* op, const char* arg);
std::vector<cpu::StoragePtr> unwrap_list(const Napi::Value& v, const char* op, const char* arg);
cpu::CpuStream& unwrap_stream(const Napi::Value& v, const char* op);

Napi::Object get_obj(const Napi::Value& v);
int64_t get_int(const Napi::Object& o, const char* key);
double get_num(const Napi::Object& o, const char* key);
bool get_bool(const Napi::Object& o, const char* key);
// Re-check of what memory safety needs: element count and dtype of a buffer.
void expect_numel(const cpu::StoragePtr& s, int64_t n, DType t, const char* op, const char* arg);

// Defined in families.cc: calls each op family's register function.
void register_op_families(Napi::Env env, Napi::Object exports);

}  // namespace attnkit::napi
