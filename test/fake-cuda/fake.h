// The fake CUDA device of test/cuda-fake-device.test.ts: what its runtime (runtime.cc) offers
// beyond the CUDA runtime API it implements, for the fake kernels (kernels.cc).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

// Runs `fn` on the stream, in order: a "kernel".
void fakeLaunch(cudaStream_t stream, std::function<void()> fn);
// Aborts the process unless [p, p + n) lies in one live device allocation.
void fakeCheckRange(const void* p, size_t n, const char* what);
// From now on every API call fails with `e`, as after a device fault (a sticky error).
void fakeSetSticky(int e);
