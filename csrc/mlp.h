// One task's MLP on raw pointers: forward, loss gradient, backward, and the
// Hessian-vector product obtained by differentiating the backward pass in a
// direction u (Pearlmutter's R-operator).  The inner-loop kernels call these
// once per step per task; every buffer lives in one workspace allocated per
// thread, so a step allocates nothing.
//
// Parameters travel as one flat vector per task, laid out like
// torch.cat([p.flatten() for p in params]) except that each weight block is
// stored transposed ("internal" layout, in x out), so the forward product and
// the weight gradient both vectorise over the output width.  The backward
// product needs the nn.Linear layout (out x in), so callers keep the
// parameters in both layouts ("ext" pointers).  Vectors handed to these methods as
// theta, ext or u must be followed by kSlack readable elements (see small_gemm.h).
#pragma once

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <vector>

#include "small_gemm.h"

namespace mtl_deploy {

enum class Loss : int64_t { Mse = 0, CrossEntropy = 1 };
enum class Act : int64_t { Relu = 0, Tanh = 1 };

// Widths and the offsets of every W_l and b_l inside a flat parameter vector.
struct MlpShape {
  int64_t layers = 0;
  std::vector<int64_t> width;          // layers + 1 entries: in, hidden..., out
  std::vector<int64_t> w_off, b_off;   // layers entries each
  int64_t numel = 0;                   // P, parameters per task

  explicit MlpShape(const std::vector<int64_t>& widths) : width(widths) {
    layers = static_cast<int64_t>(widths.size()) - 1;
    for (int64_t l = 0; l < layers; ++l) {
      w_off.push_back(numel);
      numel += width[l + 1] * width[l];
      b_off.push_back(numel);
      numel += width[l + 1];
    }
  }
  int64_t max_width() const {
    int64_t m = 0;
    for (int64_t w : width) m = w > m ? w : m;
    return m;
  }
};

// Reads task t of per-parameter arrays shaped (T, *p) (nn.Linear layout;
// t = 0 for the shared meta-parameters) into one internal-layout vector.
template <typename T>
inline void gather_internal(const MlpShape& s, const std::vector<const T*>& src,
                            int64_t t, T* dst) {
  for (int64_t l = 0; l < s.layers; ++l) {
    const int64_t nin = s.width[l], nout = s.width[l + 1];
    const T* w = src[2 * l] + t * nout * nin;  // (out, in)
    const T* b = src[2 * l + 1] + t * nout;
    T* o = dst + s.w_off[l];                   // (in, out)
    for (int64_t i = 0; i < nin; ++i)
      for (int64_t j = 0; j < nout; ++j) o[i * nout + j] = w[j * nin + i];
    for (int64_t j = 0; j < nout; ++j) dst[s.b_off[l] + j] = b[j];
  }
}

// Inverse of gather_internal: writes task t of per-parameter outputs.
template <typename T>
inline void scatter_external(const MlpShape& s, const T* src,
                             const std::vector<T*>& dst, int64_t t) {
  for (int64_t l = 0; l < s.layers; ++l) {
    const int64_t nin = s.width[l], nout = s.width[l + 1];
    const T* w = src + s.w_off[l];             // (in, out)
    T* o = dst[2 * l] + t * nout * nin;        // (out, in)
    for (int64_t j = 0; j < nout; ++j)
      for (int64_t i = 0; i < nin; ++i) o[j * nin + i] = w[i * nout + j];
    T* b = dst[2 * l + 1] + t * nout;
    for (int64_t j = 0; j < nout; ++j) b[j] = src[s.b_off[l] + j];
  }
}

template <typename T>
class MlpTask {
 public:
  MlpTask(const MlpShape& shape, int64_t K, Act act, Loss loss)
      : s_(shape), K_(K), act_(act), loss_(loss) {
    const int64_t L = s_.layers, maxw = s_.max_width();
    int64_t per_layer = 0;  // K x width values for every layer output
    for (int64_t l = 1; l <= L; ++l) per_layer += K_ * s_.width[l];
    // z, a, d, e, rz, ra, rd per layer; x; two scratch blocks; u (out x in).
    buf_.assign(7 * per_layer + K_ * s_.width[0] + K_ * maxw + maxw * maxw + s_.numel + kSlack,
                T(0));
    T* p = buf_.data();
    auto take = [&](std::vector<T*>& v) {
      v.assign(L + 1, nullptr);
      for (int64_t l = 1; l <= L; ++l) {
        v[l] = p;
        p += K_ * s_.width[l];
      }
    };
    take(z_); take(a_); take(d_); take(e_); take(rz_); take(ra_); take(rd_);
    a_[0] = p; p += K_ * s_.width[0];
    scratch_ = p; p += K_ * maxw;
    wt_scratch_ = p; p += maxw * maxw;
    u_ext_ = p;
  }

  // Copies one task's inputs (K x in) next to the other buffers.
  void load_x(const T* x) { std::copy(x, x + K_ * s_.width[0], a_[0]); }

  // ext = theta with every W block in nn.Linear layout (out x in).
  void to_external(const T* theta, T* ext) const {
    for (int64_t l = 0; l < s_.layers; ++l) {
      const int64_t nin = s_.width[l], nout = s_.width[l + 1];
      const T* w = theta + s_.w_off[l];
      T* o = ext + s_.w_off[l];
      for (int64_t i = 0; i < nin; ++i)
        for (int64_t j = 0; j < nout; ++j) o[j * nin + i] = w[i * nout + j];
      std::copy(theta + s_.b_off[l], theta + s_.b_off[l] + nout, ext + s_.b_off[l]);
    }
  }

  // z_l = a_{l-1} W_l^T + b_l, a_l = act(z_l).  Every method takes the
  // parameters in both layouts (theta internal, ext nn.Linear): each product
  // reads whichever layout lets it vectorise.
  void forward(const T* theta, const T* ext) {
    for (int64_t l = 1; l <= s_.layers; ++l) {
      const int64_t nout = s_.width[l];
      const T* b = theta + s_.b_off[l - 1];
      T* z = z_[l];
      for (int64_t k = 0; k < K_; ++k)
        for (int64_t j = 0; j < nout; ++j) z[k * nout + j] = b[j];
      linear(l, a_[l - 1], theta, ext, z);
      if (l < s_.layers) activate(z, a_[l], K_ * nout);
    }
  }

  // d_L = d(mean loss)/dz_L for float targets (mse) or class ids (ce).
  void loss_grad(const T* y_float, const int64_t* y_class) {
    const int64_t n = s_.width[s_.layers];
    const T* z = z_[s_.layers];
    T* d = d_[s_.layers];
    if (loss_ == Loss::Mse) {
      const T scale = T(2) / T(K_ * n);
      for (int64_t i = 0; i < K_ * n; ++i) d[i] = scale * (z[i] - y_float[i]);
      return;
    }
    // d = (softmax(z) - onehot(y)) / K; the probabilities stay in a_L for the
    // Hessian product.  exp runs on whole vectors over all K rows at once.
    T* p = a_[s_.layers];
    for (int64_t k = 0; k < K_; ++k) {
      const T* zk = z + k * n;
      T m = zk[0];
      for (int64_t j = 1; j < n; ++j) m = zk[j] > m ? zk[j] : m;
      for (int64_t j = 0; j < n; ++j) p[k * n + j] = zk[j] - m;
    }
    constexpr int L = kLanes<T>;
    for (int64_t i = 0; i < K_ * n; i += L) {
      const Vec<T> e = vexp<T>(load_first(p + i, K_ * n - i));
      store(p + i, e, K_ * n - i);
    }
    for (int64_t k = 0; k < K_; ++k) {
      T* pk = p + k * n;
      T sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += pk[j];
      const T inv = T(1) / sum;
      for (int64_t j = 0; j < n; ++j) {
        pk[j] *= inv;
        d[k * n + j] = pk[j] / T(K_);
      }
      d[k * n + y_class[k]] -= T(1) / T(K_);
    }
  }

  // The mean loss of the last forward (call after loss_grad), computed stably
  // from the logits for cross-entropy.
  T loss_value(const T* y_float, const int64_t* y_class) const {
    const int64_t n = s_.width[s_.layers];
    const T* z = z_[s_.layers];
    T sum = 0;
    if (loss_ == Loss::Mse) {
      for (int64_t i = 0; i < K_ * n; ++i) sum += (z[i] - y_float[i]) * (z[i] - y_float[i]);
      return sum / static_cast<T>(K_ * n);
    }
    for (int64_t k = 0; k < K_; ++k) {
      const T* zk = z + k * n;
      T m = zk[0], e = 0;
      for (int64_t j = 1; j < n; ++j) m = zk[j] > m ? zk[j] : m;
      for (int64_t j = 0; j < n; ++j) e += std::exp(zk[j] - m);
      sum += m + std::log(e) - zk[y_class[k]];
    }
    return sum / static_cast<T>(K_);
  }

  // The gradient of the mean loss, and the same in nn.Linear layout unless
  // grad_ext is null; keeps d_l and e_l = d_{l+1} W_{l+1}.
  void backward(const T* theta, const T* ext, T* grad, T* grad_ext) {
    for (int64_t l = s_.layers; l >= 1; --l) {
      const int64_t nin = s_.width[l - 1], nout = s_.width[l];
      weight_grad(l, a_[l - 1], d_[l], grad, grad_ext, false);
      bias_grad(l, d_[l], grad);
      if (grad_ext)
        std::copy(grad + s_.b_off[l - 1], grad + s_.b_off[l - 1] + nout, grad_ext + s_.b_off[l - 1]);
      if (l == 1) break;
      linear_back(l, d_[l], theta, ext, e_[l - 1], false);
      const T* a = a_[l - 1];
      const T* e = e_[l - 1];
      T* dp = d_[l - 1];
      for (int64_t i = 0; i < K_ * nin; ++i) dp[i] = e[i] * act_grad(a[i]);
    }
  }

  // hv = H(theta) u for the loss last passed through forward/loss_grad/
  // backward at theta; u and hv are in internal layout.
  void hvp(const T* theta, const T* ext, const T* u, T* hv) {
    const int64_t L = s_.layers;
    to_external(u, u_ext_);
    // R-forward: rz_l = ra_{l-1} W_l^T + a_{l-1} U_l^T + ub_l, ra_0 = 0.
    for (int64_t l = 1; l <= L; ++l) {
      const int64_t nout = s_.width[l];
      T* rz = rz_[l];
      const T* ub = u + s_.b_off[l - 1];
      for (int64_t k = 0; k < K_; ++k)
        for (int64_t j = 0; j < nout; ++j) rz[k * nout + j] = ub[j];
      linear(l, a_[l - 1], u, u_ext_, rz);
      if (l > 1) linear(l, ra_[l - 1], theta, ext, rz);
      if (l < L) {
        const T* a = a_[l];
        T* ra = ra_[l];
        for (int64_t i = 0; i < K_ * nout; ++i) ra[i] = act_grad(a[i]) * rz[i];
      }
    }
    loss_hvp();
    // R-backward.
    for (int64_t l = L; l >= 1; --l) {
      const int64_t nin = s_.width[l - 1];
      weight_grad(l, a_[l - 1], rd_[l], hv, nullptr, false);
      bias_grad(l, rd_[l], hv);
      if (l == 1) break;
      weight_grad(l, ra_[l - 1], d_[l], hv, nullptr, true);
      // re = rd_l W_l + d_l U_l, then rd_{l-1} = re f'(z) + e f''(z) rz.
      T* re = scratch_;
      linear_back(l, rd_[l], theta, ext, re, false);
      linear_back(l, d_[l], u, u_ext_, re, true);
      const T* a = a_[l - 1];
      const T* e = e_[l - 1];
      const T* rz = rz_[l - 1];
      T* rd = rd_[l - 1];
      if (act_ == Act::Relu) {
        for (int64_t i = 0; i < K_ * nin; ++i) rd[i] = re[i] * act_grad(a[i]);
      } else {
        for (int64_t i = 0; i < K_ * nin; ++i) {
          const T g = T(1) - a[i] * a[i];  // tanh' from its output
          rd[i] = re[i] * g - T(2) * a[i] * g * e[i] * rz[i];
        }
      }
    }
  }

 private:
  // Outputs narrower than half a vector are computed as dot products over
  // the (longer) reduction instead of wasting most of every vector.
  static bool narrow(int64_t n, int64_t reduction) {
    return 2 * n <= kLanes<T> && 2 * reduction >= kLanes<T>;
  }

  // z (K x out) += a (K x in) W^T; wt is the internal (in x out) block source,
  // ext the (out x in) copy.
  void linear(int64_t l, const T* a, const T* wt, const T* ext, T* z) const {
    const int64_t nin = s_.width[l - 1], nout = s_.width[l];
    if (narrow(nout, nin))
      gemm_dot<T>(K_, nout, nin, a, nin, ext + s_.w_off[l - 1], nin, z, nout, true);
    else
      gemm<T>(K_, nout, nin, a, nin, 1, wt + s_.w_off[l - 1], nout, z, nout, true);
  }

  // e (K x in) (+)= d (K x out) W.
  void linear_back(int64_t l, const T* d, const T* wt, const T* ext, T* e,
                   bool accumulate) const {
    const int64_t nin = s_.width[l - 1], nout = s_.width[l];
    if (narrow(nin, nout))
      gemm_dot<T>(K_, nin, nout, d, nout, wt + s_.w_off[l - 1], nout, e, nin, accumulate);
    else
      gemm<T>(K_, nin, nout, d, nout, 1, ext + s_.w_off[l - 1], nin, e, nin, accumulate);
  }

  // dW_l^T (in x out) (+)= a^T d into a flat vector, and dW_l (out x in) into
  // out_ext unless it is null.  For narrow outputs the (out x in) product
  // vectorises over `in`, then is transposed into place.
  void weight_grad(int64_t l, const T* a, const T* d, T* out, T* out_ext, bool accumulate) {
    const int64_t nin = s_.width[l - 1], nout = s_.width[l];
    T* o = out + s_.w_off[l - 1];
    if (!narrow(nout, nin)) {
      gemm<T>(nin, nout, K_, a, 1, nin, d, nout, o, nout, accumulate);
      if (out_ext)
        gemm<T>(nout, nin, K_, d, 1, nout, a, nin, out_ext + s_.w_off[l - 1], nin, false);
      return;
    }
    T* w = out_ext ? out_ext + s_.w_off[l - 1] : wt_scratch_;
    gemm<T>(nout, nin, K_, d, 1, nout, a, nin, w, nin, false);
    for (int64_t i = 0; i < nin; ++i)
      for (int64_t j = 0; j < nout; ++j)
        o[i * nout + j] = (accumulate ? o[i * nout + j] : T(0)) + w[j * nin + i];
  }

  // db_l = sum_k d.
  void bias_grad(int64_t l, const T* d, T* out) const {
    const int64_t nout = s_.width[l];
    T* db = out + s_.b_off[l - 1];
    for (int64_t j = 0; j < nout; ++j) db[j] = T(0);
    for (int64_t k = 0; k < K_; ++k)
#pragma omp simd
      for (int64_t j = 0; j < nout; ++j) db[j] += d[k * nout + j];
  }

  T act_grad(T a) const {
    return act_ == Act::Relu ? (a > T(0) ? T(1) : T(0)) : T(1) - a * a;
  }

  void activate(const T* z, T* a, int64_t n) const {
    if (act_ == Act::Relu)
      for (int64_t i = 0; i < n; ++i) a[i] = z[i] > T(0) ? z[i] : T(0);
    else
      for (int64_t i = 0; i < n; ++i) a[i] = std::tanh(z[i]);
  }

  // R{d_L}: mse is linear in z; softmax gives (p * rz - p (p . rz)) / K.
  void loss_hvp() {
    const int64_t n = s_.width[s_.layers];
    const T* rz = rz_[s_.layers];
    T* rd = rd_[s_.layers];
    if (loss_ == Loss::Mse) {
      const T scale = T(2) / T(K_ * n);
      for (int64_t i = 0; i < K_ * n; ++i) rd[i] = scale * rz[i];
      return;
    }
    const T* p = a_[s_.layers];
    for (int64_t k = 0; k < K_; ++k) {
      T dot = 0;
      for (int64_t j = 0; j < n; ++j) dot += p[k * n + j] * rz[k * n + j];
      for (int64_t j = 0; j < n; ++j)
        rd[k * n + j] = p[k * n + j] * (rz[k * n + j] - dot) / T(K_);
    }
  }

  const MlpShape& s_;
  const int64_t K_;
  const Act act_;
  const Loss loss_;
  std::vector<T> buf_;
  std::vector<T*> z_, a_, d_, e_, rz_, ra_, rd_;
  T* scratch_ = nullptr;
  T* wt_scratch_ = nullptr;
  T* u_ext_ = nullptr;
};

}  // namespace mtl_deploy
