// Argument checks shared by the CPU and CUDA kernels: every failure throws (surfacing
// in Python as RuntimeError) with the argument's name and the shape it got.
#pragma once

#include <string>

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

namespace mtl_deploy {

inline std::string shape_str(const torch::stable::Tensor& t) {
  std::string s = "(";
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(t.size(d));
  }
  return s + (t.dim() == 1 ? ",)" : ")");
}

inline bool same_shape(const torch::stable::Tensor& a, const torch::stable::Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) != b.size(d)) return false;
  return true;
}

inline bool same_device(const torch::stable::Tensor& a, const torch::stable::Tensor& b) {
  return a.is_cpu() == b.is_cpu() && a.is_cuda() == b.is_cuda() &&
         (a.is_cpu() || a.get_device_index() == b.get_device_index());
}

// A contiguous float32/float64 tensor with x's dtype, on x's device (x itself
// is checked against the device its kernel runs on by the kernel's caller).
inline void check_float_like(const std::string& name, const torch::stable::Tensor& t,
                             const torch::stable::Tensor& x) {
  using torch::headeronly::ScalarType;
  STD_TORCH_CHECK(same_device(t, x), name, " must be on the same device as x (",
                  x.is_cpu() ? "cpu" : "cuda:" + std::to_string(x.get_device_index()), ")");
  STD_TORCH_CHECK(t.scalar_type() == ScalarType::Float || t.scalar_type() == ScalarType::Double,
                  name, " must be float32 or float64");
  STD_TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, " must have the same dtype as x");
  STD_TORCH_CHECK(t.is_contiguous(), name, " must be contiguous; call .contiguous()");
}

// A contiguous int64 index tensor on x's device.
inline void check_index_like(const std::string& op, const std::string& name,
                             const torch::stable::Tensor& t, const torch::stable::Tensor& x) {
  STD_TORCH_CHECK(same_device(t, x) && t.scalar_type() == torch::headeronly::ScalarType::Long,
                  op, ": ", name, " must be an int64 tensor on the same device as x");
  STD_TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

}  // namespace mtl_deploy
