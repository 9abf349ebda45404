// Host build of kernels/cells.cuh for the tests: applies one cell's per-element function to n
// elements read from stdin (k arrays of n doubles) and writes its outputs (m arrays of n doubles)
// to stdout. Usage: harness CELL f32|f64 RELU N
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cells.cuh"

template <typename T>
static int run(const char* cell, int relu, long n) {
    int k = 0, m = 0;
    if (!strcmp(cell, "vanilla")) { k = 1; m = 2; }
    else if (!strcmp(cell, "gru")) { k = 7; m = 5; }
    else if (!strcmp(cell, "ugrnn")) { k = 5; m = 4; }
    else if (!strcmp(cell, "lstm")) { k = 5; m = 8; }
    else { fprintf(stderr, "unknown cell %s\n", cell); return 2; }
    std::vector<double> in((size_t)k * n), out((size_t)m * n);
    if (fread(in.data(), sizeof(double), in.size(), stdin) != in.size()) { fprintf(stderr, "short input\n"); return 3; }
    std::vector<T> o(m);
    for (long i = 0; i < n; ++i) {
        T a[7];
        for (int q = 0; q < k; ++q) a[q] = (T)in[(size_t)q * n + i];
        if (k == 1) fastfp::vanilla_elem<T>(a[0], relu, &o[0], &o[1]);
        else if (k == 7) fastfp::gru_elem<T>(a[0], a[1], a[2], a[3], a[4], a[5], a[6], &o[0], &o[1], &o[2], &o[3], &o[4]);
        else if (m == 4) fastfp::ugrnn_elem<T>(a[0], a[1], a[2], a[3], a[4], &o[0], &o[1], &o[2], &o[3]);
        else fastfp::lstm_elem<T>(a[0], a[1], a[2], a[3], a[4], &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7]);
        for (int q = 0; q < m; ++q) out[(size_t)q * n + i] = (double)o[q];
    }
    fwrite(out.data(), sizeof(double), out.size(), stdout);
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 5) { fprintf(stderr, "usage: harness CELL f32|f64 RELU N\n"); return 2; }
    long n = atol(argv[4]);
    int relu = atoi(argv[3]);
    return strcmp(argv[2], "f32") ? run<double>(argv[1], relu, n) : run<float>(argv[1], relu, n);
}
