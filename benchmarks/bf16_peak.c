/* This CPU core's arithmetic peak: fp32 FMA against bfloat16 dot products (AVX512_BF16).
 *
 * Why it is here: issue 4 asks --precision bfloat16 to run 1.7x faster than fp32. A
 * convolution cannot go faster than the instructions it is made of, so this measures them:
 * VFMADD231PS (16 fp32 multiply-adds) and VDPBF16PS (32 bfloat16 multiply-adds into fp32)
 * on one core, twelve independent accumulators each, all in registers, nothing else. If the
 * bf16 figure is not well above the fp32 one, no bf16 kernel (oneDNN's, PyTorch's, ours) can
 * reach the target on this CPU. AMX (TDPBF16PS) is the instruction that would; the machine
 * has it only if /proc/cpuinfo lists amx_bf16.
 *
 * Build and run (Linux, gcc 10+; needs a CPU with AVX512_BF16):
 *     gcc -O3 -funroll-loops -mavx512f -mavx512bf16 benchmarks/bf16_peak.c -o /tmp/bf16_peak
 *     /tmp/bf16_peak
 * On our 2-vCPU Xeon (AVX512_BF16, no AMX): fp32 188-208, bf16 90-105 GFLOP/s per core, 0.48-0.50x.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

enum { ACCUMULATORS = 12 };          /* enough to hide both instructions' latency */
static const long ROUNDS = 200000000L;

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Uses the accumulators' values, so that the compiler keeps the loop that made them. */
static void keep(const __m512 *acc)
{
    float sum = 0;
    for (int i = 0; i < ACCUMULATORS; i++)
        sum += _mm512_reduce_add_ps(acc[i]);
    if (sum == 12345.0f)
        puts("");
}

static double fp32_fma_gflops(void)
{
    __m512 acc[ACCUMULATORS];
    const __m512 a = _mm512_set1_ps(0.5f), b = _mm512_set1_ps(0.25f);  /* stays finite */
    for (int i = 0; i < ACCUMULATORS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    double start = seconds();
    for (long n = 0; n < ROUNDS; n++)
        for (int i = 0; i < ACCUMULATORS; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    double elapsed = seconds() - start;
    keep(acc);
    return ROUNDS * ACCUMULATORS * 16.0 * 2 / elapsed / 1e9;
}

static double bf16_dot_gflops(void)
{
    __m512 acc[ACCUMULATORS];
    const __m512bh one = (__m512bh)_mm512_set1_epi16(0x3f80);  /* bfloat16 1.0 */
    for (int i = 0; i < ACCUMULATORS; i++)
        acc[i] = _mm512_setzero_ps();
    double start = seconds();
    for (long n = 0; n < ROUNDS; n++)
        for (int i = 0; i < ACCUMULATORS; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], one, one);
    double elapsed = seconds() - start;
    keep(acc);
    return ROUNDS * ACCUMULATORS * 32.0 * 2 / elapsed / 1e9;
}

int main(void)
{
    double fp32 = fp32_fma_gflops();
    double bf16 = bf16_dot_gflops();
    printf("fp32 FMA (VFMADD231PS):     %6.1f GFLOP/s per core\n", fp32);
    printf("bf16 dot (VDPBF16PS):       %6.1f GFLOP/s per core\n", bf16);
    printf("bf16 / fp32:                %6.2fx (the most --precision bfloat16 can gain here)\n",
           bf16 / fp32);
    return 0;
}
