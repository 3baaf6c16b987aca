// A C entry point running one MAML meta-step through the CUDA launchers exactly as
// csrc/cuda/ops.cpp composes them (adapt, per-task query loss and gradient, the
// reverse pass or the first-order sums), on host memory, for the emulation test.
#include <vector>

#include "shim.h"
#include "inner_loop_emulated.cpp"  // csrc/cuda/inner_loop.cu, its launches rewritten (see the test)

using namespace mtl_deploy::cuda;

namespace {

// The flat layout of `d`'s parameters, every segment at base + start with `stride`.
template <class T>
Segments<T> segments(const MlpDims& d, T* base, int64_t stride) {
  Segments<T> s;
  s.n = 2 * d.layers;
  for (int l = 0; l < d.layers; ++l) {
    s.start[2 * l] = d.w_off[l];
    s.start[2 * l + 1] = d.b_off[l];
  }
  s.start[s.n] = d.numel;
  for (int k = 0; k < s.n; ++k) {
    s.ptr[k] = base ? base + s.start[k] : nullptr;
    s.stride[k] = stride;
  }
  return s;
}

template <class T>
Segments<const T> as_const(const Segments<T>& s) {
  Segments<const T> c;
  c.n = s.n;
  for (int k = 0; k <= s.n; ++k) c.start[k] = s.start[k];
  for (int k = 0; k < s.n; ++k) {
    c.ptr[k] = s.ptr[k];
    c.stride[k] = s.stride[k];
  }
  return c;
}

}  // namespace

// Returns the bad-class flag; writes the mean query loss, the meta-gradients (flat
// nn.Linear layout) and the adapted parameters (tasks x P).
extern "C" int maml_step(int layers, const int64_t* widths, int64_t tasks, int64_t K, int64_t Kq, int64_t steps,
                         int loss, int act, const double* params, const double* lr, double lr_scalar,
                         const double* sx, const double* sy_float, const int64_t* sy_class, const double* qx,
                         const double* qy_float, const int64_t* qy_class, int order, double* loss_out,
                         double* grad_params, double* grad_lr, double* adapted) {
  MlpDims d;
  d.layers = layers;
  for (int l = 0; l <= layers; ++l) d.width[l] = widths[l];
  for (int l = 0; l < layers; ++l) {
    d.w_off[l] = d.numel;
    d.numel += widths[l + 1] * widths[l];
    d.b_off[l] = d.numel;
    d.numel += widths[l + 1];
  }
  d.K = K;
  d.loss = loss;
  d.act = act;
  MlpDims qd = d;
  qd.K = Kq;
  const int64_t P = d.numel;
  const bool meta_sgd = lr != nullptr;
  const Segments<const double> theta0 = as_const(segments(d, const_cast<double*>(params), 0));
  Segments<const double> rates;
  if (meta_sgd) rates = as_const(segments(d, const_cast<double*>(lr), 0));
  const int aux_mode = order == 2 ? 2 : (meta_sgd ? 1 : 0);
  std::vector<double> aux(aux_mode == 1 ? tasks * P : aux_mode == 2 ? tasks * steps * P : 0);
  int bad = 0;
  std::vector<double> ws(tasks * workspace_elems(d, true, meta_sgd) + tasks * workspace_elems(qd, true, meta_sgd));
  adapt_cuda<double>(d, tasks, steps, sx, sy_float, sy_class, theta0, rates, lr_scalar, segments(d, adapted, P),
                     aux_mode == 1 ? aux.data() : nullptr, aux_mode == 2 ? aux.data() : nullptr, &bad, ws.data(),
                     nullptr);
  std::vector<double> losses(tasks), v(tasks * P);
  task_loss_grad_cuda<double>(qd, tasks, qx, qy_float, qy_class, as_const(segments(d, adapted, P)), 1.0 / tasks,
                              losses.data(), v.data(), &bad, ws.data(), nullptr);
  Segments<double> loss_segment;
  loss_segment.n = 1;
  loss_segment.start[1] = 1;
  loss_segment.ptr[0] = loss_out;
  sum_tasks_cuda<double>(tasks, losses.data(), nullptr, 1.0 / tasks, loss_segment, nullptr);
  if (order == 2) {
    std::vector<double> v_out(tasks * P), dlr(meta_sgd ? tasks * P : 0);
    reverse_cuda<double>(d, tasks, steps, sx, sy_float, sy_class, rates, lr_scalar, aux.data(),
                         as_const(segments(d, v.data(), P)), v_out.data(), meta_sgd ? dlr.data() : nullptr, &bad,
                         ws.data(), nullptr);
    sum_tasks_cuda<double>(tasks, v_out.data(), nullptr, 1.0, segments(d, grad_params, 0), nullptr);
    if (meta_sgd) sum_tasks_cuda<double>(tasks, dlr.data(), nullptr, 1.0, segments(d, grad_lr, 0), nullptr);
  } else {
    sum_tasks_cuda<double>(tasks, v.data(), nullptr, 1.0, segments(d, grad_params, 0), nullptr);
    if (meta_sgd) sum_tasks_cuda<double>(tasks, aux.data(), v.data(), -1.0, segments(d, grad_lr, 0), nullptr);
  }
  return bad;
}
