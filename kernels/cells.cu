// Fused element-wise passes of fastfp's GPU backend (compiled at run time by CuPy's RawModule).
// The GEMMs (x W_ih^T + b_ih, h W_hh^T + b_hh, v W_hh^T) run in cuBLAS beforehand; one thread per
// (point, unit) then applies the gate nonlinearities and writes the new state together with the
// linearisation coefficients, so a Newton-Krylov solve reads them back in every J v product
// instead of recomputing transcendentals. Arrays are C-contiguous; ax has ax_rows = 1 (input
// shared by all points) or B rows.
#include "cells.cuh"

#define FFP_INDEX                                                   \
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; \
    if (idx >= (long long)B * H) return;                            \
    long long b = idx / H, j = idx % H;                             \
    long long xrow = (ax_rows == 1) ? 0 : b;

#define FFP_KERNELS(T, SUFFIX)                                                                       \
extern "C" __global__ void vanilla_forward_##SUFFIX(const T* ax, int ax_rows, const T* hh, int relu,  \
                                                   int B, int H, T* out, T* slope) {                 \
    FFP_INDEX                                                                                        \
    fastfp::vanilla_elem<T>(ax[xrow * H + j] + hh[b * H + j], relu, &out[idx], &slope[idx]);         \
}                                                                                                    \
extern "C" __global__ void gru_forward_##SUFFIX(const T* ax, int ax_rows, const T* hh, const T* h,   \
                                               int B, int H, T* out, T* C, T* D) {                   \
    FFP_INDEX                                                                                        \
    const T* a = ax + xrow * 3 * H;                                                                  \
    const T* g = hh + b * 3 * H;                                                                     \
    T* c = C + b * 3 * H;                                                                            \
    fastfp::gru_elem<T>(a[j], a[H + j], a[2 * H + j], g[j], g[H + j], g[2 * H + j], h[idx],          \
                        &out[idx], &c[j], &c[H + j], &c[2 * H + j], &D[idx]);                        \
}                                                                                                    \
extern "C" __global__ void ugrnn_forward_##SUFFIX(const T* ax, int ax_rows, const T* hh, const T* h, \
                                                 int B, int H, T* out, T* C, T* D) {                 \
    FFP_INDEX                                                                                        \
    const T* a = ax + xrow * 2 * H;                                                                  \
    const T* g = hh + b * 2 * H;                                                                     \
    T* c = C + b * 2 * H;                                                                            \
    fastfp::ugrnn_elem<T>(a[j], a[H + j], g[j], g[H + j], h[idx], &out[idx], &c[j], &c[H + j],       \
                          &D[idx]);                                                                  \
}                                                                                                    \
extern "C" __global__ void lstm_forward_##SUFFIX(const T* ax, int ax_rows, const T* hh, const T* hc, \
                                                int B, int H, T* out, T* coef) {                     \
    /* hc and out are (B, 2H) = [h, c]; coef is (6, B, H): ci, cf, cg, f, co, e. */                  \
    FFP_INDEX                                                                                        \
    const T* a = ax + xrow * 4 * H;                                                                  \
    const T* g = hh + b * 4 * H;                                                                     \
    long long BH = (long long)B * H;                                                                 \
    fastfp::lstm_elem<T>(a[j] + g[j], a[H + j] + g[H + j], a[2 * H + j] + g[2 * H + j],              \
                         a[3 * H + j] + g[3 * H + j], hc[b * 2 * H + H + j],                          \
                         &out[b * 2 * H + j], &out[b * 2 * H + H + j], &coef[idx], &coef[BH + idx],   \
                         &coef[2 * BH + idx], &coef[3 * BH + idx], &coef[4 * BH + idx],               \
                         &coef[5 * BH + idx]);                                                        \
}                                                                                                    \
extern "C" __global__ void gated_jvp_##SUFFIX(const T* C, const T* D, const T* u, const T* v, int G, \
                                             int B, int H, T* out) {                                 \
    /* out = sum_k C_k * u_k + D * v for the gru (G = 3) and ugrnn (G = 2) linearisations. */        \
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;                                \
    if (idx >= (long long)B * H) return;                                                             \
    long long b = idx / H, j = idx % H;                                                              \
    T acc = D[idx] * v[idx];                                                                         \
    for (int k = 0; k < G; ++k) acc += C[b * G * H + k * H + j] * u[b * G * H + k * H + j];          \
    out[idx] = acc;                                                                                  \
}

FFP_KERNELS(double, f64)
FFP_KERNELS(float, f32)
