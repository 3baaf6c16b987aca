// The arguments of mtl_deploy::inner_loop, inner_loop_backward and maml_step,
// validated once for the CPU and the CUDA kernels alike: every failure throws
// (RuntimeError in Python) naming the argument and the shape it got, so a
// direct torch.ops call with bad input never reads out of bounds.
#pragma once

#include <string>
#include <vector>

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "checks.h"
#include "mlp.h"

namespace mtl_deploy {

// Everything a kernel needs to know about one call.
struct Problem {
  MlpShape shape;
  int64_t T, K, steps;
  Loss loss;
  Act act;
  bool meta_sgd;
  double lr_scalar;
};

// read_class_ids: whether y's class ids can be range-checked here (CPU memory);
// the CUDA kernels check them on the device instead.
inline Problem check_problem(const std::vector<torch::stable::Tensor>& params,
                             const torch::stable::Tensor& x, const torch::stable::Tensor& y,
                             const std::vector<torch::stable::Tensor>& lr, double lr_scalar,
                             int64_t steps, int64_t loss, int64_t activation,
                             bool read_class_ids) {
  STD_TORCH_CHECK(!params.empty() && params.size() % 2 == 0,
                  "inner_loop: params must be [W1, b1, W2, b2, ...], got ",
                  params.size(), " tensors");
  STD_TORCH_CHECK(loss == 0 || loss == 1, "inner_loop: loss code must be 0 (mse) or 1 (cross_entropy)");
  STD_TORCH_CHECK(activation == 0 || activation == 1,
                  "inner_loop: activation code must be 0 (relu) or 1 (tanh)");
  STD_TORCH_CHECK(steps >= 0, "inner_loop: steps must be >= 0, got ", steps);
  check_float_like("x", x, x);
  STD_TORCH_CHECK(x.dim() == 3, "inner_loop: x must be (T, K, in), got ", shape_str(x));
  std::vector<int64_t> widths{x.size(2)};
  for (size_t l = 0; l < params.size() / 2; ++l) {
    const torch::stable::Tensor& w = params[2 * l];
    const torch::stable::Tensor& b = params[2 * l + 1];
    const std::string wn = "params[" + std::to_string(2 * l) + "]";
    const std::string bn = "params[" + std::to_string(2 * l + 1) + "]";
    check_float_like(wn, w, x);
    check_float_like(bn, b, x);
    STD_TORCH_CHECK(w.dim() == 2 && w.size(1) == widths.back(), "inner_loop: ", wn,
                    " must be (out, ", widths.back(), "), got ", shape_str(w));
    STD_TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0), "inner_loop: ", bn,
                    " must be (", w.size(0), ",), got ", shape_str(b));
    widths.push_back(w.size(0));
  }
  const int64_t T = x.size(0), K = x.size(1), out = widths.back();
  STD_TORCH_CHECK(T >= 1 && K >= 1, "inner_loop: x must have T >= 1 tasks and K >= 1 examples, got ",
                  shape_str(x));
  if (loss == 0) {
    check_float_like("y", y, x);
    STD_TORCH_CHECK(y.dim() == 3 && y.size(0) == T && y.size(1) == K && y.size(2) == out,
                    "inner_loop: y must be (", T, ", ", K, ", ", out, ") for mse, got ", shape_str(y));
  } else {
    check_index_like("inner_loop", "y (class ids for cross_entropy)", y, x);
    STD_TORCH_CHECK(y.dim() == 2 && y.size(0) == T && y.size(1) == K,
                    "inner_loop: y must be (", T, ", ", K, ") for cross_entropy, got ", shape_str(y));
    if (read_class_ids) {
      const int64_t* c = y.const_data_ptr<int64_t>();
      for (int64_t i = 0; i < T * K; ++i)
        STD_TORCH_CHECK(c[i] >= 0 && c[i] < out, "inner_loop: y holds class id ", c[i],
                        ", expected 0 <= id < ", out);
    }
  }
  STD_TORCH_CHECK(lr.empty() || lr.size() == params.size(),
                  "inner_loop: lr must be a float or one tensor per parameter (", params.size(),
                  "), got ", lr.size());
  for (size_t i = 0; i < lr.size(); ++i) {
    const std::string n = "lr[" + std::to_string(i) + "]";
    check_float_like(n, lr[i], x);
    STD_TORCH_CHECK(same_shape(lr[i], params[i]), "inner_loop: ", n, " must be shaped like params[",
                    i, "] ", shape_str(params[i]), ", got ", shape_str(lr[i]));
  }
  return Problem{MlpShape(widths), T, K, steps, static_cast<Loss>(loss),
                 static_cast<Act>(activation), !lr.empty(), lr_scalar};
}

// The saved trajectory and the incoming gradients of inner_loop_backward.
inline void check_backward_args(const Problem& pb, const std::vector<torch::stable::Tensor>& params,
                                const torch::stable::Tensor& x, const torch::stable::Tensor& trajectory,
                                const std::vector<torch::stable::Tensor>& grad_adapted) {
  STD_TORCH_CHECK(trajectory.dim() == 3 && trajectory.size(0) == pb.T &&
                      trajectory.size(1) == pb.steps && trajectory.size(2) == pb.shape.numel,
                  "inner_loop_backward: trajectory must be (", pb.T, ", ", pb.steps, ", ",
                  pb.shape.numel, "), got ", shape_str(trajectory));
  check_float_like("trajectory", trajectory, x);
  STD_TORCH_CHECK(grad_adapted.size() == params.size(),
                  "inner_loop_backward: expected one gradient per parameter");
  for (size_t i = 0; i < params.size(); ++i) {
    check_float_like("grad_adapted", grad_adapted[i], x);
    STD_TORCH_CHECK(grad_adapted[i].dim() == params[i].dim() + 1 &&
                        grad_adapted[i].size(0) == pb.T &&
                        grad_adapted[i].numel() == pb.T * params[i].numel(),
                    "inner_loop_backward: grad_adapted[", i, "] must be (T, *params[", i,
                    "].shape), got ", shape_str(grad_adapted[i]));
  }
}

// The support and query problems of maml_step.
inline std::pair<Problem, Problem> check_maml_args(
    const std::vector<torch::stable::Tensor>& params, const torch::stable::Tensor& support_x,
    const torch::stable::Tensor& support_y, const torch::stable::Tensor& query_x,
    const torch::stable::Tensor& query_y, const std::vector<torch::stable::Tensor>& lr,
    double lr_scalar, int64_t steps, int64_t loss, int64_t activation, int64_t order,
    bool read_class_ids) {
  STD_TORCH_CHECK(order == 1 || order == 2, "maml_step: order must be 1 (first-order) or 2 (exact), got ",
                  order);
  Problem pb = check_problem(params, support_x, support_y, lr, lr_scalar, steps, loss, activation,
                             read_class_ids);
  STD_TORCH_CHECK(same_device(query_x, support_x), "maml_step: query_x must be on support_x's device");
  Problem qp = check_problem(params, query_x, query_y, lr, lr_scalar, steps, loss, activation,
                             read_class_ids);
  STD_TORCH_CHECK(qp.T == pb.T, "maml_step: query_x must hold the same ", pb.T,
                  " tasks as support_x, got ", shape_str(query_x));
  return {pb, qp};
}

// Uninitialised tensors shaped like each of ts, with a leading dimension `lead`
// unless it is 0 (on the same device and with the same dtype).
inline std::vector<torch::stable::Tensor> empty_like_each(const std::vector<torch::stable::Tensor>& ts, int64_t lead) {
  std::vector<torch::stable::Tensor> out;
  for (const torch::stable::Tensor& t : ts) {
    std::vector<int64_t> sz;
    if (lead > 0) sz.push_back(lead);
    for (int64_t d = 0; d < t.dim(); ++d) sz.push_back(t.size(d));
    out.push_back(torch::stable::new_empty(t, sz));
  }
  return out;
}

// The adapted parameters (T, *p) and the aux tensor aux_mode asks to save: nothing,
// per-task gradient sums (T, P) or the trajectory (T, steps, P), on x's device.
inline std::pair<std::vector<torch::stable::Tensor>, torch::stable::Tensor> adapt_outputs(
    const Problem& pb, const std::vector<torch::stable::Tensor>& params, const torch::stable::Tensor& x,
    int64_t aux_mode) {
  STD_TORCH_CHECK(aux_mode >= 0 && aux_mode <= 2,
                  "inner_loop: aux_mode must be 0 (none), 1 (gradient sums) or 2 (trajectory)");
  std::vector<int64_t> aux_shape{0};
  if (aux_mode == 1) aux_shape = {pb.T, pb.shape.numel};
  if (aux_mode == 2) aux_shape = {pb.T, pb.steps, pb.shape.numel};
  return {empty_like_each(params, pb.T), torch::stable::new_empty(x, aux_shape)};
}

// run(float{}) or run(double{}), as x's dtype is (the checks allow only these two).
template <typename Run>
void by_dtype(const torch::stable::Tensor& x, Run&& run) {
  if (x.scalar_type() == torch::headeronly::ScalarType::Float)
    run(0.f);
  else
    run(0.0);
}

}  // namespace mtl_deploy
