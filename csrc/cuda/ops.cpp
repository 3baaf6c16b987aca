// CUDA implementations of every mtl_deploy op, registered beside the CPU ones:
// the arguments are checked exactly as for the CPU kernels (problem.h,
// multihead.h), outputs are allocated through torch on the inputs' device, and
// the kernels (launch.h) run on the current CUDA stream.  Class and head ids
// live on the device, so the kernels range-check them and raise a flag that is
// read back after the launch (one synchronisation, only when ids are passed).
#include <cuda_runtime.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "../multihead.h"
#include "../problem.h"
#include "launch.h"

namespace mtl_deploy {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;

namespace {

cudaStream_t current_stream(const Tensor& x) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(x.get_device_index(), &stream));
  return static_cast<cudaStream_t>(stream);
}

void check_launch(cudaError_t err, const char* op) {
  STD_TORCH_CHECK(err == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(err));
}

// A device-side int the kernels set to 1 on a bad id; null when nothing to check.
struct IdFlag {
  std::optional<Tensor> tensor;
  int* ptr() const { return tensor ? tensor->mutable_data_ptr<int>() : nullptr; }
  // Waits for the stream and raises `message` if a kernel raised the flag.  Not
  // while the stream is being captured into a CUDA graph, which cannot wait: the
  // kernels still never read out of bounds.
  void check(cudaStream_t stream, const std::string& message) const {
    if (!tensor) return;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check_launch(cudaStreamIsCapturing(stream, &capture), "id check");
    if (capture != cudaStreamCaptureStatusNone) return;
    int raised = 0;
    check_launch(cudaMemcpyAsync(&raised, ptr(), sizeof(int), cudaMemcpyDeviceToHost, stream), "id check");
    check_launch(cudaStreamSynchronize(stream), "id check");
    STD_TORCH_CHECK(raised == 0, message);
  }
};

IdFlag id_flag(const Tensor& x, bool needed) {
  if (!needed) return IdFlag{};
  return IdFlag{torch::stable::new_zeros(x, {1}, ScalarType::Int)};
}

cuda::MlpDims dims_of(const Problem& pb) {
  const MlpShape& s = pb.shape;
  STD_TORCH_CHECK(s.layers <= cuda::kMaxLayers, "inner_loop: the CUDA kernels take MLPs of at most ",
                  cuda::kMaxLayers, " layers, got ", s.layers);
  cuda::MlpDims d;
  d.layers = static_cast<int>(s.layers);
  for (int64_t l = 0; l <= s.layers; ++l) d.width[l] = s.width[l];
  for (int64_t l = 0; l < s.layers; ++l) {
    d.w_off[l] = s.w_off[l];
    d.b_off[l] = s.b_off[l];
  }
  d.numel = s.numel;
  d.K = pb.K;
  d.loss = static_cast<int>(pb.loss);
  d.act = static_cast<int>(pb.act);
  return d;
}

// Where each parameter's block starts in the flat layout: W_l, then b_l, per layer.
template <typename T>
cuda::Segments<T> empty_segments(const MlpShape& s) {
  cuda::Segments<T> seg;
  seg.n = static_cast<int>(2 * s.layers);
  for (int64_t l = 0; l < s.layers; ++l) {
    seg.start[2 * l] = s.w_off[l];
    seg.start[2 * l + 1] = s.b_off[l];
  }
  seg.start[seg.n] = s.numel;
  return seg;
}

// One tensor per parameter: shared by every task (per_task false, shaped like
// the parameter) or one slice per task ((T, *p)).
template <typename T>
cuda::Segments<T> tensor_segments(const MlpShape& s, const std::vector<Tensor>& ts, bool per_task) {
  cuda::Segments<T> seg = empty_segments<T>(s);
  if (ts.empty()) {
    seg.n = 0;
    return seg;
  }
  for (int k = 0; k < seg.n; ++k) {
    seg.ptr[k] = static_cast<T*>(ts[k].mutable_data_ptr());
    seg.stride[k] = per_task ? seg.start[k + 1] - seg.start[k] : 0;
  }
  return seg;
}

// A (T, P) buffer: task t's flat vector at base + t * P.
template <typename T>
cuda::Segments<T> flat_segments(const MlpShape& s, T* base) {
  cuda::Segments<T> seg = empty_segments<T>(s);
  for (int k = 0; k < seg.n; ++k) {
    seg.ptr[k] = base + seg.start[k];
    seg.stride[k] = s.numel;
  }
  return seg;
}

template <typename T>
cuda::Segments<const T> as_const(const cuda::Segments<T>& s) {
  cuda::Segments<const T> c;
  c.n = s.n;
  for (int k = 0; k <= s.n; ++k) c.start[k] = s.start[k];
  for (int k = 0; k < s.n; ++k) {
    c.ptr[k] = s.ptr[k];
    c.stride[k] = s.stride[k];
  }
  return c;
}

// Global workspace (tasks x elems) for MLPs whose workspace exceeds shared memory.
template <typename T>
struct Workspace {
  std::optional<Tensor> tensor;
  T* ptr = nullptr;
  Workspace(const Tensor& x, const cuda::MlpDims& d, int64_t tasks, bool hvp, bool meta_sgd) {
    const int64_t elems = cuda::workspace_elems(d, hvp, meta_sgd);
    if (elems * static_cast<int64_t>(sizeof(T)) <= cuda::shared_memory_limit()) return;
    tensor = torch::stable::new_empty(x, {tasks * elems});
    ptr = static_cast<T*>(tensor->mutable_data_ptr());
  }
};

std::string bad_class_message(const char* op, const Problem& pb) {
  return std::string(op) + ": y holds a class id outside [0, " + std::to_string(pb.shape.width.back()) + ")";
}

template <typename T>
const T* float_targets(const Problem& pb, const Tensor& y) {
  return pb.loss == Loss::Mse ? static_cast<const T*>(y.const_data_ptr()) : nullptr;
}

const int64_t* class_targets(const Problem& pb, const Tensor& y) {
  return pb.loss == Loss::Mse ? nullptr : y.const_data_ptr<int64_t>();
}

template <typename T>
void adapt_into(const Problem& pb, const std::vector<Tensor>& params, const Tensor& x, const Tensor& y,
                const std::vector<Tensor>& lr, const std::vector<Tensor>& outs, T* grad_sums, T* trajectory) {
  const cuda::MlpDims d = dims_of(pb);
  const cudaStream_t stream = current_stream(x);
  const IdFlag flag = id_flag(x, pb.loss == Loss::CrossEntropy);
  Workspace<T> ws(x, d, pb.T, false, pb.meta_sgd);
  check_launch(cuda::adapt_cuda<T>(d, pb.T, pb.steps, static_cast<const T*>(x.const_data_ptr()),
                                   float_targets<T>(pb, y), class_targets(pb, y),
                                   as_const(tensor_segments<T>(pb.shape, params, false)),
                                   as_const(tensor_segments<T>(pb.shape, lr, false)), static_cast<T>(pb.lr_scalar),
                                   tensor_segments<T>(pb.shape, outs, true), grad_sums, trajectory, flag.ptr(),
                                   ws.ptr, stream),
               "inner_loop");
  flag.check(stream, bad_class_message("inner_loop", pb));
}

// Adapted parameters and the aux tensor aux_mode asks for, as the CPU adapt().
std::tuple<std::vector<Tensor>, Tensor> adapt(const Problem& pb, const std::vector<Tensor>& params,
                                              const Tensor& x, const Tensor& y, const std::vector<Tensor>& lr,
                                              int64_t aux_mode) {
  auto [outs, aux] = adapt_outputs(pb, params, x, aux_mode);
  by_dtype(x, [&](auto zero) {
    using T = decltype(zero);
    T* a = aux_mode ? static_cast<T*>(aux.mutable_data_ptr()) : nullptr;
    adapt_into<T>(pb, params, x, y, lr, outs, aux_mode == 1 ? a : nullptr, aux_mode == 2 ? a : nullptr);
  });
  return {outs, aux};
}

// Reverse through the steps from v_in (per-task segments), then the sums over
// tasks into grad_params and (Meta-SGD) grad_lr.
template <typename T>
void reverse_into(const char* op, const Problem& pb, const Tensor& x, const Tensor& y, const std::vector<Tensor>& lr,
                  const Tensor& trajectory, const cuda::Segments<const T>& v_in,
                  const std::vector<Tensor>& grad_params, const std::vector<Tensor>& grad_lr) {
  const cuda::MlpDims d = dims_of(pb);
  const cudaStream_t stream = current_stream(x);
  const IdFlag flag = id_flag(x, pb.loss == Loss::CrossEntropy);
  Workspace<T> ws(x, d, pb.T, true, pb.meta_sgd);
  Tensor v_out = torch::stable::new_empty(x, {pb.T, pb.shape.numel});
  std::optional<Tensor> dlr;
  if (pb.meta_sgd) dlr = torch::stable::new_empty(x, {pb.T, pb.shape.numel});
  T* dlr_ptr = dlr ? static_cast<T*>(dlr->mutable_data_ptr()) : nullptr;
  check_launch(cuda::reverse_cuda<T>(d, pb.T, pb.steps, static_cast<const T*>(x.const_data_ptr()),
                                     float_targets<T>(pb, y), class_targets(pb, y),
                                     as_const(tensor_segments<T>(pb.shape, lr, false)), static_cast<T>(pb.lr_scalar),
                                     static_cast<const T*>(trajectory.const_data_ptr()), v_in,
                                     static_cast<T*>(v_out.mutable_data_ptr()), dlr_ptr, flag.ptr(), ws.ptr, stream),
               op);
  check_launch(cuda::sum_tasks_cuda<T>(pb.T, static_cast<const T*>(v_out.const_data_ptr()), nullptr, T(1),
                                       tensor_segments<T>(pb.shape, grad_params, false), stream),
               op);
  if (dlr)
    check_launch(cuda::sum_tasks_cuda<T>(pb.T, dlr_ptr, nullptr, T(1),
                                         tensor_segments<T>(pb.shape, grad_lr, false), stream),
                 op);
  flag.check(stream, bad_class_message(op, pb));
}

std::tuple<std::vector<Tensor>, Tensor> inner_loop_cuda(std::vector<Tensor> params, Tensor x, Tensor y,
                                                        std::vector<Tensor> lr, double lr_scalar, int64_t steps,
                                                        int64_t loss, int64_t activation, int64_t aux_mode) {
  STD_TORCH_CHECK(x.is_cuda(), "inner_loop: x must be a CUDA tensor");
  const Problem pb = check_problem(params, x, y, lr, lr_scalar, steps, loss, activation, false);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  return adapt(pb, params, x, y, lr, aux_mode);
}

std::tuple<std::vector<Tensor>, std::vector<Tensor>> inner_loop_backward_cuda(
    std::vector<Tensor> params, Tensor x, Tensor y, std::vector<Tensor> lr, double lr_scalar, int64_t steps,
    int64_t loss, int64_t activation, Tensor trajectory, std::vector<Tensor> grad_adapted) {
  STD_TORCH_CHECK(x.is_cuda(), "inner_loop_backward: x must be a CUDA tensor");
  const Problem pb = check_problem(params, x, y, lr, lr_scalar, steps, loss, activation, false);
  check_backward_args(pb, params, x, trajectory, grad_adapted);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  std::vector<Tensor> grad_params = empty_like_each(params, 0);
  std::vector<Tensor> grad_lr = empty_like_each(lr, 0);
  by_dtype(x, [&](auto zero) {
    using T = decltype(zero);
    reverse_into<T>("inner_loop_backward", pb, x, y, lr, trajectory, as_const(tensor_segments<T>(pb.shape, grad_adapted, true)),
                    grad_params, grad_lr);
  });
  return {grad_params, grad_lr};
}

// The mean query loss over tasks and its gradient, from the adapted parameters.
template <typename T>
void meta_gradient(const Problem& pb, const Problem& qp, const std::vector<Tensor>& lr, const Tensor& sx,
                   const Tensor& sy, const Tensor& qx, const Tensor& qy, int64_t order,
                   const std::vector<Tensor>& adapted, const Tensor& aux, Tensor& loss_out,
                   const std::vector<Tensor>& grad_params, const std::vector<Tensor>& grad_lr) {
  const cuda::MlpDims qd = dims_of(qp);
  const cudaStream_t stream = current_stream(qx);
  const IdFlag flag = id_flag(qx, qp.loss == Loss::CrossEntropy);
  Workspace<T> ws(qx, qd, qp.T, false, false);
  Tensor losses = torch::stable::new_empty(qx, {pb.T});
  Tensor v = torch::stable::new_empty(qx, {pb.T, pb.shape.numel});  // d(mean query loss)/d theta_t
  T* vp = static_cast<T*>(v.mutable_data_ptr());
  check_launch(cuda::task_loss_grad_cuda<T>(qd, qp.T, static_cast<const T*>(qx.const_data_ptr()),
                                            float_targets<T>(qp, qy), class_targets(qp, qy),
                                            as_const(tensor_segments<T>(pb.shape, adapted, true)),
                                            T(1) / static_cast<T>(pb.T), static_cast<T*>(losses.mutable_data_ptr()),
                                            vp, flag.ptr(), ws.ptr, stream),
               "maml_step");
  cuda::Segments<T> loss_seg;
  loss_seg.n = 1;
  loss_seg.start[1] = 1;
  loss_seg.ptr[0] = static_cast<T*>(loss_out.mutable_data_ptr());
  // losses is (T,) read as (T, 1): the mean over tasks
  check_launch(cuda::sum_tasks_cuda<T>(pb.T, static_cast<const T*>(losses.const_data_ptr()), nullptr,
                                       T(1) / static_cast<T>(pb.T), loss_seg, stream),
               "maml_step");
  flag.check(stream, bad_class_message("maml_step: query", qp));
  if (order == 2) {
    reverse_into<T>("maml_step", pb, sx, sy, lr, aux, as_const(flat_segments<T>(pb.shape, vp)), grad_params, grad_lr);
    return;
  }
  check_launch(cuda::sum_tasks_cuda<T>(pb.T, vp, nullptr, T(1), tensor_segments<T>(pb.shape, grad_params, false),
                                       stream),
               "maml_step");
  if (pb.meta_sgd)  // first order: dlr = -sum_t (sum_s g_s) * v_t, both in the flat layout
    check_launch(cuda::sum_tasks_cuda<T>(pb.T, static_cast<const T*>(aux.const_data_ptr()), vp, T(-1),
                                         tensor_segments<T>(pb.shape, grad_lr, false), stream),
                 "maml_step");
}

std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> maml_step_cuda(
    std::vector<Tensor> params, Tensor support_x, Tensor support_y, Tensor query_x, Tensor query_y,
    std::vector<Tensor> lr, double lr_scalar, int64_t steps, int64_t loss, int64_t activation, int64_t order) {
  STD_TORCH_CHECK(support_x.is_cuda(), "maml_step: support_x must be a CUDA tensor");
  const auto [pb, qp] = check_maml_args(params, support_x, support_y, query_x, query_y, lr, lr_scalar, steps,
                                        loss, activation, order, false);
  const torch::stable::accelerator::DeviceGuard guard(support_x.get_device_index());
  const int64_t aux_mode = order == 2 ? 2 : (pb.meta_sgd ? 1 : 0);
  auto [adapted, aux] = adapt(pb, params, support_x, support_y, lr, aux_mode);
  Tensor loss_out = torch::stable::new_empty(support_x, {});
  std::vector<Tensor> grad_params = empty_like_each(params, 0);
  std::vector<Tensor> grad_lr = empty_like_each(lr, 0);
  by_dtype(support_x, [&](auto zero) {
    using T = decltype(zero);
    meta_gradient<T>(pb, qp, lr, support_x, support_y, query_x, query_y, order, adapted, aux, loss_out,
                     grad_params, grad_lr);
  });
  return {loss_out, grad_params, grad_lr};
}

void check_head_ids(const Tensor& head_ids, const Tensor& x, const Dims& d) {
  check_index_like("multihead_linear", "head_ids", head_ids, x);
  STD_TORCH_CHECK(head_ids.dim() == 1 && head_ids.size(0) == d.B, "multihead_linear: head_ids must be (", d.B,
                  ",), got ", shape_str(head_ids));
}

std::string bad_head_message(const Dims& d) {
  return "multihead_linear: head_ids holds an id outside [0, " + std::to_string(d.H) + ")";
}

Tensor multihead_linear_cuda(Tensor x, Tensor weight, Tensor bias, std::optional<Tensor> head_ids) {
  STD_TORCH_CHECK(x.is_cuda(), "multihead_linear: x must be a CUDA tensor");
  const Dims d = check_dims(x, weight, &bias);
  if (!head_ids.has_value()) return all_heads(x, weight, bias, d);
  check_head_ids(*head_ids, x, d);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const cudaStream_t stream = current_stream(x);
  const IdFlag flag = id_flag(x, true);
  Tensor out = torch::stable::new_empty(x, {d.B, d.C});
  by_dtype(x, [&](auto zero) {
    using T = decltype(zero);
    check_launch(cuda::routed_forward_cuda<T>(d.B, d.D, d.H, d.C, static_cast<const T*>(x.const_data_ptr()),
                                              static_cast<const T*>(weight.const_data_ptr()),
                                              static_cast<const T*>(bias.const_data_ptr()),
                                              head_ids->const_data_ptr<int64_t>(),
                                              static_cast<T*>(out.mutable_data_ptr()), flag.ptr(), stream),
                 "multihead_linear");
  });
  flag.check(stream, bad_head_message(d));
  return out;
}

std::tuple<Tensor, Tensor, Tensor> multihead_linear_routed_backward_cuda(Tensor grad_out, Tensor x, Tensor weight,
                                                                         Tensor head_ids) {
  STD_TORCH_CHECK(x.is_cuda(), "multihead_linear: x must be a CUDA tensor");
  const Dims d = check_dims(x, weight, nullptr);
  check_float_like("grad_out", grad_out, x);
  STD_TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == d.B && grad_out.size(1) == d.C,
                  "multihead_linear: grad_out must be (", d.B, ", ", d.C, "), got ", shape_str(grad_out));
  check_head_ids(head_ids, x, d);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const cudaStream_t stream = current_stream(x);
  const IdFlag flag = id_flag(x, true);
  Tensor dx = torch::stable::new_empty(x, {d.B, d.D});
  Tensor dw = torch::stable::new_empty(weight, {d.H, d.C, d.D});
  Tensor db = torch::stable::new_empty(weight, {d.H, d.C});
  STD_TORCH_CHECK(d.H <= 65535, "multihead_linear: the CUDA routed backward takes at most 65535 heads, got ", d.H);
  const int64_t chunks = (d.B + cuda::kRoutedChunkRows - 1) / cuda::kRoutedChunkRows;
  Tensor partial = torch::stable::new_empty(x, {d.H * chunks * d.C * (d.D + 1)});
  by_dtype(x, [&](auto zero) {
    using T = decltype(zero);
    check_launch(cuda::routed_backward_cuda<T>(
                     d.B, d.D, d.H, d.C, static_cast<const T*>(grad_out.const_data_ptr()),
                     static_cast<const T*>(x.const_data_ptr()), static_cast<const T*>(weight.const_data_ptr()),
                     head_ids.const_data_ptr<int64_t>(), static_cast<T*>(dx.mutable_data_ptr()),
                     static_cast<T*>(dw.mutable_data_ptr()), static_cast<T*>(db.mutable_data_ptr()),
                     static_cast<T*>(partial.mutable_data_ptr()), chunks, flag.ptr(), stream),
                 "multihead_linear");
  });
  flag.check(stream, bad_head_message(d));
  return {dx, dw, db};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(mtl_deploy, CUDA, m) {
  m.impl("inner_loop", TORCH_BOX(&inner_loop_cuda));
  m.impl("inner_loop_backward", TORCH_BOX(&inner_loop_backward_cuda));
  m.impl("maml_step", TORCH_BOX(&maml_step_cuda));
  m.impl("multihead_linear", TORCH_BOX(&multihead_linear_cuda));
  m.impl("multihead_linear_routed_backward", TORCH_BOX(&multihead_linear_routed_backward_cuda));
}

}  // namespace mtl_deploy
