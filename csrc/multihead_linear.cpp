// CPU kernels of mtl_deploy::multihead_linear and its routed backward.
// Every head at once is one concatenated Linear (multihead.h).  Routed rows are grouped per head with a
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
#include "multihead.h"
#include "small_gemm.h"

namespace mtl_deploy {

using torch::stable::Tensor;

namespace {

// Rows of each head, contiguous: rows[start[h]:start[h+1]] use head h.
struct Groups {
  std::vector<int64_t> start, rows;
};

Groups group_rows(const Tensor& head_ids, const Tensor& x, const Dims& d) {
  check_index_like("multihead_linear", "head_ids", head_ids, x);
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
  STD_TORCH_CHECK(x.is_cpu(), "multihead_linear: x must be a CPU tensor");
  const Dims d = check_dims(x, weight, &bias);
  if (!head_ids.has_value()) return all_heads(x, weight, bias, d);
  const Groups g = group_rows(*head_ids, x, d);
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
  STD_TORCH_CHECK(x.is_cpu(), "multihead_linear: x must be a CPU tensor");
  const Dims d = check_dims(x, weight, nullptr);
  check_float_like("grad_out", grad_out, x);
  STD_TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == d.B && grad_out.size(1) == d.C,
                  "multihead_linear: grad_out must be (", d.B, ", ", d.C, "), got ",
                  shape_str(grad_out));
  const Groups g = group_rows(head_ids, x, d);
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
