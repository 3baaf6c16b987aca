// Register-blocked matrix products for the small, L1-resident matrices of the
// fused kernels (a few to a few hundred rows and columns).  At these sizes a
// BLAS call costs more in dispatch and packing than the arithmetic, so the
// products are short loops over GCC/Clang vector types, whose accumulators
// the compiler keeps in registers (plain arrays with ragged edges got spilled
// to the stack).  No allocation, no threading: callers own both.
//
// Two shapes of product, picked by the caller from the operands' layouts:
//   gemm      C (M x N) (+)= A B, vectorised over N (B rows contiguous);
//   gemm_dot  C (M x N) (+)= A Bt^T, vectorised over the reduction (rows of A
//             and Bt contiguous), for outputs too narrow to fill a vector.
//
// gemm reads up to one vector past the end of B's and C's rows (those lanes
// are dropped, never stored), so those operands must be followed by at least
// kSlack readable elements.  gemm_dot reads exactly its operands, so it also
// serves rows of caller-owned tensors.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace mtl_deploy {

constexpr int64_t kSlack = 64;

// One 64-byte vector of T.
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

// Every lane = s, written as an initialiser list so it compiles to one broadcast.
template <typename T, std::size_t... I>
__attribute__((always_inline)) inline Vec<T> splat_impl(T s, std::index_sequence<I...>) {
  return Vec<T>{((void)I, s)...};
}
template <typename T>
__attribute__((always_inline)) inline Vec<T> splat(T s) {
  return splat_impl<T>(s, std::make_index_sequence<kLanes<T>>{});
}

template <typename T>
__attribute__((always_inline)) inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Lane indices 0, 1, ... as values of T.
template <typename T>
__attribute__((always_inline)) inline Vec<T> lane_ids() {
  Vec<T> v;
  for (int i = 0; i < kLanes<T>; ++i) v[i] = T(i);
  return v;
}

// The first n lanes from p, the rest zero; reads a whole vector (slack).
template <typename T>
__attribute__((always_inline)) inline Vec<T> load_first(const T* p, int64_t n) {
  const Vec<T> v = load(p);
  if (n >= kLanes<T>) return v;
  return lane_ids<T>() < splat<T>(T(n)) ? v : Vec<T>{};
}

// The first n < kLanes elements at p, the rest zero; reads only those n.
template <typename T>
__attribute__((always_inline)) inline Vec<T> load_partial(const T* p, int64_t n) {
  Vec<T> v{};
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}

// Stores the first n <= kLanes lanes.
template <typename T>
__attribute__((always_inline)) inline void store(T* p, const Vec<T>& v, int64_t n) {
  if (n >= kLanes<T>)
    std::memcpy(p, &v, sizeof(v));
  else
    for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

// Sum of all lanes by adding halves (64 -> 32 -> 16 bytes), which compiles to
// register extracts rather than a round trip through the stack.
template <typename T>
__attribute__((always_inline)) inline T lane_sum(const Vec<T>& v) {
  typedef T Half __attribute__((vector_size(32)));
  typedef T Quarter __attribute__((vector_size(16)));
  Half h0, h1;
  std::memcpy(&h0, &v, 32);
  std::memcpy(&h1, reinterpret_cast<const char*>(&v) + 32, 32);
  const Half h = h0 + h1;
  Quarter q0, q1;
  std::memcpy(&q0, &h, 16);
  std::memcpy(&q1, reinterpret_cast<const char*>(&h) + 16, 16);
  const Quarter q = q0 + q1;
  T s = q[0];
  for (int i = 1; i < static_cast<int>(16 / sizeof(T)); ++i) s += q[i];
  return s;
}

// exp on whole vectors: x = n ln2 + r with |r| <= ln2 / 2, a Taylor
// polynomial for e^r (degree 7 in float, 13 in double: below one ulp of
// either type), and 2^n placed in the exponent bits.  Inputs below the
// type's range give 0 (the softmax calls it on z - max(z) <= 0).
template <typename T>
__attribute__((always_inline)) inline Vec<T> vexp(Vec<T> x) {
  constexpr bool f32 = sizeof(T) == 4;
  using I = typename std::conditional<f32, int32_t, int64_t>::type;
  typedef I IVec __attribute__((vector_size(64)));
  const T lo = f32 ? T(-87.0) : T(-708.0);
  x = x < splat<T>(lo) ? splat<T>(lo) : x;
  // n = round(x / ln2): adding and subtracting 1.5 * 2^mantissa rounds to
  // the nearest integer in the FPU's default mode.
  const T magic = f32 ? T(12582912.0) : T(6755399441055744.0);
  const Vec<T> n = (x * splat<T>(T(1.4426950408889634)) + splat<T>(magic)) - splat<T>(magic);
  const Vec<T> r = x - n * splat<T>(T(0.6931471805599453));
  constexpr int degree = f32 ? 7 : 13;
  Vec<T> p = splat<T>(T(1));
  for (int k = degree; k >= 1; --k) p = splat<T>(T(1)) + p * r * splat<T>(T(1) / T(k));
  const IVec bits = (__builtin_convertvector(n, IVec) + (f32 ? 127 : 1023)) << (f32 ? 23 : 52);
  Vec<T> scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// C[0:R, 0:nt] (+)= A[0:R, :] B[:, 0:NV vectors], nt <= NV * kLanes.
template <typename T, int R, int NV>
__attribute__((always_inline)) inline void gemm_tile(int64_t Kd, const T* A, int64_t ars, int64_t acs, const T* B,
                      int64_t ldb, T* C, int64_t ldc, int64_t nt, bool accumulate) {
  constexpr int L = kLanes<T>;
  Vec<T> acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? load_first(C + r * ldc + v * L, nt - v * L) : Vec<T>{};
  for (int64_t k = 0; k < Kd; ++k) {
    Vec<T> b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = load(B + k * ldb + v * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec<T> a = splat<T>(A[r * ars + k * acs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store(C + r * ldc + v * L, acc[r][v], nt - v * L);
}

// One block of R rows across all N columns.  Outputs up to four vectors wide
// (most hidden layers here) are a single tile, so each broadcast of A feeds
// every column; wider outputs go in tiles of two vectors.
template <typename T, int R>
inline void gemm_rows(int64_t N, int64_t Kd, const T* A, int64_t ars, int64_t acs,
                      const T* B, int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  constexpr int L = kLanes<T>;
  switch ((N + L - 1) / L) {
    case 1: gemm_tile<T, R, 1>(Kd, A, ars, acs, B, ldb, C, ldc, N, accumulate); return;
    case 2: gemm_tile<T, R, 2>(Kd, A, ars, acs, B, ldb, C, ldc, N, accumulate); return;
    case 3: gemm_tile<T, R, 3>(Kd, A, ars, acs, B, ldb, C, ldc, N, accumulate); return;
    case 4: gemm_tile<T, R, 4>(Kd, A, ars, acs, B, ldb, C, ldc, N, accumulate); return;
    default: break;
  }
  int64_t n = 0;
  for (; n + 2 * L <= N; n += 2 * L)
    gemm_tile<T, R, 2>(Kd, A, ars, acs, B + n, ldb, C + n, ldc, 2 * L, accumulate);
  if (n < N) gemm_tile<T, R, 2>(Kd, A, ars, acs, B + n, ldb, C + n, ldc, N - n, accumulate);
}

// C (M x N, row stride ldc) (+)= A (M x Kd; element (m, k) at A[m*ars + k*acs])
// times B (Kd x N, row stride ldb), in blocks of 5 rows: up to 20 vector
// accumulators plus the B row and one broadcast fit in the 32 registers.
template <typename T>
inline void gemm(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t ars, int64_t acs,
                 const T* B, int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  int64_t m = 0;
  for (; m + 5 <= M; m += 5)
    gemm_rows<T, 5>(N, Kd, A + m * ars, ars, acs, B, ldb, C + m * ldc, ldc, accumulate);
  const T* a = A + m * ars;
  T* c = C + m * ldc;
  switch (M - m) {
    case 4: gemm_rows<T, 4>(N, Kd, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    case 3: gemm_rows<T, 3>(N, Kd, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    case 2: gemm_rows<T, 2>(N, Kd, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    case 1: gemm_rows<T, 1>(N, Kd, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    default: break;
  }
}

// c[r][c0 + j] (+)= a[r] . bt[j] over Kd for R rows and CB columns at once:
// R * CB vector accumulators share each load.  Row pointers allow gathered
// rows (the routed multi-head kernel).
template <typename T, int R, int CB>
__attribute__((always_inline)) inline void dot_tile(int64_t Kd, const T* const* a, const T* const* bt, T* const* c,
                     int64_t c0, bool accumulate) {
  constexpr int L = kLanes<T>;
  Vec<T> acc[R][CB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < CB; ++j) acc[r][j] = Vec<T>{};
  // rem < L only for the ragged end of the reduction, read lane by lane.
  auto step = [&](int64_t k, int64_t rem) {
    auto get = [&](const T* p) { return rem < L ? load_partial(p + k, rem) : load(p + k); };
    Vec<T> b[CB];
#pragma GCC unroll 5
    for (int j = 0; j < CB; ++j) b[j] = get(bt[j]);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const Vec<T> x = get(a[r]);
#pragma GCC unroll 5
      for (int j = 0; j < CB; ++j) acc[r][j] += x * b[j];
    }
  };
  int64_t k = 0;
  for (; k + L <= Kd; k += L) step(k, L);
  if (k < Kd) step(k, Kd - k);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < CB; ++j)
      c[r][c0 + j] = (accumulate ? c[r][c0 + j] : T(0)) + lane_sum<T>(acc[r][j]);
}

template <typename T, int R, int CB>
__attribute__((always_inline)) inline void dot_cols(int64_t Kd, const T* const* a, const T* bt,
                                                    int64_t ldbt, T* const* c, int64_t n,
                                                    bool accumulate) {
  const T* b[CB];
  for (int j = 0; j < CB; ++j) b[j] = bt + (n + j) * ldbt;
  dot_tile<T, R, CB>(Kd, a, b, c, n, accumulate);
}

// Columns in tiles of five (ten-way heads are two tiles), then the remainder
// in one narrower tile.
template <typename T, int R>
inline void dot_rows(int64_t N, int64_t Kd, const T* const* a, const T* bt, int64_t ldbt,
                     T* const* c, bool accumulate) {
  int64_t n = 0;
  for (; n + 5 <= N; n += 5) dot_cols<T, R, 5>(Kd, a, bt, ldbt, c, n, accumulate);
  switch (N - n) {
    case 4: dot_cols<T, R, 4>(Kd, a, bt, ldbt, c, n, accumulate); break;
    case 3: dot_cols<T, R, 3>(Kd, a, bt, ldbt, c, n, accumulate); break;
    case 2: dot_cols<T, R, 2>(Kd, a, bt, ldbt, c, n, accumulate); break;
    case 1: dot_cols<T, R, 1>(Kd, a, bt, ldbt, c, n, accumulate); break;
    default: break;
  }
}

// C (M x N) (+)= A (M x Kd, row stride lda) times Bt^T (Bt is N x Kd, row
// stride ldbt).
template <typename T>
inline void gemm_dot(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t lda, const T* Bt,
                     int64_t ldbt, T* C, int64_t ldc, bool accumulate) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    const T* a[4] = {A + m * lda, A + (m + 1) * lda, A + (m + 2) * lda, A + (m + 3) * lda};
    T* c[4] = {C + m * ldc, C + (m + 1) * ldc, C + (m + 2) * ldc, C + (m + 3) * ldc};
    dot_rows<T, 4>(N, Kd, a, Bt, ldbt, c, accumulate);
  }
  for (; m < M; ++m) {
    const T* a[1] = {A + m * lda};
    T* c[1] = {C + m * ldc};
    dot_rows<T, 1>(N, Kd, a, Bt, ldbt, c, accumulate);
  }
}

}  // namespace mtl_deploy
