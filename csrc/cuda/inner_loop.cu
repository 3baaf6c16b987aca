// CUDA kernels of mtl_deploy::inner_loop, inner_loop_backward and maml_step:
// one thread block per task runs every step of its adaptation in one launch,
// with the task's parameters, data and activations in shared memory (or, for
// MLPs too large for it, in a per-task global workspace).  The mathematics is the
// CPU kernel's (mlp.h): forward, loss gradient, backward and the update per
// step, and the exact reverse pass through the steps with Hessian-vector
// products by Pearlmutter's R-operator.  Parameters are kept in the
// concatenated nn.Linear layout throughout.
#include "launch.h"

namespace mtl_deploy {
namespace cuda {
namespace {

constexpr int kThreads = 128;

// Offsets (in elements) of every buffer of one task's workspace.
struct Layout {
  int64_t theta, grad, lr, x, y, probs, scratch, v, u, hv;
  int64_t a[kMaxLayers + 1], d[kMaxLayers + 1], e[kMaxLayers + 1];
  int64_t rz[kMaxLayers + 1], ra[kMaxLayers + 1], rd[kMaxLayers + 1];
  int64_t total;
};

__host__ __device__ inline Layout make_layout(const MlpDims& d, bool hvp, bool meta_sgd) {
  Layout l{};
  int64_t at = 0;
  auto take = [&](int64_t n) {
    const int64_t here = at;
    at += (n + 1) & ~int64_t(1);  // keep every buffer 16-byte aligned for doubles
    return here;
  };
  const int64_t P = d.numel, K = d.K, out = d.width[d.layers];
  l.theta = take(P);
  l.grad = take(P);
  l.lr = meta_sgd ? take(P) : -1;
  l.x = take(K * d.width[0]);
  l.y = d.loss == 0 ? take(K * out) : -1;
  l.probs = take(K * out);
  l.scratch = take(K * out);
  for (int i = 1; i <= d.layers; ++i) {
    l.a[i] = take(K * d.width[i]);
    l.d[i] = take(K * d.width[i]);
    l.e[i] = i < d.layers ? take(K * d.width[i]) : -1;
  }
  l.v = l.u = l.hv = -1;
  if (hvp) {
    l.v = take(P);
    l.u = take(P);
    l.hv = take(P);
    for (int i = 1; i <= d.layers; ++i) {
      l.rz[i] = take(K * d.width[i]);
      l.ra[i] = i < d.layers ? take(K * d.width[i]) : -1;
      l.rd[i] = take(K * d.width[i]);
    }
  }
  l.total = at;
  return l;
}

template <typename T>
__device__ inline T act_grad(int act, T a) {  // f'(z) from a = f(z)
  return act == 0 ? (a > T(0) ? T(1) : T(0)) : T(1) - a * a;
}

template <typename T>
__device__ inline T activate(int act, T z) {
  return act == 0 ? (z > T(0) ? z : T(0)) : tanh(z);
}

// Copies task t's flat vector out of the segments into dst (block-wide).
template <typename T>
__device__ void gather(const Segments<const T>& s, int64_t t, T* dst) {
  for (int k = 0; k < s.n; ++k) {
    const int64_t n = s.start[k + 1] - s.start[k];
    const T* src = s.ptr[k] + t * s.stride[k];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[s.start[k] + i] = src[i];
  }
}

template <typename T>
__device__ void scatter(const T* src, const Segments<T>& s, int64_t t) {
  for (int k = 0; k < s.n; ++k) {
    const int64_t n = s.start[k + 1] - s.start[k];
    T* dst = s.ptr[k] + t * s.stride[k];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[s.start[k] + i];
  }
}

// One task's MLP over a workspace: every method is called by the whole block
// and ends with a barrier.
template <typename T>
struct TaskMlp {
  const MlpDims& d;
  const Layout& l;
  T* ws;
  const int64_t* y_class;  // this task's K class ids, or null for mse
  int* bad_class;

  __device__ const T* input(int layer) const { return layer == 1 ? ws + l.x : ws + l.a[layer - 1]; }

  // a_l = f(a_{l-1} W_l^T + b_l) (the output layer keeps its logits).
  __device__ void forward(const T* theta) {
    const int64_t K = d.K;
    for (int layer = 1; layer <= d.layers; ++layer) {
      const int64_t nin = d.width[layer - 1], nout = d.width[layer];
      const T* in = input(layer);
      const T* w = theta + d.w_off[layer - 1];
      const T* b = theta + d.b_off[layer - 1];
      T* a = ws + l.a[layer];
      const bool hidden = layer < d.layers;
      for (int64_t idx = threadIdx.x; idx < K * nout; idx += blockDim.x) {
        const int64_t k = idx / nout, j = idx - k * nout;
        T acc = b[j];
        const T* ik = in + k * nin;
        const T* wj = w + j * nin;
        for (int64_t i = 0; i < nin; ++i) acc += ik[i] * wj[i];
        a[idx] = hidden ? activate(d.act, acc) : acc;
      }
      __syncthreads();
    }
  }

  // d_L = d(mean loss)/d logits; with want_loss, scratch[0] = the mean loss.
  __device__ void loss_grad(bool want_loss) {
    const int64_t K = d.K, n = d.width[d.layers];
    const T* z = ws + l.a[d.layers];
    T* dl = ws + l.d[d.layers];
    T* scratch = ws + l.scratch;
    if (d.loss == 0) {
      const T* y = ws + l.y;
      const T scale = T(2) / T(K * n);
      for (int64_t i = threadIdx.x; i < K * n; i += blockDim.x) {
        const T diff = z[i] - y[i];
        dl[i] = scale * diff;
        if (want_loss) scratch[i] = diff * diff;
      }
    } else {
      T* p = ws + l.probs;
      for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        const T* zk = z + k * n;
        T m = zk[0];
        for (int64_t j = 1; j < n; ++j) m = zk[j] > m ? zk[j] : m;
        T sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          p[k * n + j] = exp(zk[j] - m);
          sum += p[k * n + j];
        }
        const T inv = T(1) / sum;
        for (int64_t j = 0; j < n; ++j) {
          p[k * n + j] *= inv;
          dl[k * n + j] = p[k * n + j] / T(K);
        }
        const int64_t c = y_class[k];
        if (c < 0 || c >= n) {
          *bad_class = 1;
          if (want_loss) scratch[k] = T(0);
          continue;
        }
        dl[k * n + c] -= T(1) / T(K);
        if (want_loss) scratch[k] = m + log(sum) - zk[c];
      }
    }
    __syncthreads();
    if (want_loss && threadIdx.x == 0) {  // fixed order: deterministic
      const int64_t terms = d.loss == 0 ? K * n : K;
      T total = 0;
      for (int64_t i = 0; i < terms; ++i) total += scratch[i];
      scratch[0] = total / T(terms);
    }
    __syncthreads();
  }

  // grad = d(mean loss)/d theta; keeps d_l and e_l = d_{l+1} W_{l+1}.
  __device__ void backward(const T* theta, T* grad) {
    const int64_t K = d.K;
    for (int layer = d.layers; layer >= 1; --layer) {
      const int64_t nin = d.width[layer - 1], nout = d.width[layer];
      const T* in = input(layer);
      const T* dl = ws + l.d[layer];
      const T* w = theta + d.w_off[layer - 1];
      T* gw = grad + d.w_off[layer - 1];
      T* gb = grad + d.b_off[layer - 1];
      for (int64_t idx = threadIdx.x; idx < nout * (nin + 1); idx += blockDim.x) {
        if (idx < nout * nin) {
          const int64_t j = idx / nin, i = idx - j * nin;
          T g = 0;
          for (int64_t k = 0; k < K; ++k) g += dl[k * nout + j] * in[k * nin + i];
          gw[idx] = g;
        } else {
          const int64_t j = idx - nout * nin;
          T g = 0;
          for (int64_t k = 0; k < K; ++k) g += dl[k * nout + j];
          gb[j] = g;
        }
      }
      if (layer > 1) {
        const T* a = ws + l.a[layer - 1];
        T* e = ws + l.e[layer - 1];
        T* dp = ws + l.d[layer - 1];
        for (int64_t idx = threadIdx.x; idx < K * nin; idx += blockDim.x) {
          const int64_t k = idx / nin, i = idx - k * nin;
          T acc = 0;
          for (int64_t j = 0; j < nout; ++j) acc += dl[k * nout + j] * w[j * nin + i];
          e[idx] = acc;
          dp[idx] = acc * act_grad(d.act, a[idx]);
        }
      }
      __syncthreads();
    }
  }

  // hv = H(theta) u for the loss last passed through forward / loss_grad /
  // backward at theta.
  __device__ void hvp(const T* theta, const T* u, T* hv) {
    const int64_t K = d.K;
    for (int layer = 1; layer <= d.layers; ++layer) {  // R-forward
      const int64_t nin = d.width[layer - 1], nout = d.width[layer];
      const T* in = input(layer);
      const T* ra_in = layer > 1 ? ws + l.ra[layer - 1] : nullptr;
      const T* w = theta + d.w_off[layer - 1];
      const T* uw = u + d.w_off[layer - 1];
      const T* ub = u + d.b_off[layer - 1];
      const T* a = ws + l.a[layer];
      T* rz = ws + l.rz[layer];
      T* ra = layer < d.layers ? ws + l.ra[layer] : nullptr;
      for (int64_t idx = threadIdx.x; idx < K * nout; idx += blockDim.x) {
        const int64_t k = idx / nout, j = idx - k * nout;
        T acc = ub[j];
        for (int64_t i = 0; i < nin; ++i) acc += in[k * nin + i] * uw[j * nin + i];
        if (ra_in)
          for (int64_t i = 0; i < nin; ++i) acc += ra_in[k * nin + i] * w[j * nin + i];
        rz[idx] = acc;
        if (ra) ra[idx] = act_grad(d.act, a[idx]) * acc;
      }
      __syncthreads();
    }
    {  // R of the loss gradient: mse is linear; softmax gives (p rz - p (p . rz)) / K
      const int64_t n = d.width[d.layers];
      const T* rz = ws + l.rz[d.layers];
      T* rd = ws + l.rd[d.layers];
      if (d.loss == 0) {
        const T scale = T(2) / T(K * n);
        for (int64_t i = threadIdx.x; i < K * n; i += blockDim.x) rd[i] = scale * rz[i];
      } else {
        const T* p = ws + l.probs;
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
          T dot = 0;
          for (int64_t j = 0; j < n; ++j) dot += p[k * n + j] * rz[k * n + j];
          for (int64_t j = 0; j < n; ++j) rd[k * n + j] = p[k * n + j] * (rz[k * n + j] - dot) / T(K);
        }
      }
      __syncthreads();
    }
    for (int layer = d.layers; layer >= 1; --layer) {  // R-backward
      const int64_t nin = d.width[layer - 1], nout = d.width[layer];
      const T* in = input(layer);
      const T* ra_in = layer > 1 ? ws + l.ra[layer - 1] : nullptr;
      const T* dl = ws + l.d[layer];
      const T* rd = ws + l.rd[layer];
      const T* w = theta + d.w_off[layer - 1];
      const T* uw = u + d.w_off[layer - 1];
      T* hw = hv + d.w_off[layer - 1];
      T* hb = hv + d.b_off[layer - 1];
      for (int64_t idx = threadIdx.x; idx < nout * (nin + 1); idx += blockDim.x) {
        if (idx < nout * nin) {
          const int64_t j = idx / nin, i = idx - j * nin;
          T g = 0;
          for (int64_t k = 0; k < K; ++k) g += rd[k * nout + j] * in[k * nin + i];
          if (ra_in)
            for (int64_t k = 0; k < K; ++k) g += dl[k * nout + j] * ra_in[k * nin + i];
          hw[idx] = g;
        } else {
          const int64_t j = idx - nout * nin;
          T g = 0;
          for (int64_t k = 0; k < K; ++k) g += rd[k * nout + j];
          hb[j] = g;
        }
      }
      if (layer > 1) {
        const T* a = ws + l.a[layer - 1];
        const T* e = ws + l.e[layer - 1];
        const T* rz = ws + l.rz[layer - 1];
        T* rdp = ws + l.rd[layer - 1];
        for (int64_t idx = threadIdx.x; idx < K * nin; idx += blockDim.x) {
          const int64_t k = idx / nin, i = idx - k * nin;
          T re = 0;
          for (int64_t j = 0; j < nout; ++j)
            re += rd[k * nout + j] * w[j * nin + i] + dl[k * nout + j] * uw[j * nin + i];
          const T av = a[idx];
          if (d.act == 0) {
            rdp[idx] = av > T(0) ? re : T(0);
          } else {
            const T g = T(1) - av * av;  // tanh' from its output; tanh'' = -2 a tanh'
            rdp[idx] = re * g - T(2) * av * g * e[idx] * rz[idx];
          }
        }
      }
      __syncthreads();
    }
  }
};

template <typename T>
__device__ T* task_workspace(T* workspace, int64_t total) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return workspace ? workspace + blockIdx.x * total : reinterpret_cast<T*>(shared_bytes);
}

// The task's data into the workspace: x (K x in) and, for mse, y (K x out); class
// ids (cross-entropy) stay in global memory and are range-checked here.
template <typename T>
__device__ void load_data(const MlpDims& d, const Layout& l, T* ws, int64_t t, const T* x,
                          const T* y_float, const int64_t* y_class, int* bad_class) {
  const int64_t nx = d.K * d.width[0], ny = d.K * d.width[d.layers];
  for (int64_t i = threadIdx.x; i < nx; i += blockDim.x) ws[l.x + i] = x[t * nx + i];
  if (y_float)
    for (int64_t i = threadIdx.x; i < ny; i += blockDim.x) ws[l.y + i] = y_float[t * ny + i];
  if (y_class)
    for (int64_t k = threadIdx.x; k < d.K; k += blockDim.x) {
      const int64_t c = y_class[t * d.K + k];
      if (c < 0 || c >= d.width[d.layers]) *bad_class = 1;
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) adapt_kernel(
    MlpDims d, Layout l, int64_t steps, const T* x, const T* y_float, const int64_t* y_class,
    Segments<const T> theta0, Segments<const T> lr, T lr_scalar, Segments<T> adapted, T* grad_sums,
    T* trajectory, int* bad_class, T* workspace) {
  const int64_t t = blockIdx.x, P = d.numel;
  T* ws = task_workspace(workspace, l.total);
  T* theta = ws + l.theta;
  T* grad = ws + l.grad;
  const T* lr_flat = lr.n ? ws + l.lr : nullptr;
  gather(theta0, 0, theta);
  if (lr.n) gather(lr, 0, ws + l.lr);
  load_data(d, l, ws, t, x, y_float, y_class, bad_class);
  T* gsum = grad_sums ? grad_sums + t * P : nullptr;
  if (gsum)
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) gsum[i] = T(0);
  __syncthreads();
  TaskMlp<T> mlp{d, l, ws, y_class ? y_class + t * d.K : nullptr, bad_class};
  for (int64_t s = 0; s < steps; ++s) {
    mlp.forward(theta);
    mlp.loss_grad(false);
    mlp.backward(theta, grad);
    T* saved = trajectory ? trajectory + (t * steps + s) * P : nullptr;
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
      const T old = theta[i], g = grad[i];
      if (saved) saved[i] = old;
      if (gsum) gsum[i] += g;
      theta[i] = old - (lr_flat ? lr_flat[i] : lr_scalar) * g;
    }
    __syncthreads();
  }
  scatter(theta, adapted, t);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) reverse_kernel(
    MlpDims d, Layout l, int64_t steps, const T* x, const T* y_float, const int64_t* y_class,
    Segments<const T> lr, T lr_scalar, const T* trajectory, Segments<const T> v_in, T* v_out, T* dlr_out,
    int* bad_class, T* workspace) {
  const int64_t t = blockIdx.x, P = d.numel;
  T* ws = task_workspace(workspace, l.total);
  T* theta = ws + l.theta;
  T* grad = ws + l.grad;
  T* v = ws + l.v;
  T* u = ws + l.u;
  T* hv = ws + l.hv;
  const T* lr_flat = lr.n ? ws + l.lr : nullptr;
  if (lr.n) gather(lr, 0, ws + l.lr);
  gather(v_in, t, v);
  load_data(d, l, ws, t, x, y_float, y_class, bad_class);
  T* dlr = dlr_out ? dlr_out + t * P : nullptr;
  if (dlr)
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) dlr[i] = T(0);
  __syncthreads();
  TaskMlp<T> mlp{d, l, ws, y_class ? y_class + t * d.K : nullptr, bad_class};
  for (int64_t s = steps - 1; s >= 0; --s) {
    const T* saved = trajectory + (t * steps + s) * P;
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) theta[i] = saved[i];
    __syncthreads();
    mlp.forward(theta);
    mlp.loss_grad(false);
    mlp.backward(theta, grad);
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
      if (dlr) dlr[i] -= grad[i] * v[i];
      u[i] = -(lr_flat ? lr_flat[i] : lr_scalar) * v[i];
    }
    __syncthreads();
    mlp.hvp(theta, u, hv);
    for (int64_t i = threadIdx.x; i < P; i += blockDim.x) v[i] += hv[i];  // v - H (lr v)
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) v_out[t * P + i] = v[i];
}

template <typename T>
__global__ void __launch_bounds__(kThreads) task_loss_grad_kernel(
    MlpDims d, Layout l, const T* x, const T* y_float, const int64_t* y_class, Segments<const T> theta_in,
    T scale, T* losses, T* grads, int* bad_class, T* workspace) {
  const int64_t t = blockIdx.x, P = d.numel;
  T* ws = task_workspace(workspace, l.total);
  T* theta = ws + l.theta;
  T* grad = ws + l.grad;
  gather(theta_in, t, theta);
  load_data(d, l, ws, t, x, y_float, y_class, bad_class);
  __syncthreads();
  TaskMlp<T> mlp{d, l, ws, y_class ? y_class + t * d.K : nullptr, bad_class};
  mlp.forward(theta);
  mlp.loss_grad(true);
  mlp.backward(theta, grad);
  if (threadIdx.x == 0) losses[t] = ws[l.scratch];
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) grads[t * P + i] = scale * grad[i];
}

template <typename T>
__global__ void sum_tasks_kernel(int64_t tasks, const T* a, const T* b, T scale, Segments<T> out) {
  const int64_t P = out.start[out.n];
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= P) return;
  T acc = 0;
  for (int64_t t = 0; t < tasks; ++t) acc += b ? a[t * P + i] * b[t * P + i] : a[t * P + i];
  int k = 0;
  while (i >= out.start[k + 1]) ++k;
  out.ptr[k][i - out.start[k]] = scale * acc;
}

// Launches `kernel` with one block per task and the workspace in shared memory
// when it fits.
template <typename Kernel, typename... Args>
cudaError_t launch_tasks(Kernel kernel, int64_t tasks, const Layout& l, size_t elem, bool shared,
                         cudaStream_t stream, Args... args) {
  if (tasks == 0) return cudaSuccess;
  const size_t bytes = shared ? static_cast<size_t>(l.total) * elem : 0;
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  kernel<<<static_cast<unsigned>(tasks), kThreads, bytes, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace

int64_t workspace_elems(const MlpDims& d, bool hvp, bool meta_sgd) {
  return make_layout(d, hvp, meta_sgd).total;
}

int64_t shared_memory_limit() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
    return 48 * 1024;
  return bytes;
}

template <typename T>
cudaError_t adapt_cuda(const MlpDims& d, int64_t tasks, int64_t steps, const T* x, const T* y_float,
                       const int64_t* y_class, const Segments<const T>& theta0, const Segments<const T>& lr,
                       T lr_scalar, const Segments<T>& adapted, T* grad_sums, T* trajectory, int* bad_class,
                       T* workspace, cudaStream_t stream) {
  const Layout l = make_layout(d, false, lr.n > 0);
  return launch_tasks(adapt_kernel<T>, tasks, l, sizeof(T), workspace == nullptr, stream, d, l, steps, x,
                      y_float, y_class, theta0, lr, lr_scalar, adapted, grad_sums, trajectory, bad_class,
                      workspace);
}

template <typename T>
cudaError_t reverse_cuda(const MlpDims& d, int64_t tasks, int64_t steps, const T* x, const T* y_float,
                         const int64_t* y_class, const Segments<const T>& lr, T lr_scalar, const T* trajectory,
                         const Segments<const T>& v_in, T* v_out, T* dlr, int* bad_class, T* workspace,
                         cudaStream_t stream) {
  const Layout l = make_layout(d, true, lr.n > 0);
  return launch_tasks(reverse_kernel<T>, tasks, l, sizeof(T), workspace == nullptr, stream, d, l, steps, x,
                      y_float, y_class, lr, lr_scalar, trajectory, v_in, v_out, dlr, bad_class, workspace);
}

template <typename T>
cudaError_t task_loss_grad_cuda(const MlpDims& d, int64_t tasks, const T* x, const T* y_float,
                                const int64_t* y_class, const Segments<const T>& theta, T scale, T* losses,
                                T* grads, int* bad_class, T* workspace, cudaStream_t stream) {
  const Layout l = make_layout(d, false, false);
  return launch_tasks(task_loss_grad_kernel<T>, tasks, l, sizeof(T), workspace == nullptr, stream, d, l, x,
                      y_float, y_class, theta, scale, losses, grads, bad_class, workspace);
}

template <typename T>
cudaError_t sum_tasks_cuda(int64_t tasks, const T* a, const T* b, T scale, const Segments<T>& out,
                           cudaStream_t stream) {
  const int64_t P = out.start[out.n];
  if (P == 0) return cudaSuccess;
  const int threads = 256;
  sum_tasks_kernel<T><<<static_cast<unsigned>((P + threads - 1) / threads), threads, 0, stream>>>(
      tasks, a, b, scale, out);
  return cudaGetLastError();
}

#define MTL_DEPLOY_INSTANTIATE(T)                                                                       \
  template cudaError_t adapt_cuda<T>(const MlpDims&, int64_t, int64_t, const T*, const T*,              \
                                     const int64_t*, const Segments<const T>&, const Segments<const T>&, \
                                     T, const Segments<T>&, T*, T*, int*, T*, cudaStream_t);            \
  template cudaError_t reverse_cuda<T>(const MlpDims&, int64_t, int64_t, const T*, const T*,            \
                                       const int64_t*, const Segments<const T>&, T, const T*,           \
                                       const Segments<const T>&, T*, T*, int*, T*, cudaStream_t);       \
  template cudaError_t task_loss_grad_cuda<T>(const MlpDims&, int64_t, const T*, const T*,              \
                                              const int64_t*, const Segments<const T>&, T, T*, T*,      \
                                              int*, T*, cudaStream_t);                                  \
  template cudaError_t sum_tasks_cuda<T>(int64_t, const T*, const T*, T, const Segments<T>&,            \
                                         cudaStream_t);
MTL_DEPLOY_INSTANTIATE(float)
MTL_DEPLOY_INSTANTIATE(double)
#undef MTL_DEPLOY_INSTANTIATE

}  // namespace cuda
}  // namespace mtl_deploy
