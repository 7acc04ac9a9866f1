// The fake CUDA device of the fake-CUDA addon (scripts/build-fake-cuda.mjs): what its runtime
// (runtime.cc) offers beyond the CUDA runtime API it implements, for the kernel launches of
// launch_shim.h and attention.cc.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

// Runs `fn` on the stream, in order: a "kernel".
void fakeLaunch(cudaStream_t stream, std::function<void()> fn);
// Aborts the process unless [p, p + n) lies in one live device allocation.
void fakeCheckRange(const void* p, size_t n, const char* what);
// A kernel's pointer argument when the kernel starts: true when it points into a live device
// allocation; aborts the process when it points into one freed in stream order; false otherwise.
bool fakeKernelPointer(const void* p);
// From now on every API call fails with `e`, as after a device fault (a sticky error).
void fakeSetSticky(int e);
