{
  # CPU-only fallback build for node-gyp (`npm run build:gyp`): the same CPU sources as
  # CMakeLists.txt (test/build.test.ts checks that the two lists agree), no CUDA.
  "targets": [
    {
      "target_name": "attnkit",
      "sources": [
        "native/cpu/attention.cc",
        "native/cpu/block_sparse.cc",
        "native/cpu/convert.cc",
        "native/cpu/isa.cc",
        "native/cpu/kernels_amx.cc",
        "native/cpu/kernels_avx2.cc",
        "native/cpu/kernels_avx512.cc",
        "native/cpu/kernels_avx512bf16.cc",
        "native/cpu/kernels_generic.cc",
        "native/cpu/linear.cc",
        "native/cpu/linear_backward.cc",
        "native/cpu/neighborhood.cc",
        "native/cpu/selection.cc",
        "native/cpu/stream.cc",
        "native/cpu/thread_pool.cc",
        "native/napi/addon.cc",
        "native/napi/attention.cc",
        "native/napi/binding.cc",
        "native/napi/block_sparse.cc",
        "native/napi/cuda.cc",
        "native/napi/families.cc",
        "native/napi/linear.cc",
        "native/napi/neighborhood.cc",
        "native/napi/selection.cc",
        "native/napi/storage.cc",
        "native/napi/stream.cc",
        "native/ops/ops.cc",
        "native/runtime/storage.cc",
        "native/runtime/stream.cc",
        "native/cuda/runtime_stub.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/include"
      ],
      "defines": ["NAPI_VERSION=9", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-O3", "-ffp-contract=fast", "-fvisibility=hidden"],
      "conditions": [
        ["OS=='linux'", {
          "ldflags": ["-Wl,--version-script=<(module_root_dir)/native/napi/exports.map", "-Wl,-z,nodelete"]
        }]
      ],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      }
    }
  ]
}
