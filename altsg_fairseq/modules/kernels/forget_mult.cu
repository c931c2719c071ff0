// Forget-mult kernels: c_t = f_t * x_t + (1 - f_t) * c_{t-1}.
//
// Every array is (T, N) row-major with N = B * H (h0 and grad_h0: (N,)).
// SCALAR is the element type (float or double), set when compiling.
// Running states of the scans are kept in double.
//
// Two designs:
//  * sequential: one thread per column n walks all of T (the original code's design;
//    best when N is large);
//  * chunked scan: time is cut into K chunks of L steps. The recurrence is
//    linear, c_end = A * c_start + B over a chunk, so (1) every (chunk,
//    column) computes its A and B from a zero state in parallel, (2) one
//    thread per column chains the K chunks to get each chunk's true start
//    state, (3) every (chunk, column) replays its chunk from that start.
//    The backward is the same scan run in reverse time.
//
// The per-thread bodies are plain functions, so that a host harness can run
// them on the CPU (tests/unit/test_forget_mult_cuda_source.py).

#ifndef SCALAR
#define SCALAR float
#endif
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FM_FN __device__ __forceinline__
#else
#define FM_FN static inline
#endif

typedef SCALAR scalar_t;

// No array a kernel writes overlaps another of its arrays (the caller allocates
// every output and buffer afresh), so the compiler may keep loads in registers
// and reorder them past stores. nvcc, NVRTC and g++ (the host harness) know it.
#define RESTRICT __restrict__

FM_FN int fm_min(int a, int b) { return a < b ? a : b; }

// ---- shared bodies: one column over the time steps [begin, end) -------------

// Forward from state s; returns the state after step end - 1.
FM_FN double forward_range(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, scalar_t* RESTRICT c, int N, int n,
                           int begin, int end, double s) {
  for (int t = begin; t < end; ++t) {
    long i = (long)t * N + n;
    s = (double)f[i] * x[i] + (1.0 - f[i]) * s;
    c[i] = (scalar_t)s;
  }
  return s;
}

// Backward over [begin, end) walking time down from the carry that arrives
// at step end - 1; returns the carry leaving step begin (towards begin - 1).
FM_FN double backward_range(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const scalar_t* RESTRICT h0,
                            const scalar_t* RESTRICT c, const scalar_t* RESTRICT grad_c, scalar_t* RESTRICT grad_f,
                            scalar_t* RESTRICT grad_x, int N, int n, int begin, int end, double carry) {
  for (int t = end - 1; t >= begin; --t) {
    long i = (long)t * N + n;
    double g = grad_c[i] + carry;
    double prev = t > 0 ? (double)c[i - N] : (double)h0[n];
    grad_f[i] = (scalar_t)(g * (x[i] - prev));
    grad_x[i] = (scalar_t)(g * f[i]);
    carry = g * (1.0 - f[i]);
  }
  return carry;
}

// ---- sequential design -----------------------------------------------------

FM_FN void seq_forward(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const scalar_t* RESTRICT h0,
                       scalar_t* RESTRICT c, int T, int N, int n) {
  forward_range(f, x, c, N, n, 0, T, (double)h0[n]);
}

FM_FN void seq_backward(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const scalar_t* RESTRICT h0,
                        const scalar_t* RESTRICT c, const scalar_t* RESTRICT grad_c,
                        scalar_t* RESTRICT grad_f, scalar_t* RESTRICT grad_x, scalar_t* RESTRICT grad_h0,
                        int T, int N, int n) {
  grad_h0[n] = (scalar_t)backward_range(f, x, h0, c, grad_c, grad_f, grad_x, N, n, 0, T, 0.0);
}

// ---- chunked scan: forward ---------------------------------------------------

// Phase 1 for chunk k of column n: c_end = A * c_start + B.
FM_FN void chunk_forward_summary(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, double* RESTRICT A, double* RESTRICT B,
                                 int T, int N, int L, int k, int n) {
  double a = 1.0, b = 0.0;
  int end = fm_min(T, (k + 1) * L);
  for (int t = k * L; t < end; ++t) {
    long i = (long)t * N + n;
    a *= 1.0 - f[i];
    b = (double)f[i] * x[i] + (1.0 - f[i]) * b;
  }
  A[(long)k * N + n] = a;
  B[(long)k * N + n] = b;
}

// Phase 2 for column n: the true start state of every chunk.
FM_FN void chunk_forward_chain(const scalar_t* RESTRICT h0, const double* RESTRICT A, const double* RESTRICT B, double* RESTRICT start,
                               int K, int N, int n) {
  double s = h0[n];
  for (int k = 0; k < K; ++k) {
    long j = (long)k * N + n;
    start[j] = s;
    s = A[j] * s + B[j];
  }
}

// Phase 3 for chunk k of column n: replay the chunk from its start state.
FM_FN void chunk_forward_replay(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const double* RESTRICT start,
                                scalar_t* RESTRICT c, int T, int N, int L, int k, int n) {
  forward_range(f, x, c, N, n, k * L, fm_min(T, (k + 1) * L), start[(long)k * N + n]);
}

// ---- chunked scan: backward --------------------------------------------------

// Phase 1: the gradient carried out of chunk k (towards earlier time) is
// A * carry_in + B, carry_in being what arrives from chunk k + 1.
FM_FN void chunk_backward_summary(const scalar_t* RESTRICT f, const scalar_t* RESTRICT grad_c, double* RESTRICT A, double* RESTRICT B,
                                  int T, int N, int L, int k, int n) {
  double a = 1.0, b = 0.0;
  int end = fm_min(T, (k + 1) * L);
  for (int t = end - 1; t >= k * L; --t) {
    long i = (long)t * N + n;
    a *= 1.0 - f[i];
    b = (grad_c[i] + b) * (1.0 - f[i]);
  }
  A[(long)k * N + n] = a;
  B[(long)k * N + n] = b;
}

// Phase 2 for column n: the carry arriving at the end of every chunk.
FM_FN void chunk_backward_chain(const double* RESTRICT A, const double* RESTRICT B, double* RESTRICT carry_in,
                                scalar_t* RESTRICT grad_h0, int K, int N, int n) {
  double carry = 0.0;
  for (int k = K - 1; k >= 0; --k) {
    long j = (long)k * N + n;
    carry_in[j] = carry;
    carry = A[j] * carry + B[j];
  }
  grad_h0[n] = (scalar_t)carry;
}

// Phase 3: replay chunk k backwards from its incoming carry.
FM_FN void chunk_backward_replay(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const scalar_t* RESTRICT h0,
                                 const scalar_t* RESTRICT c, const scalar_t* RESTRICT grad_c, const double* RESTRICT carry_in,
                                 scalar_t* RESTRICT grad_f, scalar_t* RESTRICT grad_x, int T, int N, int L, int k, int n) {
  backward_range(f, x, h0, c, grad_c, grad_f, grad_x, N, n, k * L, fm_min(T, (k + 1) * L),
                 carry_in[(long)k * N + n]);
}

// ---- kernels -------------------------------------------------------------------

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define COLUMN_THREAD(count)                           \
  long tid = (long)blockIdx.x * blockDim.x + threadIdx.x; \
  if (tid >= (count)) return;
// (chunk, column) threads: consecutive threads take consecutive columns.
#define CHUNK_THREAD(K, N)                             \
  long tid = (long)blockIdx.x * blockDim.x + threadIdx.x; \
  if (tid >= (long)(K) * (N)) return;                  \
  int k = (int)(tid / (N)), n = (int)(tid % (N));

extern "C" __global__ void fm_seq_forward(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const scalar_t* RESTRICT h0,
                                          scalar_t* RESTRICT c, int T, int N) {
  COLUMN_THREAD(N) seq_forward(f, x, h0, c, T, N, (int)tid);
}

extern "C" __global__ void fm_seq_backward(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const scalar_t* RESTRICT h0,
                                           const scalar_t* RESTRICT c, const scalar_t* RESTRICT grad_c, scalar_t* RESTRICT grad_f,
                                           scalar_t* RESTRICT grad_x, scalar_t* RESTRICT grad_h0, int T, int N) {
  COLUMN_THREAD(N) seq_backward(f, x, h0, c, grad_c, grad_f, grad_x, grad_h0, T, N, (int)tid);
}

extern "C" __global__ void fm_chunk_forward_summary(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, double* RESTRICT A,
                                                    double* RESTRICT B, int T, int N, int L, int K) {
  CHUNK_THREAD(K, N) chunk_forward_summary(f, x, A, B, T, N, L, k, n);
}

extern "C" __global__ void fm_chunk_forward_chain(const scalar_t* RESTRICT h0, const double* RESTRICT A, const double* RESTRICT B,
                                                  double* RESTRICT start, int K, int N) {
  COLUMN_THREAD(N) chunk_forward_chain(h0, A, B, start, K, N, (int)tid);
}

extern "C" __global__ void fm_chunk_forward_replay(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const double* RESTRICT start,
                                                   scalar_t* RESTRICT c, int T, int N, int L, int K) {
  CHUNK_THREAD(K, N) chunk_forward_replay(f, x, start, c, T, N, L, k, n);
}

extern "C" __global__ void fm_chunk_backward_summary(const scalar_t* RESTRICT f, const scalar_t* RESTRICT grad_c, double* RESTRICT A,
                                                     double* RESTRICT B, int T, int N, int L, int K) {
  CHUNK_THREAD(K, N) chunk_backward_summary(f, grad_c, A, B, T, N, L, k, n);
}

extern "C" __global__ void fm_chunk_backward_chain(const double* RESTRICT A, const double* RESTRICT B, double* RESTRICT carry_in,
                                                   scalar_t* RESTRICT grad_h0, int K, int N) {
  COLUMN_THREAD(N) chunk_backward_chain(A, B, carry_in, grad_h0, K, N, (int)tid);
}

extern "C" __global__ void fm_chunk_backward_replay(const scalar_t* RESTRICT f, const scalar_t* RESTRICT x, const scalar_t* RESTRICT h0,
                                                    const scalar_t* RESTRICT c, const scalar_t* RESTRICT grad_c,
                                                    const double* RESTRICT carry_in, scalar_t* RESTRICT grad_f,
                                                    scalar_t* RESTRICT grad_x, int T, int N, int L, int K) {
  CHUNK_THREAD(K, N) chunk_backward_replay(f, x, h0, c, grad_c, carry_in, grad_f, grad_x, T, N, L, k, n);
}
#endif
