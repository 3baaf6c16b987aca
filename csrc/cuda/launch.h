// The interface between the CUDA kernels (*.cu, raw pointers and a stream only,
// so each compiles with a plain `nvcc -c`) and their torch-facing host code
// (ops.cpp): plain structs describing one call, and the launchers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mtl_deploy {
namespace cuda {

// Deepest MLP the CUDA inner loop takes (the host code refuses deeper ones).
constexpr int kMaxLayers = 8;

// An MLP's widths and where W_l and b_l sit in the flat parameter vector
// torch.cat([p.flatten() for p in params]) (nn.Linear layout), plus the rows
// per task and the loss / activation codes of the op schema.
struct MlpDims {
  int layers = 0;
  int64_t width[kMaxLayers + 1] = {};
  int64_t w_off[kMaxLayers] = {}, b_off[kMaxLayers] = {};
  int64_t numel = 0;
  int64_t K = 0;
  int loss = 0, act = 0;
};

// Tensors that together hold one flat vector per task: elements
// [start[s], start[s + 1]) of task t live at ptr[s] + t * stride[s] (stride 0:
// one vector shared by every task).
template <typename T>
struct Segments {
  int n = 0;
  int64_t start[2 * kMaxLayers + 1] = {};
  T* ptr[2 * kMaxLayers] = {};
  int64_t stride[2 * kMaxLayers] = {};
};

// Elements of T each task's block needs as workspace; the launchers put it in
// shared memory when it fits (workspace == nullptr) and in `workspace`
// (tasks x workspace_elems) otherwise.
int64_t workspace_elems(const MlpDims& d, bool hvp, bool meta_sgd);
// Bytes of shared memory a block may take on the current device.
int64_t shared_memory_limit();

// Adapts every task: `steps` SGD steps from theta0 (lr: per-element Meta-SGD
// rates, or n == 0 and lr_scalar).  grad_sums (tasks, P) and trajectory
// (tasks, steps, P) are written unless null.  bad_class is set to 1 when a
// class id of y_class is out of range (those rows are skipped, never read out of
// bounds).
template <typename T>
cudaError_t adapt_cuda(const MlpDims& d, int64_t tasks, int64_t steps, const T* x,
                       const T* y_float, const int64_t* y_class, const Segments<const T>& theta0,
                       const Segments<const T>& lr, T lr_scalar, const Segments<T>& adapted,
                       T* grad_sums, T* trajectory, int* bad_class, T* workspace,
                       cudaStream_t stream);

// Reverse through the unrolled steps of every task from the saved trajectory:
// v <- v - H(theta_s)(lr * v), and dlr -= grad(theta_s) * v when dlr is not null;
// v starts as v_in and ends in v_out (tasks, P), dlr is (tasks, P).
template <typename T>
cudaError_t reverse_cuda(const MlpDims& d, int64_t tasks, int64_t steps, const T* x,
                         const T* y_float, const int64_t* y_class, const Segments<const T>& lr,
                         T lr_scalar, const T* trajectory, const Segments<const T>& v_in, T* v_out,
                         T* dlr, int* bad_class, T* workspace, cudaStream_t stream);

// Each task's loss at its own parameters on (x, y): losses (tasks,) and
// grads (tasks, P) = scale * d loss / d theta_t.
template <typename T>
cudaError_t task_loss_grad_cuda(const MlpDims& d, int64_t tasks, const T* x, const T* y_float,
                                const int64_t* y_class, const Segments<const T>& theta, T scale,
                                T* losses, T* grads, int* bad_class, T* workspace,
                                cudaStream_t stream);

// out[i] = scale * sum over tasks, in task order, of a[t, i] (times b[t, i] unless
// b is null), for the P = out.start[out.n] elements of the flat layout of `out`.
template <typename T>
cudaError_t sum_tasks_cuda(int64_t tasks, const T* a, const T* b, T scale, const Segments<T>& out,
                           cudaStream_t stream);

// Routed multi-head rows: out[i] = W[head_ids[i]] x[i] + b[head_ids[i]], and
// its backward (dx, dW, db; dW and db summed in row order, so deterministic).
// bad_head is set to 1 when a head id is out of range (those rows are skipped).
template <typename T>
cudaError_t routed_forward_cuda(int64_t B, int64_t D, int64_t H, int64_t C, const T* x, const T* w,
                                const T* b, const int64_t* head_ids, T* out, int* bad_head,
                                cudaStream_t stream);
template <typename T>
cudaError_t routed_backward_cuda(int64_t B, int64_t D, int64_t H, int64_t C, const T* grad_out,
                                 const T* x, const T* w, const int64_t* head_ids, T* dx, T* dw,
                                 T* db, T* partial, int64_t chunks, int* bad_head,
                                 cudaStream_t stream);
// Rows per chunk of the routed weight gradient (partial is H x chunks x C x (D + 1)).
constexpr int64_t kRoutedChunkRows = 1024;

}  // namespace cuda
}  // namespace mtl_deploy
