// CPU kernels of mtl_deploy::inner_loop and mtl_deploy::inner_loop_backward:
// T tasks x S steps of SGD on an MLP in one call (forward, loss gradient,
// backward and update fused per task, tasks spread over torch's threads), and
// the exact reverse pass through those steps (Hessian-vector products plus
// the Meta-SGD learning-rate gradient).  Arguments are checked here too, so a
// direct torch.ops call with bad input raises instead of reading out of bounds.
#include <algorithm>
#include <string>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "interleaved.h"
#include "mlp.h"
#include "problem.h"

namespace mtl_deploy {

using torch::stable::Tensor;

namespace {

template <typename T>
std::vector<const T*> const_ptrs(const std::vector<Tensor>& ts) {
  std::vector<const T*> p;
  for (const Tensor& t : ts) p.push_back(t.const_data_ptr<T>());
  return p;
}

template <typename T>
std::vector<T*> mutable_ptrs(const std::vector<Tensor>& ts) {
  std::vector<T*> p;
  for (const Tensor& t : ts) p.push_back(t.mutable_data_ptr<T>());
  return p;
}

// The tensors' elements one after another: the concatenated nn.Linear layout.
template <typename U>
std::vector<U> concat(const std::vector<Tensor>& ts) {
  std::vector<U> out;
  for (const Tensor& t : ts) {
    const U* p = t.const_data_ptr<U>();
    out.insert(out.end(), p, p + t.numel());
  }
  return out;
}

// Shared (task-independent) inputs in internal layout: theta_0 (also in the
// concatenated nn.Linear layout, "ext") and the lr.
template <typename T>
struct Shared {
  std::vector<T> theta0, theta0_ext, lr;
  Shared(const Problem& pb, const std::vector<Tensor>& params,
         const std::vector<Tensor>& lr_list)
      : theta0(pb.shape.numel), lr(pb.meta_sgd ? pb.shape.numel : 0) {
    gather_internal<T>(pb.shape, const_ptrs<T>(params), 0, theta0.data());
    theta0_ext = concat<T>(params);
    if (pb.meta_sgd) gather_internal<T>(pb.shape, const_ptrs<T>(lr_list), 0, lr.data());
  }
  // out = base - lr * v (elementwise lr for Meta-SGD), in one pass; out may
  // alias base.
  void step(const Problem& pb, const T* base, const T* v, T* out) const {
    const T a = static_cast<T>(pb.lr_scalar);
    const int64_t P = pb.shape.numel;
    const T* l = lr.data();
    if (pb.meta_sgd)
      for (int64_t i = 0; i < P; ++i) out[i] = base[i] - l[i] * v[i];
    else
      for (int64_t i = 0; i < P; ++i) out[i] = base[i] - a * v[i];
  }
};

// One task's loss gradient at theta (both layouts; grad_ext may be null);
// leaves the activations in `task`.
template <typename T>
void task_grad(const Problem& pb, MlpTask<T>& task, const T* theta, const T* ext,
               const T* yf, const int64_t* yc, int64_t t, T* grad, T* grad_ext) {
  const int64_t out = pb.shape.width.back();
  task.forward(theta, ext);
  task.loss_grad(yf ? yf + t * pb.K * out : nullptr, yc ? yc + t * pb.K : nullptr);
  task.backward(theta, ext, grad, grad_ext);
}

template <typename T>
void forward_kernel(const Problem& pb, const Shared<T>& sh, const Tensor& x,
                    const Tensor& y, int64_t aux_mode,
                    const std::vector<Tensor>& outs, const Tensor& aux) {
  const int64_t P = pb.shape.numel, S = pb.steps;
  const T* xp = x.const_data_ptr<T>();
  const T* yf = pb.loss == Loss::Mse ? y.const_data_ptr<T>() : nullptr;
  const int64_t* yc = pb.loss == Loss::Mse ? nullptr : y.const_data_ptr<int64_t>();
  T* auxp = aux_mode == 0 ? nullptr : aux.mutable_data_ptr<T>();
  const std::vector<T*> outp = mutable_ptrs<T>(outs);
  torch::stable::parallel_for(0, pb.T, 1, [&](int64_t begin, int64_t end) {
    MlpTask<T> task(pb.shape, pb.K, pb.act, pb.loss);
    // grad, grad_ext, theta, theta_ext (+ slack).  After each update the
    // nn.Linear copy is rebuilt by transposing, which measured cheaper than
    // computing every weight gradient in both layouts.
    std::vector<T> work(4 * P + kSlack);
    T* grad = work.data();
    T* grad_ext = grad + P;
    T* theta = grad_ext + P;
    T* theta_ext = theta + P;
    const int64_t in = pb.shape.width.front();
    for (int64_t t = begin; t < end; ++t) {
      task.load_x(xp + t * pb.K * in);
      std::copy(sh.theta0.begin(), sh.theta0.end(), theta);
      std::copy(sh.theta0_ext.begin(), sh.theta0_ext.end(), theta_ext);
      // (T, P) gradient sums in the concatenated nn.Linear layout, for the
      // first-order lr gradient computed in Python.
      T* gsum = aux_mode == 1 ? auxp + t * P : nullptr;
      if (gsum) std::fill(gsum, gsum + P, T(0));
      for (int64_t s = 0; s < S; ++s) {
        if (aux_mode == 2) std::copy(theta, theta + P, auxp + (t * S + s) * P);
        task_grad<T>(pb, task, theta, theta_ext, yf, yc, t, grad, gsum ? grad_ext : nullptr);
        if (gsum)
          for (int64_t i = 0; i < P; ++i) gsum[i] += grad_ext[i];
        sh.step(pb, theta, grad, theta);
        task.to_external(theta, theta_ext);
      }
      for (size_t i = 0; i < outp.size(); ++i) {
        const int64_t n = outs[i].numel() / pb.T;
        const int64_t off = i % 2 ? pb.shape.b_off[i / 2] : pb.shape.w_off[i / 2];
        std::copy(theta_ext + off, theta_ext + off + n, outp[i] + t * n);
      }
    }
  });
}

// Reverse through the unrolled steps: v <- v - H(theta_s)(lr * v) and
// dlr -= grad(theta_s) * v, from s = S-1 down to 0, per task; then sums over tasks.
template <typename T>
void backward_kernel(const Problem& pb, const Shared<T>& sh, const Tensor& x,
                     const Tensor& y, const Tensor& traj,
                     const std::vector<const T*>& gop,
                     const std::vector<Tensor>& grad_params,
                     const std::vector<Tensor>& grad_lr) {
  const int64_t P = pb.shape.numel, S = pb.steps, T_ = pb.T;
  const T* xp = x.const_data_ptr<T>();
  const T* yf = pb.loss == Loss::Mse ? y.const_data_ptr<T>() : nullptr;
  const int64_t* yc = pb.loss == Loss::Mse ? nullptr : y.const_data_ptr<int64_t>();
  const T* tp = traj.const_data_ptr<T>();
  std::vector<T> per_task(2 * T_ * P);  // (T, P) param grads, then (T, P) lr grads
  T* vs = per_task.data();
  T* lrs = vs + T_ * P;
  torch::stable::parallel_for(0, T_, 1, [&](int64_t begin, int64_t end) {
    MlpTask<T> task(pb.shape, pb.K, pb.act, pb.loss);
    // grad, H u, theta, theta_ext, u = -lr * v (+ slack)
    std::vector<T> work(5 * P + kSlack);
    const std::vector<T> zeros(P, T(0));
    T* grad = work.data();
    T* hu = grad + P;
    T* theta = hu + P;
    T* theta_ext = theta + P;
    T* u = theta_ext + P;
    const int64_t in = pb.shape.width.front();
    for (int64_t t = begin; t < end; ++t) {
      T* v = vs + t * P;
      T* dlr = lrs + t * P;
      task.load_x(xp + t * pb.K * in);
      gather_internal<T>(pb.shape, gop, t, v);
      std::fill(dlr, dlr + P, T(0));
      for (int64_t s = S - 1; s >= 0; --s) {
        const T* saved = tp + (t * S + s) * P;
        std::copy(saved, saved + P, theta);
        task.to_external(theta, theta_ext);
        task_grad<T>(pb, task, theta, theta_ext, yf, yc, t, grad, nullptr);
        if (pb.meta_sgd)
          for (int64_t i = 0; i < P; ++i) dlr[i] -= grad[i] * v[i];
        sh.step(pb, zeros.data(), v, u);  // u = -lr * v
        task.hvp(theta, theta_ext, u, hu);
        for (int64_t i = 0; i < P; ++i) v[i] += hu[i];  // v - H (lr v), as u = -lr v
      }
    }
  });
  // A fixed-order sum over tasks keeps the result independent of the threads.
  for (int64_t t = 1; t < T_; ++t)
    for (int64_t i = 0; i < P; ++i) {
      vs[i] += vs[t * P + i];
      lrs[i] += lrs[t * P + i];
    }
  scatter_external<T>(pb.shape, vs, mutable_ptrs<T>(grad_params), 0);
  if (pb.meta_sgd) scatter_external<T>(pb.shape, lrs, mutable_ptrs<T>(grad_lr), 0);
}

// The adapted parameters (T, *p) of every task, and what aux_mode asks to save.
std::tuple<std::vector<Tensor>, Tensor> adapt(const Problem& pb, const std::vector<Tensor>& params,
                                              const Tensor& x, const Tensor& y,
                                              const std::vector<Tensor>& lr, int64_t aux_mode) {
  auto [outs, aux] = adapt_outputs(pb, params, x, aux_mode);
  const bool f32 = x.scalar_type() == torch::headeronly::ScalarType::Float;
  if (f32 && aux_mode == 0 && pb.T > 1 && (pb.act == Act::Relu || pb.shape.layers == 1)) {
    // Plain adaptation of several tasks: one task per SIMD lane (interleaved.h).
    const std::vector<float> theta0 = concat<float>(params), lr_ext = concat<float>(lr);
    const bool mse = pb.loss == Loss::Mse;
    adapt_interleaved(pb.shape, pb.T, pb.K, pb.steps, x.const_data_ptr<float>(),
                      mse ? y.const_data_ptr<float>() : nullptr, mse ? nullptr : y.const_data_ptr<int64_t>(),
                      theta0.data(), pb.meta_sgd ? lr_ext.data() : nullptr, static_cast<float>(pb.lr_scalar),
                      mutable_ptrs<float>(outs));
  } else if (f32)
    forward_kernel<float>(pb, Shared<float>(pb, params, lr), x, y, aux_mode, outs, aux);
  else
    forward_kernel<double>(pb, Shared<double>(pb, params, lr), x, y, aux_mode, outs, aux);
  return {outs, aux};
}

// After adaptation: the mean query loss over tasks and its gradient with respect to
// the meta-parameters (and Meta-SGD rates), exactly (order 2, reverse through the
// saved trajectory) or first-order (each step's Jacobian the identity).
template <typename T>
void meta_gradient(const Problem& pb, const Problem& qp, const std::vector<Tensor>& params,
                   const std::vector<Tensor>& lr, const Tensor& sx, const Tensor& sy, const Tensor& qx,
                   const Tensor& qy, int64_t order, const std::vector<Tensor>& adapted, const Tensor& aux,
                   Tensor& loss_out, const std::vector<Tensor>& grad_params,
                   const std::vector<Tensor>& grad_lr) {
  const int64_t P = pb.shape.numel, T_ = pb.T, in = pb.shape.width.front(), out = pb.shape.width.back();
  const T* xp = qx.const_data_ptr<T>();
  const T* yf = qp.loss == Loss::Mse ? qy.const_data_ptr<T>() : nullptr;
  const int64_t* yc = qp.loss == Loss::Mse ? nullptr : qy.const_data_ptr<int64_t>();
  const std::vector<const T*> ap = const_ptrs<T>(adapted);
  std::vector<T> v(T_ * P), losses(T_);  // (T, P) d(mean query loss)/d theta_t, internal layout
  torch::stable::parallel_for(0, T_, 1, [&](int64_t begin, int64_t end) {
    MlpTask<T> task(qp.shape, qp.K, qp.act, qp.loss);
    std::vector<T> work(2 * P + kSlack);
    T* theta = work.data();
    T* ext = theta + P;
    for (int64_t t = begin; t < end; ++t) {
      gather_internal<T>(pb.shape, ap, t, theta);
      task.to_external(theta, ext);
      task.load_x(xp + t * qp.K * in);
      task_grad<T>(qp, task, theta, ext, yf, yc, t, v.data() + t * P, nullptr);
      losses[t] = task.loss_value(yf ? yf + t * qp.K * out : nullptr, yc ? yc + t * qp.K : nullptr);
      for (int64_t i = 0; i < P; ++i) v[t * P + i] /= static_cast<T>(T_);
    }
  });
  T total = 0;  // fixed order: the same result for any thread count
  for (int64_t t = 0; t < T_; ++t) total += losses[t];
  *loss_out.mutable_data_ptr<T>() = total / static_cast<T>(T_);
  if (order == 2) {
    std::vector<std::vector<T>> per_param;  // v in (T, *p) nn.Linear arrays, as the backward reads it
    std::vector<T*> dst;
    for (const Tensor& p : params) {
      per_param.emplace_back(T_ * p.numel());
      dst.push_back(per_param.back().data());
    }
    for (int64_t t = 0; t < T_; ++t) scatter_external<T>(pb.shape, v.data() + t * P, dst, t);
    std::vector<const T*> gop(dst.begin(), dst.end());
    backward_kernel<T>(pb, Shared<T>(pb, params, lr), sx, sy, aux, gop, grad_params, grad_lr);
    return;
  }
  std::vector<T> sum(P, T(0)), dlr(P, T(0)), v_ext(P + kSlack);
  const T* gsum = pb.meta_sgd ? aux.const_data_ptr<T>() : nullptr;  // (T, P) nn.Linear layout
  MlpTask<T> layout(pb.shape, 1, pb.act, pb.loss);
  for (int64_t t = 0; t < T_; ++t) {
    for (int64_t i = 0; i < P; ++i) sum[i] += v[t * P + i];
    if (!gsum) continue;
    layout.to_external(v.data() + t * P, v_ext.data());
    for (int64_t i = 0; i < P; ++i) dlr[i] -= gsum[t * P + i] * v_ext[i];
  }
  scatter_external<T>(pb.shape, sum.data(), mutable_ptrs<T>(grad_params), 0);
  int64_t off = 0;  // dlr is in the concatenated nn.Linear layout
  for (const Tensor& g : grad_lr) {
    T* o = g.mutable_data_ptr<T>();
    std::copy(dlr.begin() + off, dlr.begin() + off + g.numel(), o);
    off += g.numel();
  }
}

}  // namespace

std::tuple<std::vector<Tensor>, Tensor> inner_loop_cpu(
    std::vector<Tensor> params, Tensor x, Tensor y, std::vector<Tensor> lr,
    double lr_scalar, int64_t steps, int64_t loss, int64_t activation,
    int64_t aux_mode) {
  STD_TORCH_CHECK(x.is_cpu(), "inner_loop: x must be a CPU tensor");
  const Problem pb = check_problem(params, x, y, lr, lr_scalar, steps, loss, activation, true);
  return adapt(pb, params, x, y, lr, aux_mode);
}

std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> maml_step_cpu(
    std::vector<Tensor> params, Tensor support_x, Tensor support_y, Tensor query_x, Tensor query_y,
    std::vector<Tensor> lr, double lr_scalar, int64_t steps, int64_t loss, int64_t activation,
    int64_t order) {
  STD_TORCH_CHECK(support_x.is_cpu(), "maml_step: support_x must be a CPU tensor");
  const auto [pb, qp] = check_maml_args(params, support_x, support_y, query_x, query_y, lr, lr_scalar,
                                        steps, loss, activation, order, true);
  const int64_t aux_mode = order == 2 ? 2 : (pb.meta_sgd ? 1 : 0);
  auto [adapted, aux] = adapt(pb, params, support_x, support_y, lr, aux_mode);
  Tensor loss_out = torch::stable::new_empty(support_x, {});
  std::vector<Tensor> grad_params = empty_like_each(params, 0);
  std::vector<Tensor> grad_lr = empty_like_each(lr, 0);
  if (support_x.scalar_type() == torch::headeronly::ScalarType::Float)
    meta_gradient<float>(pb, qp, params, lr, support_x, support_y, query_x, query_y, order, adapted, aux,
                         loss_out, grad_params, grad_lr);
  else
    meta_gradient<double>(pb, qp, params, lr, support_x, support_y, query_x, query_y, order, adapted, aux,
                          loss_out, grad_params, grad_lr);
  return {loss_out, grad_params, grad_lr};
}

std::tuple<std::vector<Tensor>, std::vector<Tensor>> inner_loop_backward_cpu(
    std::vector<Tensor> params, Tensor x, Tensor y, std::vector<Tensor> lr,
    double lr_scalar, int64_t steps, int64_t loss, int64_t activation,
    Tensor trajectory, std::vector<Tensor> grad_adapted) {
  STD_TORCH_CHECK(x.is_cpu(), "inner_loop_backward: x must be a CPU tensor");
  const Problem pb = check_problem(params, x, y, lr, lr_scalar, steps, loss, activation, true);
  check_backward_args(pb, params, x, trajectory, grad_adapted);
  std::vector<Tensor> grad_params = empty_like_each(params, 0);
  std::vector<Tensor> grad_lr = empty_like_each(lr, 0);
  if (x.scalar_type() == torch::headeronly::ScalarType::Float)
    backward_kernel<float>(pb, Shared<float>(pb, params, lr), x, y, trajectory,
                           const_ptrs<float>(grad_adapted), grad_params, grad_lr);
  else
    backward_kernel<double>(pb, Shared<double>(pb, params, lr), x, y, trajectory,
                            const_ptrs<double>(grad_adapted), grad_params, grad_lr);
  return {grad_params, grad_lr};
}

STABLE_TORCH_LIBRARY_IMPL(mtl_deploy, CPU, m) {
  m.impl("inner_loop", TORCH_BOX(&inner_loop_cpu));
  m.impl("inner_loop_backward", TORCH_BOX(&inner_loop_backward_cpu));
  m.impl("maml_step", TORCH_BOX(&maml_step_cpu));
}

}  // namespace mtl_deploy
