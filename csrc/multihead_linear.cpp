// CPU kernels of mtl_deploy::multihead_linear and its routed backward.
// Every head at once is one (B, D) x (D, H*C) product, handed to aten::linear
// (the BLAS is unbeatable there).  Routed rows are grouped per head with a
// counting sort, then each head multiplies its own rows while its weight
// block sits in L1: a grouped GEMM, with no mask and no gathered copy.
#include <algorithm>
#include <array>
#include <optional>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include "checks.h"
#include "small_gemm.h"

namespace mtl_deploy {

using torch::stable::Tensor;

namespace {

struct Dims {
  int64_t B, D, H, C;
};

// bias is null in the backward, which does not read it.
Dims check_dims(const Tensor& x, const Tensor& weight, const Tensor* bias) {
  const auto dtype = x.scalar_type();
  check_float_cpu("x", x, dtype);
  check_float_cpu("weight", weight, dtype);
  STD_TORCH_CHECK(x.dim() == 2, "multihead_linear: x must be (B, D), got ", shape_str(x));
  STD_TORCH_CHECK(weight.dim() == 3 && weight.size(2) == x.size(1),
                  "multihead_linear: weight must be (H, C, ", x.size(1), "), got ",
                  shape_str(weight));
  if (bias) {
    check_float_cpu("bias", *bias, dtype);
    STD_TORCH_CHECK(bias->dim() == 2 && bias->size(0) == weight.size(0) &&
                        bias->size(1) == weight.size(1),
                    "multihead_linear: bias must be (", weight.size(0), ", ", weight.size(1),
                    "), got ", shape_str(*bias));
  }
  return Dims{x.size(0), x.size(1), weight.size(0), weight.size(1)};
}

// Rows of each head, contiguous: rows[start[h]:start[h+1]] use head h.
struct Groups {
  std::vector<int64_t> start, rows;
};

Groups group_rows(const Tensor& head_ids, const Dims& d) {
  STD_TORCH_CHECK(head_ids.is_cpu() && head_ids.scalar_type() == torch::headeronly::ScalarType::Long,
                  "multihead_linear: head_ids must be an int64 CPU tensor");
  STD_TORCH_CHECK(head_ids.is_contiguous(), "multihead_linear: head_ids must be contiguous");
  STD_TORCH_CHECK(head_ids.dim() == 1 && head_ids.size(0) == d.B,
                  "multihead_linear: head_ids must be (", d.B, ",), got ", shape_str(head_ids));
  const int64_t* id = head_ids.const_data_ptr<int64_t>();
  Groups g{std::vector<int64_t>(d.H + 1, 0), std::vector<int64_t>(d.B)};
  for (int64_t i = 0; i < d.B; ++i) {
    STD_TORCH_CHECK(id[i] >= 0 && id[i] < d.H, "multihead_linear: head_ids holds ", id[i],
                    ", expected 0 <= id < ", d.H);
    ++g.start[id[i] + 1];
  }
  for (int64_t h = 0; h < d.H; ++h) g.start[h + 1] += g.start[h];
  std::vector<int64_t> fill(g.start.begin(), g.start.end() - 1);
  for (int64_t i = 0; i < d.B; ++i) g.rows[fill[id[i]]++] = i;
  return g;
}

// out[r] = b_h + W_h x[r] for the rows of each head, four rows at a time so
// every load of W_h feeds four dot products (small_gemm.h's dot tiles).
template <typename T>
void routed_forward(const Dims& d, const Groups& g, const T* x, const T* w, const T* b,
                    T* out) {
  torch::stable::parallel_for(0, d.H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const T* wh = w + h * d.C * d.D;  // (C, D)
      const T* bh = b + h * d.C;
      const T* xr[4];
      T* orow[4];
      int64_t r = g.start[h];
      auto gather = [&](int n) {
        for (int i = 0; i < n; ++i) {
          xr[i] = x + g.rows[r + i] * d.D;
          orow[i] = out + g.rows[r + i] * d.C;
          std::copy(bh, bh + d.C, orow[i]);
        }
      };
      for (; r + 4 <= g.start[h + 1]; r += 4) {
        gather(4);
        dot_rows<T, 4>(d.C, d.D, xr, wh, d.D, orow, true);
      }
      for (; r < g.start[h + 1]; ++r) {
        gather(1);
        dot_rows<T, 1>(d.C, d.D, xr, wh, d.D, orow, true);
      }
    }
  });
}

// Per head h: dx[i] = g[i] W_h, dW_h = sum_i g[i]^T x[i], db_h = sum_i g[i].
template <typename T>
void routed_backward(const Dims& d, const Groups& g, const T* go, const T* x, const T* w,
                     T* dx, T* dw, T* db) {
  torch::stable::parallel_for(0, d.H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const T* wh = w + h * d.C * d.D;
      T* dwh = dw + h * d.C * d.D;
      T* dbh = db + h * d.C;
      std::fill(dwh, dwh + d.C * d.D, T(0));
      std::fill(dbh, dbh + d.C, T(0));
      for (int64_t r = g.start[h]; r < g.start[h + 1]; ++r) {
        const int64_t i = g.rows[r];
        const T* gi = go + i * d.C;
        const T* xi = x + i * d.D;
        T* dxi = dx + i * d.D;
        std::fill(dxi, dxi + d.D, T(0));
        for (int64_t c = 0; c < d.C; ++c) {
          const T gc = gi[c];
          const T* wc = wh + c * d.D;
          T* dwc = dwh + c * d.D;
#pragma omp simd
          for (int64_t k = 0; k < d.D; ++k) {
            dxi[k] += gc * wc[k];
            dwc[k] += gc * xi[k];
          }
          dbh[c] += gc;
        }
      }
    }
  });
}

}  // namespace

Tensor multihead_linear_cpu(Tensor x, Tensor weight, Tensor bias,
                            std::optional<Tensor> head_ids) {
  const Dims d = check_dims(x, weight, &bias);
  if (!head_ids.has_value()) {
    // (B, D) x (H*C, D)^T + (H*C) -> (B, H, C): one concatenated Linear.
    Tensor w2 = torch::stable::view(weight, {d.H * d.C, d.D});
    std::optional<Tensor> b2 = torch::stable::view(bias, {d.H * d.C});
    std::array<StableIValue, 3> stack{torch::stable::detail::from(x),
                                      torch::stable::detail::from(w2),
                                      torch::stable::detail::from(b2)};
    STABLE_TORCH_ERROR_CODE_CHECK(
        torch_call_dispatcher("aten::linear", "", stack.data(), TORCH_ABI_VERSION));
    Tensor flat = torch::stable::detail::to<Tensor>(stack[0]);
    return torch::stable::view(flat, {d.B, d.H, d.C});
  }
  const Groups g = group_rows(*head_ids, d);
  Tensor out = torch::stable::new_empty(x, {d.B, d.C});  // (B, C)
  if (x.scalar_type() == torch::headeronly::ScalarType::Float)
    routed_forward<float>(d, g, x.const_data_ptr<float>(), weight.const_data_ptr<float>(),
                          bias.const_data_ptr<float>(), out.mutable_data_ptr<float>());
  else
    routed_forward<double>(d, g, x.const_data_ptr<double>(), weight.const_data_ptr<double>(),
                           bias.const_data_ptr<double>(), out.mutable_data_ptr<double>());
  return out;
}

std::tuple<Tensor, Tensor, Tensor> multihead_linear_routed_backward_cpu(
    Tensor grad_out, Tensor x, Tensor weight, Tensor head_ids) {
  const Dims d = check_dims(x, weight, nullptr);
  check_float_cpu("grad_out", grad_out, x.scalar_type());
  STD_TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == d.B && grad_out.size(1) == d.C,
                  "multihead_linear: grad_out must be (", d.B, ", ", d.C, "), got ",
                  shape_str(grad_out));
  const Groups g = group_rows(head_ids, d);
  Tensor dx = torch::stable::new_empty(x, {d.B, d.D});
  Tensor dw = torch::stable::new_empty(weight, {d.H, d.C, d.D});
  Tensor db = torch::stable::new_empty(weight, {d.H, d.C});
  if (x.scalar_type() == torch::headeronly::ScalarType::Float)
    routed_backward<float>(d, g, grad_out.const_data_ptr<float>(), x.const_data_ptr<float>(),
                           weight.const_data_ptr<float>(), dx.mutable_data_ptr<float>(),
                           dw.mutable_data_ptr<float>(), db.mutable_data_ptr<float>());
  else
    routed_backward<double>(d, g, grad_out.const_data_ptr<double>(), x.const_data_ptr<double>(),
                            weight.const_data_ptr<double>(), dx.mutable_data_ptr<double>(),
                            dw.mutable_data_ptr<double>(), db.mutable_data_ptr<double>());
  return {dx, dw, db};
}

STABLE_TORCH_LIBRARY_IMPL(mtl_deploy, CPU, m) {
  m.impl("multihead_linear", TORCH_BOX(&multihead_linear_cpu));
  m.impl("multihead_linear_routed_backward", TORCH_BOX(&multihead_linear_routed_backward_cpu));
}

}  // namespace mtl_deploy
