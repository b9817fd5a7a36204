/* slowlib: see slowlib.h for the specification. */
#define _POSIX_C_SOURCE 200809L

#include "slowlib.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

/* Accessed with atomic builtins: read by many threads, set from Python. */
static long long slowlib_cost_ns = 0;

/* The concurrency probe: costly calls busy-waiting now, and the most at once. */
static int slowlib_in_flight = 0;
static int slowlib_max_in_flight = 0;

/* 2**62: keeps floor(1000*a) + floor(1000*b) inside a signed 64-bit range. */
#define SLOWLIB_LIMIT 4611686018427387904.0

static void slowlib_busy_wait(long long ns)
{
    struct timespec start, now;
    long long elapsed;

    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        clock_gettime(CLOCK_MONOTONIC, &now);
        elapsed = (long long)(now.tv_sec - start.tv_sec) * 1000000000LL +
                  (long long)(now.tv_nsec - start.tv_nsec);
    } while (elapsed < ns);
}

/* Count one more call in flight and raise the maximum if it is passed. */
static void slowlib_enter(void)
{
    int now = __atomic_add_fetch(&slowlib_in_flight, 1, __ATOMIC_SEQ_CST);
    int most = __atomic_load_n(&slowlib_max_in_flight, __ATOMIC_SEQ_CST);
    while (now > most &&
           !__atomic_compare_exchange_n(&slowlib_max_in_flight, &most, now, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
}

static void slowlib_crash(void)
{
    /* A real SIGSEGV: the volatile pointer stops the compiler from proving
       the store undefined and dropping it. */
    int *volatile null_pointer = NULL;
    *null_pointer = 1;
    raise(SIGSEGV); /* not reached on any sane platform */
    abort();
}

static void slowlib_hang(void)
{
    struct timespec one_second = {1, 0};
    for (;;) {
        nanosleep(&one_second, NULL);
    }
}

int slowlib_compute(double a, double b, long long *out)
{
    double fa, fb;
    long long k, cost;

    if (a == SLOWLIB_CRASH_VALUE) {
        slowlib_crash();
    }
    if (a == SLOWLIB_HANG_VALUE) {
        slowlib_hang();
    }
    cost = __atomic_load_n(&slowlib_cost_ns, __ATOMIC_RELAXED);
    if (cost > 0) {
        slowlib_enter();
        slowlib_busy_wait(cost);
        __atomic_sub_fetch(&slowlib_in_flight, 1, __ATOMIC_SEQ_CST);
    }
    fa = 1000.0 * a;
    fb = 1000.0 * b;
    /* The negated comparisons are also true for NaN. */
    if (!(fabs(fa) < SLOWLIB_LIMIT) || !(fabs(fb) < SLOWLIB_LIMIT)) {
        return SLOWLIB_ERANGE;
    }
    fa = floor(fa);
    fb = floor(fb);
    k = (long long)fa + (long long)fb;
    if (k % 37 == 0) {
        return SLOWLIB_EDOMAIN;
    }
    *out = k;
    return SLOWLIB_OK;
}

const char *slowlib_strerror(int code)
{
    switch (code) {
    case SLOWLIB_OK:
        return "success";
    case SLOWLIB_EDOMAIN:
        return "input outside the library's domain";
    case SLOWLIB_ERANGE:
        return "input not finite or too large";
    case SLOWLIB_EINVAL:
        return "invalid argument";
    default:
        return "unknown error";
    }
}

int slowlib_set_cost_ns(long long ns)
{
    if (ns < 0) {
        return SLOWLIB_EINVAL;
    }
    __atomic_store_n(&slowlib_cost_ns, ns, __ATOMIC_RELAXED);
    return SLOWLIB_OK;
}

long long slowlib_get_cost_ns(void)
{
    return __atomic_load_n(&slowlib_cost_ns, __ATOMIC_RELAXED);
}

int slowlib_get_max_concurrent(void)
{
    return __atomic_load_n(&slowlib_max_in_flight, __ATOMIC_SEQ_CST);
}

void slowlib_reset_max_concurrent(void)
{
    __atomic_store_n(&slowlib_max_in_flight,
                     __atomic_load_n(&slowlib_in_flight, __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST);
}

/* Loaded by ctypes alone (chunkmap.stub.library() in a worker process that never imports the
   SWIG module), the library reads its cost from the environment too. A malformed value is
   left to the SWIG module's import to report. */
__attribute__((constructor)) static void slowlib_load(void)
{
    (void)slowlib_init_from_env();
}

int slowlib_init_from_env(void)
{
    const char *text = getenv("SLOWLIB_COST_NS");
    char *end;
    long long ns;

    if (text == NULL || *text == '\0') {
        return slowlib_set_cost_ns(0);
    }
    errno = 0;
    ns = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        return SLOWLIB_EINVAL;
    }
    return slowlib_set_cost_ns(ns);
}
