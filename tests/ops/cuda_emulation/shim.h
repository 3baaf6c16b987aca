// Just enough of CUDA to run csrc/cuda/inner_loop.cu's kernels on the CPU, for a test
// on machines without a GPU: one std::thread per CUDA thread, blocks one after another,
// __syncthreads a barrier of the block's threads. It checks the kernels' mathematics
// and their barriers (a missing one shows up as a wrong result under real threads),
// not their speed.
#pragma once

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(x)
#define __align__(x)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline dim3 blockIdx, blockDim;       // one block runs at a time
inline thread_local dim3 threadIdx;   // each emulated thread has its own
inline std::barrier<>* block_barrier = nullptr;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }

typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr int cudaSuccess = 0;
constexpr int cudaFuncAttributeMaxDynamicSharedMemorySize = 0;
constexpr int cudaDevAttrMaxSharedMemoryPerBlockOptin = 0;
inline int cudaGetLastError() { return cudaSuccess; }
template <class F>
int cudaFuncSetAttribute(F, int, int) { return cudaSuccess; }
inline int cudaGetDevice(int* device) { *device = 0; return cudaSuccess; }
inline int cudaDeviceGetAttribute(int* value, int, int) { *value = 0; return cudaSuccess; }  // no shared memory

// `kernel<<<grid, block, bytes, stream>>>(args...)` is rewritten by the test as
// `emulate_launch(kernel, grid, block, bytes, stream)(args...)`.
template <class Kernel>
struct Launch {
  Kernel kernel;
  unsigned grid, block;
  template <class... Args>
  void operator()(Args... args) const {
    for (unsigned b = 0; b < grid; ++b) {
      blockIdx.x = b;
      blockDim.x = block;
      std::barrier<> barrier(block);
      block_barrier = &barrier;
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < block; ++t)
        threads.emplace_back([&, t] {
          threadIdx.x = t;
          kernel(args...);
        });
      for (std::thread& thread : threads) thread.join();
    }
  }
};

template <class Kernel>
Launch<Kernel> emulate_launch(Kernel kernel, unsigned grid, unsigned block, std::size_t = 0, cudaStream_t = nullptr) {
  return {kernel, grid, block};
}
