// Task-interleaved adaptation: W tasks side by side, one per SIMD lane.
//
// Per-task matrices in few-shot adaptation are tiny (K = 10 rows, width 40), so
// vectorising inside a task wastes most of every vector on edges.  Here every
// scalar of every buffer is stored as W consecutive floats, lane w holding task
// w of the group: parameters (nn.Linear layout, concatenated), activations
// (K x width) and errors.  Every product is then plain scalar code whose
// scalars are whole vectors, with no shuffle, no edge and no reduction across
// lanes; a group's parameters stay in cache for all its steps, and the bias,
// activation and update are fused into the passes that produce them.
//
// Used for float32 MSE or cross-entropy with ReLU (or no hidden layer: a linear
// head, ANIL), when no trajectory is saved (the adaptation itself, no
// meta-gradient): the sinusoid and ANIL shapes.  W is 16 on AVX-512 and 8 on AVX2,
// picked at run time (adapt_interleaved).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "mlp.h"

namespace mtl_deploy {

template <int W>
struct Interleaved {
  typedef float V __attribute__((vector_size(W * sizeof(float))));

  static V ld(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static void st(float* p, V v) { std::memcpy(p, &v, sizeof(v)); }
  static V relu(V v) { return v > V{} ? v : V{}; }
  static V exp(V x) {
    if constexpr (sizeof(V) == sizeof(Vec<float>)) {  // a whole 64-byte vector: small_gemm.h's vexp
      Vec<float> v;
      std::memcpy(&v, &x, sizeof(v));
      v = vexp<float>(v);
      std::memcpy(&x, &v, sizeof(x));
    } else {
      float lanes[W];
      std::memcpy(lanes, &x, sizeof(x));
      for (int w = 0; w < W; ++w) lanes[w] = std::exp(lanes[w]);
      std::memcpy(&x, lanes, sizeof(x));
    }
    return x;
  }

  // d = d(mean loss)/dz for the last layer z (K x out): MSE against float targets,
  // or cross-entropy against one-hot targets (softmax over out, per lane).
  static void loss_grad(const float* z, const float* targets, bool ce, float* d, int64_t K, int64_t out) {
    if (!ce) {
      const float scale = 2.f / static_cast<float>(K * out);
      for (int64_t e = 0; e < K * out; ++e) st(d + e * W, scale * (ld(z + e * W) - ld(targets + e * W)));
      return;
    }
    const float inv_k = 1.f / static_cast<float>(K);
    for (int64_t k = 0; k < K; ++k) {
      const float* zk = z + k * out * W;
      float* dk = d + k * out * W;
      V m = ld(zk), sum{};
      for (int64_t j = 1; j < out; ++j) {
        const V v = ld(zk + j * W);
        m = v > m ? v : m;
      }
      for (int64_t j = 0; j < out; ++j) {
        const V e = exp(ld(zk + j * W) - m);
        st(dk + j * W, e);
        sum += e;
      }
      const V inv = inv_k / sum;
      for (int64_t j = 0; j < out; ++j)
        st(dk + j * W, ld(dk + j * W) * inv - inv_k * ld(targets + (k * out + j) * W));
    }
  }

  const MlpShape& s;
  const int64_t K;
  std::vector<float> th, act, d0, d1;  // parameters, activations per layer, errors (two layers)
  std::vector<int64_t> act_off;

  Interleaved(const MlpShape& shape, int64_t k) : s(shape), K(k), th(shape.numel * W) {
    int64_t n = 0;
    for (int64_t l = 0; l <= s.layers; ++l) {
      act_off.push_back(n);
      n += K * s.width[l] * W;
    }
    act.assign(n, 0.f);
    d0.assign(K * s.max_width() * W, 0.f);
    d1.assign(K * s.max_width() * W, 0.f);
  }

  // One product shape serves the forward, the backward and the weight gradient:
  // out(r, c, sum_i A[r, i] B[c, i]) with A and B read through strides (in units
  // of floats, lanes included).  Tiles of 2 rows x 4 columns keep 8 accumulators
  // in registers and load 6 vectors per 8 FMAs.
  struct Prod {
    const float* a;
    int64_t a_red, a_row;
    const float* b;
    int64_t b_red, b_col;
    int64_t n;  // reduction length
  };

  template <int R, int C, typename Out>
  __attribute__((always_inline)) static void tile(const Prod& p, int64_t r0, int64_t c0, Out& out) {
    V acc[R][C] = {};
    const float* a = p.a + r0 * p.a_row;
    const float* b = p.b + c0 * p.b_col;
    for (int64_t i = 0; i < p.n; ++i) {
      V av[R];
      for (int r = 0; r < R; ++r) av[r] = ld(a + r * p.a_row + i * p.a_red);
      for (int c = 0; c < C; ++c) {
        const V bv = ld(b + c * p.b_col + i * p.b_red);
        for (int r = 0; r < R; ++r) acc[r][c] += av[r] * bv;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) out(r0 + r, c0 + c, acc[r][c]);
  }

  template <int R, typename Out>
  __attribute__((always_inline)) static void row_block(const Prod& p, int64_t r, int64_t cols, Out& out) {
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) tile<R, 4>(p, r, c, out);
    for (; c < cols; ++c) tile<R, 1>(p, r, c, out);
  }

  template <typename Out>
  static void product(const Prod& p, int64_t rows, int64_t cols, Out out) {
    int64_t r = 0;
    for (; r + 2 <= rows; r += 2) row_block<2>(p, r, cols, out);
    for (; r < rows; ++r) row_block<1>(p, r, cols, out);
  }

  // z (K x nout) = a (K x nin) W^T + b, ReLU applied on the way out unless `last`.
  static void forward(const float* a, const float* w, const float* b, float* z, int64_t K, int64_t nin,
                      int64_t nout, bool last) {
    product(Prod{a, W, nin * W, w, W, nin * W, nin}, K, nout, [&](int64_t k, int64_t j, V c) {
      c += ld(b + j * W);
      st(z + (k * nout + j) * W, last ? c : relu(c));
    });
  }

  // dprev (K x nin) = (d (K x nout) W) * relu'(a), with the weights before this step's update.
  static void back(const float* d, const float* w, const float* a, float* dprev, int64_t K, int64_t nin,
                   int64_t nout) {
    product(Prod{d, W, nout * W, w, nin * W, W, nout}, K, nin, [&](int64_t k, int64_t i, V c) {
      st(dprev + (k * nin + i) * W, ld(a + (k * nin + i) * W) > V{} ? c : V{});
    });
  }

  // W -= lr * d^T a and b -= lr * sum_k d, the gradient never stored.
  static void update(const float* d, const float* a, float* w, float* b, const float* lr_w, const float* lr_b,
                     float lr, int64_t K, int64_t nin, int64_t nout) {
    product(Prod{d, nout * W, W, a, nin * W, W, K}, nout, nin, [&](int64_t j, int64_t i, V g) {
      float* wji = w + (j * nin + i) * W;
      st(wji, ld(wji) - (lr_w ? lr_w[j * nin + i] : lr) * g);
    });
    for (int64_t j = 0; j < nout; ++j) {
      V g{};
      for (int64_t k = 0; k < K; ++k) g += ld(d + (k * nout + j) * W);
      st(b + j * W, ld(b + j * W) - (lr_b ? lr_b[j] : lr) * g);
    }
  }

  // Adapts tasks t0 .. t0+n-1 (n <= W): x (T, K, in) rows of those tasks and
  // either y (T, K, out) float targets or y_class (T, K) class ids; theta0 and
  // lr_ext (or null) in concatenated nn.Linear layout.
  void run(int64_t t0, int64_t n, int64_t steps, const float* x, const float* y, const int64_t* y_class,
           const float* theta0, const float* lr_ext, float lr, const std::vector<float*>& outs) {
    const int64_t L = s.layers, in = s.width[0], out = s.width[L], P = s.numel;
    for (int64_t p = 0; p < P; ++p)
      for (int w = 0; w < W; ++w) th[p * W + w] = theta0[p];
    std::vector<float> ys(K * out * W, 0.f);
    float* a0 = act.data();
    std::fill(a0, a0 + K * in * W, 0.f);
    for (int64_t w = 0; w < n; ++w)
      for (int64_t e = 0; e < K * in; ++e) a0[e * W + w] = x[(t0 + w) * K * in + e];
    for (int64_t w = 0; w < n; ++w) {
      if (y_class)  // one-hot
        for (int64_t k = 0; k < K; ++k) ys[(k * out + y_class[(t0 + w) * K + k]) * W + w] = 1.f;
      else
        for (int64_t e = 0; e < K * out; ++e) ys[e * W + w] = y[(t0 + w) * K * out + e];
    }
    for (int64_t step = 0; step < steps; ++step) {
      for (int64_t l = 0; l < L; ++l)
        forward(act.data() + act_off[l], th.data() + s.w_off[l] * W, th.data() + s.b_off[l] * W,
                act.data() + act_off[l + 1], K, s.width[l], s.width[l + 1], l + 1 == L);
      float* d = d0.data();
      float* dnext = d1.data();
      const float* z = act.data() + act_off[L];
      loss_grad(z, ys.data(), y_class != nullptr, d, K, out);
      for (int64_t l = L - 1; l >= 0; --l) {
        const int64_t nin = s.width[l], nout = s.width[l + 1];
        float* w = th.data() + s.w_off[l] * W;
        const float* a = act.data() + act_off[l];
        if (l > 0) back(d, w, a, dnext, K, nin, nout);
        update(d, a, w, th.data() + s.b_off[l] * W, lr_ext ? lr_ext + s.w_off[l] : nullptr,
               lr_ext ? lr_ext + s.b_off[l] : nullptr, lr, K, nin, nout);
        std::swap(d, dnext);
      }
    }
    for (int64_t l = 0; l < L; ++l)
      for (int part = 0; part < 2; ++part) {
        const int64_t off = part ? s.b_off[l] : s.w_off[l];
        const int64_t size = part ? s.width[l + 1] : s.width[l + 1] * s.width[l];
        float* o = outs[2 * l + part];
        for (int64_t w = 0; w < n; ++w)
          for (int64_t e = 0; e < size; ++e) o[(t0 + w) * size + e] = th[(off + e) * W + w];
      }
  }
};

template <int W>
void adapt_groups(const MlpShape& s, int64_t T, int64_t K, int64_t steps, const float* x, const float* y,
                  const int64_t* y_class, const float* theta0, const float* lr_ext, float lr,
                  const std::vector<float*>& outs) {
  const int64_t groups = (T + W - 1) / W;
  torch::stable::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    Interleaved<W> work(s, K);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t t0 = g * W;
      work.run(t0, T - t0 < W ? T - t0 : W, steps, x, y, y_class, theta0, lr_ext, lr, outs);
    }
  });
}

// 16 lanes where the CPU has AVX-512, 8 (AVX2) otherwise.
inline void adapt_interleaved(const MlpShape& s, int64_t T, int64_t K, int64_t steps, const float* x,
                              const float* y, const int64_t* y_class, const float* theta0,
                              const float* lr_ext, float lr, const std::vector<float*>& outs) {
  if (__builtin_cpu_supports("avx512f"))
    adapt_groups<16>(s, T, K, steps, x, y, y_class, theta0, lr_ext, lr, outs);
  else
    adapt_groups<8>(s, T, K, steps, x, y, y_class, theta0, lr_ext, lr, outs);
}

}  // namespace mtl_deploy
