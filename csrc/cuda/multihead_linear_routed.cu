// CUDA kernels of the routed multi-head layer: out[i] = W[head_ids[i]] x[i] +
// b[head_ids[i]] (one warp per row, the row's x read once and kept in
// registers), and its backward: dx by row, and dW, db summed per head over
// chunks of rows in row order, then over chunks in chunk order, so the result
// never depends on scheduling.
#include "launch.h"

namespace mtl_deploy {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 4;  // warps per block, one row each

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kWarp * kRowsPerBlock) routed_forward_kernel(
    int64_t B, int64_t D, int64_t H, int64_t C, const T* __restrict__ x, const T* __restrict__ w,
    const T* __restrict__ b, const int64_t* __restrict__ head_ids, T* __restrict__ out, int* bad_head) {
  const int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= B) return;
  const int64_t h = head_ids[row];
  if (h < 0 || h >= H) {
    if (lane == 0) *bad_head = 1;
    return;
  }
  const T* xr = x + row * D;
  const T* wh = w + h * C * D;
  for (int64_t c = 0; c < C; ++c) {
    const T* wc = wh + c * D;
    T acc = 0;
    for (int64_t k = lane; k < D; k += kWarp) acc += __ldg(xr + k) * __ldg(wc + k);
    acc = warp_sum(acc);
    if (lane == 0) out[row * C + c] = acc + b[h * C + c];
  }
}

// dx[i] = g[i] W_h: one warp per row, lanes over D.
template <typename T>
__global__ void __launch_bounds__(kWarp * kRowsPerBlock) routed_dx_kernel(
    int64_t B, int64_t D, int64_t H, int64_t C, const T* __restrict__ g, const T* __restrict__ w,
    const int64_t* __restrict__ head_ids, T* __restrict__ dx, int* bad_head) {
  const int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= B) return;
  const int64_t h = head_ids[row];
  T* dxr = dx + row * D;
  if (h < 0 || h >= H) {
    if (lane == 0) *bad_head = 1;
    for (int64_t k = lane; k < D; k += kWarp) dxr[k] = T(0);
    return;
  }
  const T* gr = g + row * C;
  const T* wh = w + h * C * D;
  for (int64_t k = lane; k < D; k += kWarp) {
    T acc = 0;
    for (int64_t c = 0; c < C; ++c) acc += gr[c] * wh[c * D + k];
    dxr[k] = acc;
  }
}

// partial[h, chunk] = (sum over the chunk's rows of head h, in row order) of
// g[i]^T x[i] (C x D) followed by g[i] (C): grid (chunks, H), as chunks can
// exceed the 65,535 blocks allowed along y.
template <typename T>
__global__ void routed_dw_partial_kernel(int64_t B, int64_t D, int64_t C, const T* __restrict__ g,
                                         const T* __restrict__ x, const int64_t* __restrict__ head_ids,
                                         T* __restrict__ partial) {
  __shared__ int64_t rows[kRoutedChunkRows];
  __shared__ int count;
  const int64_t chunk = blockIdx.x, h = blockIdx.y, chunks = gridDim.x;
  const int64_t first = chunk * kRoutedChunkRows;
  const int64_t n = min(kRoutedChunkRows, B - first);
  if (threadIdx.x < kWarp) {  // warp 0 compacts this head's rows, keeping their order
    int found = 0;
    for (int64_t base = 0; base < n; base += kWarp) {
      const int64_t r = base + threadIdx.x;
      const bool mine = r < n && head_ids[first + r] == h;
      const unsigned mask = __ballot_sync(0xffffffffu, mine);
      if (mine) rows[found + __popc(mask & ((1u << threadIdx.x) - 1u))] = first + r;
      found += __popc(mask);
    }
    if (threadIdx.x == 0) count = found;
  }
  __syncthreads();
  T* out = partial + (h * chunks + chunk) * C * (D + 1);
  for (int64_t idx = threadIdx.x; idx < C * (D + 1); idx += blockDim.x) {
    T acc = 0;
    if (idx < C * D) {
      const int64_t c = idx / D, k = idx - c * D;
      for (int r = 0; r < count; ++r) acc += g[rows[r] * C + c] * x[rows[r] * D + k];
    } else {
      const int64_t c = idx - C * D;
      for (int r = 0; r < count; ++r) acc += g[rows[r] * C + c];
    }
    out[idx] = acc;
  }
}

template <typename T>
__global__ void routed_dw_sum_kernel(int64_t H, int64_t D, int64_t C, int64_t chunks, const T* __restrict__ partial,
                                     T* __restrict__ dw, T* __restrict__ db) {
  const int64_t per_head = C * (D + 1);
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= H * per_head) return;
  const int64_t h = idx / per_head, e = idx - h * per_head;
  T acc = 0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) acc += partial[(h * chunks + chunk) * per_head + e];
  if (e < C * D)
    dw[h * C * D + e] = acc;
  else
    db[h * C + (e - C * D)] = acc;
}

}  // namespace

template <typename T>
cudaError_t routed_forward_cuda(int64_t B, int64_t D, int64_t H, int64_t C, const T* x, const T* w, const T* b,
                                const int64_t* head_ids, T* out, int* bad_head, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>((B + kRowsPerBlock - 1) / kRowsPerBlock);
  routed_forward_kernel<T><<<blocks, kWarp * kRowsPerBlock, 0, stream>>>(B, D, H, C, x, w, b, head_ids, out,
                                                                          bad_head);
  return cudaGetLastError();
}

template <typename T>
cudaError_t routed_backward_cuda(int64_t B, int64_t D, int64_t H, int64_t C, const T* grad_out, const T* x,
                                 const T* w, const int64_t* head_ids, T* dx, T* dw, T* db, T* partial,
                                 int64_t chunks, int* bad_head, cudaStream_t stream) {
  if (B > 0) {
    const auto blocks = static_cast<unsigned>((B + kRowsPerBlock - 1) / kRowsPerBlock);
    routed_dx_kernel<T><<<blocks, kWarp * kRowsPerBlock, 0, stream>>>(B, D, H, C, grad_out, w, head_ids, dx,
                                                                       bad_head);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    if (H == 0) return cudaSuccess;  // dw and db are empty; dx has flagged every row
    routed_dw_partial_kernel<T><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(H)), 256, 0,
                                  stream>>>(B, D, C, grad_out, x, head_ids, partial);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int64_t total = H * C * (D + 1);
  if (total == 0) return cudaSuccess;
  if (B == 0) {  // no rows: the weight gradients are zero
    cudaError_t err = cudaMemsetAsync(dw, 0, sizeof(T) * H * C * D, stream);
    if (err == cudaSuccess) err = cudaMemsetAsync(db, 0, sizeof(T) * H * C, stream);
    return err;
  }
  routed_dw_sum_kernel<T><<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(H, D, C, chunks,
                                                                                          partial, dw, db);
  return cudaGetLastError();
}

#define MTL_DEPLOY_INSTANTIATE(T)                                                                        \
  template cudaError_t routed_forward_cuda<T>(int64_t, int64_t, int64_t, int64_t, const T*, const T*,    \
                                              const T*, const int64_t*, T*, int*, cudaStream_t);         \
  template cudaError_t routed_backward_cuda<T>(int64_t, int64_t, int64_t, int64_t, const T*, const T*,   \
                                               const T*, const int64_t*, T*, T*, T*, T*, int64_t, int*,  \
                                               cudaStream_t);
MTL_DEPLOY_INSTANTIATE(float)
MTL_DEPLOY_INSTANTIATE(double)
#undef MTL_DEPLOY_INSTANTIATE

}  // namespace cuda
}  // namespace mtl_deploy
