// Every op family registers its binding functions here, each from its own native/napi/<family>.cc.
#include "binding.h"

namespace attnkit::napi {

void register_linear(Napi::Env env, Napi::Object exports);        // linear.cc
void register_neighborhood(Napi::Env env, Napi::Object exports);  // neighborhood.cc
void register_block_sparse(Napi::Env env, Napi::Object exports);  // block_sparse.cc
void register_selection(Napi::Env env, Napi::Object exports);     // selection.cc

void register_op_families(Napi::Env env, Napi::Object exports) {
  register_attention(env, exports);  // attention.cc: dense, merge, to/add/randn
  register_linear(env, exports);
  register_neighborhood(env, exports);
  register_block_sparse(env, exports);
  register_selection(env, exports);
  register_cuda(env, exports);  // cuda.cc (declared in binding.h): the CUDA runtime's functions
}

}  // namespace attnkit::napi
