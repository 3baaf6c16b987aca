// Shapes and the every-head product of mtl_deploy::multihead_linear, shared by
// the CPU and CUDA kernels: every head at once is one (B, D) x (D, H*C) product,
// handed to aten::linear (the BLAS, or cuBLAS, is unbeatable there).
#pragma once

#include <array>
#include <optional>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "checks.h"

namespace mtl_deploy {

struct Dims {
  int64_t B, D, H, C;
};

// bias is null in the backward, which does not read it.
inline Dims check_dims(const torch::stable::Tensor& x, const torch::stable::Tensor& weight,
                       const torch::stable::Tensor* bias) {
  check_float_like("x", x, x);
  check_float_like("weight", weight, x);
  STD_TORCH_CHECK(x.dim() == 2, "multihead_linear: x must be (B, D), got ", shape_str(x));
  STD_TORCH_CHECK(weight.dim() == 3 && weight.size(2) == x.size(1),
                  "multihead_linear: weight must be (H, C, ", x.size(1), "), got ",
                  shape_str(weight));
  if (bias) {
    check_float_like("bias", *bias, x);
    STD_TORCH_CHECK(bias->dim() == 2 && bias->size(0) == weight.size(0) &&
                        bias->size(1) == weight.size(1),
                    "multihead_linear: bias must be (", weight.size(0), ", ", weight.size(1),
                    "), got ", shape_str(*bias));
  }
  return Dims{x.size(0), x.size(1), weight.size(0), weight.size(1)};
}

// (B, D) x (H*C, D)^T + (H*C) -> (B, H, C): one concatenated Linear.
inline torch::stable::Tensor all_heads(const torch::stable::Tensor& x, const torch::stable::Tensor& weight,
                                       const torch::stable::Tensor& bias, const Dims& d) {
  torch::stable::Tensor w2 = torch::stable::view(weight, {d.H * d.C, d.D});
  std::optional<torch::stable::Tensor> b2 = torch::stable::view(bias, {d.H * d.C});
  std::array<StableIValue, 3> stack{torch::stable::detail::from(x), torch::stable::detail::from(w2),
                                    torch::stable::detail::from(b2)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::linear", "", stack.data(), TORCH_ABI_VERSION));
  torch::stable::Tensor flat = torch::stable::detail::to<torch::stable::Tensor>(stack[0]);
  return torch::stable::view(flat, {d.B, d.H, d.C});
}

}  // namespace mtl_deploy
