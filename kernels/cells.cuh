// Per-element math of fastfp's cells, shared by the CUDA kernels (cells.cu) and a host build
// used by the tests (g++ -x c++ with FASTFP_HOST defined), so the formulas the GPU runs are
// checked against the NumPy reference on machines without a GPU. (The device build differs in
// rounding only: CuPy compiles with -ftz=true, flushing subnormals to zero, and NVRTC contracts
// a * b + c into fused multiply-adds; the host build does neither. The tests' tolerances cover it.)
//
// Each function takes one element's gate pre-activations and state, and writes the new state and
// the linearisation coefficients that fastfp/_linearize.py defines (same names, same layout):
//   vanilla:  out, slope                    J v = slope * u
//   gru:      out, C = [ar, az, an], D = z  J v = ar*u_r + az*u_z + an*u_n + z*v
//   ugrnn:    out, C = [au, ac],     D = u  J v = au*u_u + ac*u_c + u*v
//   lstm:     h', c', ci, cf, cg, f, co, e  (see _linearize.py)
#pragma once

#ifdef FASTFP_HOST
#include <cmath>
#define FFP_FN inline
#define FFP_EXP std::exp
#define FFP_TANH std::tanh
#else
#define FFP_FN __host__ __device__ inline
#define FFP_EXP exp
#define FFP_TANH tanh
#endif

namespace fastfp {

// exp(-log(1 + exp(-a))) without overflow for either sign (as the reference's logaddexp form).
template <typename T>
FFP_FN T sigmoid(T a) {
    if (a >= T(0)) {
        return T(1) / (T(1) + FFP_EXP(-a));
    }
    T e = FFP_EXP(a);
    return e / (T(1) + e);
}

template <typename T>
FFP_FN void vanilla_elem(T pre, int relu, T* out, T* slope) {
    if (relu) {
        // NaN stays NaN, as NumPy's maximum keeps it (a comparison alone would make it 0).
        *out = (pre > T(0) || pre != pre) ? pre : T(0);
        *slope = pre > T(0) ? T(1) : T(0);
    } else {
        T t = FFP_TANH(pre);
        *out = t;
        *slope = T(1) - t * t;
    }
}

// torch.nn.GRU convention: n = tanh(x_n + r * (W_n h + b_n)).
template <typename T>
FFP_FN void gru_elem(T xr, T xz, T xn, T hr, T hz, T hn, T h, T* out, T* ar, T* az, T* an, T* d) {
    T r = sigmoid(xr + hr);
    T z = sigmoid(xz + hz);
    T n = FFP_TANH(xn + r * hn);
    *out = (T(1) - z) * n + z * h;
    T dn = (T(1) - z) * (T(1) - n * n);
    *ar = dn * hn * r * (T(1) - r);
    *az = (h - n) * z * (T(1) - z);
    *an = dn * r;
    *d = z;
}

template <typename T>
FFP_FN void ugrnn_elem(T xu, T xc, T hu, T hc, T h, T* out, T* au, T* ac, T* d) {
    T u = sigmoid(xu + hu);
    T c = FFP_TANH(xc + hc);
    *out = u * h + (T(1) - u) * c;
    *au = (h - c) * u * (T(1) - u);
    *ac = (T(1) - u) * (T(1) - c * c);
    *d = u;
}

// pre_* are the full pre-activations (input + recurrent + biases); c is the cell state.
template <typename T>
FFP_FN void lstm_elem(T pi, T pf, T pg, T po, T c, T* h2, T* c2, T* ci, T* cf, T* cg, T* fo, T* co, T* e) {
    T i = sigmoid(pi), f = sigmoid(pf), g = FFP_TANH(pg), o = sigmoid(po);
    T cn = f * c + i * g;
    T tc = FFP_TANH(cn);
    *c2 = cn;
    *h2 = o * tc;
    *ci = g * i * (T(1) - i);
    *cf = c * f * (T(1) - f);
    *cg = i * (T(1) - g * g);
    *fo = f;
    *co = tc * o * (T(1) - o);
    *e = o * (T(1) - tc * tc);
}

}  // namespace fastfp
