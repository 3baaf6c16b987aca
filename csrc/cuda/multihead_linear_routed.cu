// CUDA kernel of the routed multi-head forward: out[i] = W[head_ids[i]] x[i] + b[head_ids[i]].
// Raw pointers and a cudaStream_t only (no torch headers), so it compiles with a
// plain `nvcc -c` on machines whose torch lacks CUDA headers. Compiled in CI as a
// build check; NOT verified on a GPU.
#include <cuda_runtime.h>

#include <cstdint>

namespace mtl_deploy {
namespace {

// One block per row, one warp per output column: the warp reduces x . W[h, c, :].
template <typename T>
__global__ void routed_forward_kernel(int64_t D, int64_t C, const T* __restrict__ x,
                                      const T* __restrict__ w, const T* __restrict__ b,
                                      const int64_t* __restrict__ head_ids, T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const int64_t h = head_ids[row];
  const T* xr = x + row * D;
  const int lane = threadIdx.x % 32;
  for (int64_t c = threadIdx.x / 32; c < C; c += blockDim.x / 32) {
    const T* wc = w + (h * C + c) * D;
    T acc = 0;
    for (int64_t k = lane; k < D; k += 32) acc += xr[k] * wc[k];
    for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if (lane == 0) out[row * C + c] = acc + b[h * C + c];
  }
}

}  // namespace

// Launches on `stream`; returns the launch status for the caller to check.
template <typename T>
cudaError_t multihead_linear_routed_cuda(int64_t B, int64_t D, int64_t C, const T* x, const T* w,
                                         const T* b, const int64_t* head_ids, T* out,
                                         cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  routed_forward_kernel<T><<<static_cast<unsigned>(B), 128, 0, stream>>>(D, C, x, w, b, head_ids, out);
  return cudaGetLastError();
}

template cudaError_t multihead_linear_routed_cuda<float>(int64_t, int64_t, int64_t, const float*,
                                                         const float*, const float*, const int64_t*,
                                                         float*, cudaStream_t);
template cudaError_t multihead_linear_routed_cuda<double>(int64_t, int64_t, int64_t, const double*,
                                                          const double*, const double*,
                                                          const int64_t*, double*, cudaStream_t);

}  // namespace mtl_deploy
