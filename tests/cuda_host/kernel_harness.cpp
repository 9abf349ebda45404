// Host execution of the CUDA kernels of kernels/cells.cu (index math, layouts, broadcasting of the
// shared input row), for machines without a GPU: __global__ functions become plain functions and
// each launch is a loop over blocks and threads. Usage:
//   kernel_harness KERNEL f32|f64 B H AX_ROWS [RELU|G]  < inputs (doubles) > outputs (doubles)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

struct FfpDim { unsigned x; };
static FfpDim blockIdx, threadIdx, blockDim;
#define __global__
#include "cells.cu"

template <typename F>
static void launch(long n, F f) {
    blockDim.x = 256;
    for (unsigned b = 0; b < (unsigned)((n + 255) / 256); ++b)
        for (unsigned t = 0; t < 256; ++t) { blockIdx.x = b; threadIdx.x = t; f(); }
}

template <typename T>
static std::vector<T> read(size_t n) {
    std::vector<double> d(n);
    if (fread(d.data(), sizeof(double), n, stdin) != n) { fprintf(stderr, "short input\n"); exit(3); }
    return std::vector<T>(d.begin(), d.end());
}

template <typename T>
static void write(const std::vector<T>& v) {
    std::vector<double> d(v.begin(), v.end());
    fwrite(d.data(), sizeof(double), d.size(), stdout);
}


template <typename T> struct K;
template <> struct K<double> {
    static constexpr auto vf = vanilla_forward_f64; static constexpr auto gf = gru_forward_f64;
    static constexpr auto uf = ugrnn_forward_f64; static constexpr auto lf = lstm_forward_f64;
    static constexpr auto gj = gated_jvp_f64;
};
template <> struct K<float> {
    static constexpr auto vf = vanilla_forward_f32; static constexpr auto gf = gru_forward_f32;
    static constexpr auto uf = ugrnn_forward_f32; static constexpr auto lf = lstm_forward_f32;
    static constexpr auto gj = gated_jvp_f32;
};

template <typename T>
static int run(const char* k, int B, int H, int rows, int extra) {
    long n = (long)B * H;
    if (!strcmp(k, "vanilla_forward")) {
        auto ax = read<T>((size_t)rows * H); auto hh = read<T>(n);
        std::vector<T> out(n), slope(n);
        launch(n, [&] { K<T>::vf(ax.data(), rows, hh.data(), extra, B, H, out.data(), slope.data()); });
        write(out); write(slope);
    } else if (!strcmp(k, "gru_forward") || !strcmp(k, "ugrnn_forward")) {
        int G = k[0] == 'g' ? 3 : 2;
        auto ax = read<T>((size_t)rows * G * H); auto hh = read<T>(n * G); auto h = read<T>(n);
        std::vector<T> out(n), C(n * G), D(n);
        if (G == 3) launch(n, [&] { K<T>::gf(ax.data(), rows, hh.data(), h.data(), B, H, out.data(), C.data(), D.data()); });
        else launch(n, [&] { K<T>::uf(ax.data(), rows, hh.data(), h.data(), B, H, out.data(), C.data(), D.data()); });
        write(out); write(C); write(D);
    } else if (!strcmp(k, "lstm_forward")) {
        auto ax = read<T>((size_t)rows * 4 * H); auto hh = read<T>(n * 4); auto hc = read<T>(n * 2);
        std::vector<T> out(n * 2), coef(n * 6);
        launch(n, [&] { K<T>::lf(ax.data(), rows, hh.data(), hc.data(), B, H, out.data(), coef.data()); });
        write(out); write(coef);
    } else if (!strcmp(k, "gated_jvp")) {
        int G = extra;
        auto C = read<T>(n * G); auto D = read<T>(n); auto u = read<T>(n * G); auto v = read<T>(n);
        std::vector<T> out(n);
        launch(n, [&] { K<T>::gj(C.data(), D.data(), u.data(), v.data(), G, B, H, out.data()); });
        write(out);
    } else {
        fprintf(stderr, "unknown kernel %s\n", k);
        return 2;
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 6) { fprintf(stderr, "usage: kernel_harness KERNEL f32|f64 B H AX_ROWS [RELU|G]\n"); return 2; }
    int B = atoi(argv[3]), H = atoi(argv[4]), rows = atoi(argv[5]), extra = argc > 6 ? atoi(argv[6]) : 0;
    return strcmp(argv[2], "f32") ? run<double>(argv[1], B, H, rows, extra) : run<float>(argv[1], B, H, rows, extra);
}
