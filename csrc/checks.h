// Argument checks shared by the CPU kernels: every failure throws (surfacing
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

// A contiguous float32/float64 CPU tensor of the given dtype.
inline void check_float_cpu(const std::string& name, const torch::stable::Tensor& t,
                            torch::headeronly::ScalarType dtype) {
  using torch::headeronly::ScalarType;
  STD_TORCH_CHECK(t.is_cpu(), name, " must be a CPU tensor");
  STD_TORCH_CHECK(t.scalar_type() == ScalarType::Float || t.scalar_type() == ScalarType::Double,
                  name, " must be float32 or float64");
  STD_TORCH_CHECK(t.scalar_type() == dtype, name, " must have the same dtype as x");
  STD_TORCH_CHECK(t.is_contiguous(), name, " must be contiguous; call .contiguous()");
}

}  // namespace mtl_deploy
