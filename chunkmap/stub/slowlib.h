/*
 * slowlib -- a deliberately slow scalar C library, the stand-in for a user's
 * SWIG-wrapped C code in chunkmap's demo, tests and benchmarks.
 *
 * Plain C API: every fallible function returns SLOWLIB_OK (0) or an error
 * code; results come back through output pointers.
 *
 * The computation (slowlib_compute)
 * ---------------------------------
 * With a and b as C doubles and floor() the C/Python floor:
 *
 *     if a == SLOWLIB_CRASH_VALUE: segmentation fault (the process dies)
 *     if a == SLOWLIB_HANG_VALUE:  never returns (sleeps 1 s in a loop)
 *     busy-wait slowlib_get_cost_ns() nanoseconds
 *     if not abs(1000*x) < 2**62 for x in (a, b) (true for NaN and inf):
 *         return SLOWLIB_ERANGE
 *     k = floor(1000*a) + floor(1000*b)        (64-bit signed integers)
 *     if k % 37 == 0: return SLOWLIB_EDOMAIN   (true for negative k too)
 *     *out = k; return SLOWLIB_OK
 *
 * The EDOMAIN case hits 1/37 (~2.7 %) of uniformly random inputs.
 *
 * Per-call cost
 * -------------
 * slowlib_set_cost_ns() sets a busy-wait (clock_gettime(CLOCK_MONOTONIC)
 * loop) done by every slowlib_compute() call. Its initial value is read from
 * the environment variable SLOWLIB_COST_NS by slowlib_init_from_env()
 * (default 0), which the Python module calls when it is loaded.
 *
 * Concurrency probe
 * -----------------
 * Calls with a cost > 0 count themselves while they busy-wait;
 * slowlib_get_max_concurrent() is the most that were inside at once since
 * slowlib_reset_max_concurrent(). Two threads calling the GIL-releasing
 * wrapper reach 2, whatever the load; the GIL-holding one stays at 1. Calls
 * without a cost are not counted (no atomic traffic on the cheap path).
 *
 * All functions are thread-safe (the cost and the counters are atomic).
 */
#ifndef SLOWLIB_H
#define SLOWLIB_H

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. */
#define SLOWLIB_OK 0
#define SLOWLIB_EDOMAIN 1 /* input outside the library's domain (k % 37 == 0) */
#define SLOWLIB_ERANGE 2  /* input not finite or too large                   */
#define SLOWLIB_EINVAL 3  /* invalid argument (e.g. negative cost)           */

/* Fault triggers (compared exactly with the first argument a). */
#define SLOWLIB_CRASH_VALUE (-666.0) /* segmentation fault            */
#define SLOWLIB_HANG_VALUE (-777.0)  /* never returns (sleeps forever) */

/* Compute k (see above) into *out. Returns SLOWLIB_OK or an error code;
   *out is left untouched on error. */
int slowlib_compute(double a, double b, long long *out);

/* Static, human-readable description of an error code (never NULL). */
const char *slowlib_strerror(int code);

/* Per-call busy-wait in nanoseconds. set returns SLOWLIB_EINVAL if ns < 0. */
int slowlib_set_cost_ns(long long ns);
long long slowlib_get_cost_ns(void);

/* Set the cost from the environment variable SLOWLIB_COST_NS (a decimal
   integer >= 0; unset or empty means 0). Returns SLOWLIB_EINVAL, leaving the
   cost unchanged, if the value is malformed or negative. Also run when the
   library is loaded (a constructor), so that a process loading it with ctypes
   alone gets the cost too. */
int slowlib_init_from_env(void);

/* The concurrency probe (see above). */
int slowlib_get_max_concurrent(void);
void slowlib_reset_max_concurrent(void);

#ifdef __cplusplus
}
#endif

#endif /* SLOWLIB_H */
