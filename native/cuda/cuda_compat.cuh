// The one header a CUDA kernel source includes, so that the same file compiles under nvcc (real GPU
// code) and under g++ against the SIMT host emulator (native/simt/), which runs it on the CPU for
// tests. Under nvcc it is the CUDA runtime, fp16 and bf16 headers; under g++ it is the emulator.
// It also gives the few spellings that differ between the two builds:
//   ATTNKIT_DEVICE                 qualifier of device helpers (always inlined)
//   ATTNKIT_DYNAMIC_SMEM(T, name)  `T* name` = the block's dynamic shared memory (extern __shared__)
//   ATTNKIT_LAUNCH(kernel, grid, block, smem, stream, args...)
//                                  kernel<<<grid, block, smem, stream>>>(args...) under nvcc; a
//                                  synchronous simt::launch under g++ (throws simt::Error). `kernel`
//                                  must be one token: name a template instance through a pointer,
//                                  `auto* k = &my_kernel<64, __half>;`.
//   ATTNKIT_SITE_PARAM / ATTNKIT_SITE_ARG
//                                  the trailing call-site parameter of synchronising wrappers (empty
//                                  under nvcc): lets the emulator report the kernel's file:line.
#pragma once

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define ATTNKIT_DEVICE __device__ __forceinline__
#define ATTNKIT_DYNAMIC_SMEM(T, name)                                     \
  extern __shared__ __align__(128) unsigned char name##_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(name##_dynamic_smem_)
#define ATTNKIT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define ATTNKIT_SITE_PARAM
#define ATTNKIT_SITE_PARAM0
#define ATTNKIT_SITE_ARG
#define ATTNKIT_SITE_ARG0

#else

#include "../simt/simt.h"

#define ATTNKIT_DEVICE __device__ __forceinline__
#define ATTNKIT_DYNAMIC_SMEM(T, name) SIMT_DYNAMIC_SMEM(T, name)
#define ATTNKIT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ((void)(stream), ::simt::launch_named(#kernel, kernel, (grid), (block), (smem) __VA_OPT__(, ) __VA_ARGS__))
#define ATTNKIT_SITE_PARAM , ::simt::Site simt_site = ::simt::Site::here()
#define ATTNKIT_SITE_PARAM0 ::simt::Site simt_site = ::simt::Site::here()
#define ATTNKIT_SITE_ARG , simt_site
#define ATTNKIT_SITE_ARG0 simt_site

#endif
