// Kernel launches of native/cuda/device_kernels.cu on the fake device: force-included (g++ -include)
// before that file, it replaces ATTNKIT_LAUNCH (cuda_compat.cuh: a synchronous simt::launch under
// g++) by a launch enqueued on the fake stream, so the real kernel runs on the SIMT emulator in
// stream order and asynchronously, as on a GPU. When the launch comes up, every pointer argument is
// checked as the device would meet it: a pointer into memory freed in stream order aborts the
// process (a runtime bug), a pointer outside device memory faults the device (sticky
// cudaErrorIllegalAddress, without running the kernel: the emulator would take the process down).
// A violation the emulator reports (simt::Error) faults the device with cudaErrorLaunchFailure.
#pragma once
#include "cuda_compat.cuh"

#include <cstdio>
#include <tuple>
#include <type_traits>
#include <utility>

#include "fake.h"

namespace fakecuda {

template <typename T>
bool device_argument_ok(const T& v) {
  if constexpr (std::is_pointer_v<T>) return fakeKernelPointer(v);
  else return true;
}

template <typename... P, typename... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            A&&... args) {
  // converted to the parameter types at the call, as a real launch copies them into parameter space
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  fakeLaunch(stream, [=] {
    if (!std::apply([](const auto&... p) { return (device_argument_ok(p) && ...); }, params)) {
      fakeSetSticky(cudaErrorIllegalAddress);
      return;
    }
    try {
      std::apply([&](const auto&... p) { ::simt::launch_named(name, kernel, grid, block, smem, p...); }, params);
    } catch (const ::simt::Error& e) {
      std::fprintf(stderr, "FAKE CUDA: kernel %s failed on the emulator: %s\n", name, e.what());
      fakeSetSticky(cudaErrorLaunchFailure);
    }
  });
}

}  // namespace fakecuda

#undef ATTNKIT_LAUNCH
#define ATTNKIT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::fakecuda::launch(#kernel, kernel, (grid), (block), (smem), (stream) __VA_OPT__(, ) __VA_ARGS__)
