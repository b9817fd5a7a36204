/*
 * chunkmap._cloop: a C function called over a chunk with no Python per element.
 *
 *   call(address, result, columns, values, status, codes, positions, heartbeat=None,
 *        stop=False)
 *       -> (attempted, computed, failed)
 *
 * The contract is documented in chunkmap/cfunc.py, which picks this module or
 * its pure-Python twin chunkmap/_cloop_py.py (the same names, contract and
 * errors; the tests compare them) by chunkmap's convention for C extensions
 * (chunkmap/_extensions.py). Plain C API: the columns and outputs are read
 * through the buffer protocol. The function's parameter types follow the
 * columns (format 'd': double, 'q' or 'l' of 8 bytes: int64), its result kind
 * is `result`; one specialised loop per combination (1 to 4 parameters, 5
 * result kinds) calls the pointer directly. The GIL is released over the
 * whole chunk: the function must not touch Python objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_COLUMNS 4

/* Result kinds: what the function returns, and where the value goes. */
enum {
    RESULT_DOUBLE,       /* double f(...)                                 */
    RESULT_INT64,        /* int64_t f(...)                                */
    RESULT_INT,          /* int f(...), stored as int64                   */
    RESULT_CODE_DOUBLE,  /* int f(..., double *out): 0 = ok, else a code  */
    RESULT_CODE_INT64,   /* int f(..., int64_t *out): 0 = ok, else a code */
    N_RESULTS
};

/* One chunk's work, shared by every specialised loop. */
typedef struct {
    void *fn;
    char *cols[MAX_COLUMNS];
    Py_ssize_t n;
    void *values;
    uint8_t *status;
    int32_t *codes;
    int64_t *positions;
    int64_t *heartbeat;
    int stop;
    Py_ssize_t attempted, computed, failed;
} job_t;

typedef void (*loop_fn)(job_t *job);

#define UNPAREN(...) __VA_ARGS__
#define COL(k, T) (((const T *)cols[k])[i])

/* A function that returns its value: every element is computed. */
#define PLAIN(RET, OUT, PARAMS, ARGS)                                          \
    typedef RET (*F)(UNPAREN PARAMS);                                          \
    F f = (F)job->fn;                                                          \
    char *const *cols = job->cols;                                             \
    OUT *out = (OUT *)job->values;                                             \
    uint8_t *status = job->status;                                             \
    int64_t *heartbeat = job->heartbeat;                                       \
    Py_ssize_t i, n = job->n;                                                  \
    for (i = 0; i < n; i++) {                                                  \
        *heartbeat = i;                                                        \
        out[i] = (OUT)f(UNPAREN ARGS);                                         \
        status[i] = 0;                                                         \
    }                                                                          \
    job->attempted = job->computed = n;                                        \
    job->failed = 0;

/* A function that returns an error code and writes its value through a
   pointer: values are packed (one per computed element), codes and positions
   too (one per
   failed element); with stop, the loop ends after the first failure. */
#define CODED(OUT, PARAMS, ARGS)                                               \
    typedef int (*F)(UNPAREN PARAMS, OUT *);                                   \
    F f = (F)job->fn;                                                          \
    char *const *cols = job->cols;                                             \
    OUT *out = (OUT *)job->values, value;                                      \
    uint8_t *status = job->status;                                             \
    int32_t *codes = job->codes;                                               \
    int64_t *positions = job->positions;                                       \
    int64_t *heartbeat = job->heartbeat;                                       \
    Py_ssize_t i, n = job->n, computed = 0, failed = 0;                        \
    for (i = 0; i < n; i++) {                                                  \
        int code;                                                              \
        *heartbeat = i;                                                        \
        code = f(UNPAREN ARGS, &value);                                        \
        if (code == 0) {                                                       \
            out[computed++] = value;                                           \
            status[i] = 0;                                                     \
        } else {                                                               \
            status[i] = 1;                                                     \
            codes[failed] = code;                                              \
            positions[failed++] = i;                                           \
            if (job->stop) {                                                   \
                i++;                                                           \
                break;                                                         \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    job->attempted = i;                                                        \
    job->computed = computed;                                                  \
    job->failed = failed;

/* The five loops of one parameter list. */
#define LOOPS(NAME, PARAMS, ARGS)                                              \
    static void loop_##NAME##_d(job_t *job) { PLAIN(double, double, PARAMS, ARGS) }    \
    static void loop_##NAME##_q(job_t *job) { PLAIN(int64_t, int64_t, PARAMS, ARGS) }  \
    static void loop_##NAME##_i(job_t *job) { PLAIN(int, int64_t, PARAMS, ARGS) }      \
    static void loop_##NAME##_cd(job_t *job) { CODED(double, PARAMS, ARGS) }           \
    static void loop_##NAME##_cq(job_t *job) { CODED(int64_t, PARAMS, ARGS) }

#define ROW(NAME) \
    {loop_##NAME##_d, loop_##NAME##_q, loop_##NAME##_i, loop_##NAME##_cd, loop_##NAME##_cq}

/* Parameter lists: d = double, q = int64_t, in order. */
LOOPS(d, (double), (COL(0, double)))
LOOPS(q, (int64_t), (COL(0, int64_t)))
LOOPS(dd, (double, double), (COL(0, double), COL(1, double)))
LOOPS(qd, (int64_t, double), (COL(0, int64_t), COL(1, double)))
LOOPS(dq, (double, int64_t), (COL(0, double), COL(1, int64_t)))
LOOPS(qq, (int64_t, int64_t), (COL(0, int64_t), COL(1, int64_t)))
LOOPS(ddd, (double, double, double), (COL(0, double), COL(1, double), COL(2, double)))
LOOPS(qdd, (int64_t, double, double), (COL(0, int64_t), COL(1, double), COL(2, double)))
LOOPS(dqd, (double, int64_t, double), (COL(0, double), COL(1, int64_t), COL(2, double)))
LOOPS(qqd, (int64_t, int64_t, double), (COL(0, int64_t), COL(1, int64_t), COL(2, double)))
LOOPS(ddq, (double, double, int64_t), (COL(0, double), COL(1, double), COL(2, int64_t)))
LOOPS(qdq, (int64_t, double, int64_t), (COL(0, int64_t), COL(1, double), COL(2, int64_t)))
LOOPS(dqq, (double, int64_t, int64_t), (COL(0, double), COL(1, int64_t), COL(2, int64_t)))
LOOPS(qqq, (int64_t, int64_t, int64_t), (COL(0, int64_t), COL(1, int64_t), COL(2, int64_t)))
LOOPS(dddd, (double, double, double, double), (COL(0, double), COL(1, double), COL(2, double), COL(3, double)))
LOOPS(qddd, (int64_t, double, double, double), (COL(0, int64_t), COL(1, double), COL(2, double), COL(3, double)))
LOOPS(dqdd, (double, int64_t, double, double), (COL(0, double), COL(1, int64_t), COL(2, double), COL(3, double)))
LOOPS(qqdd, (int64_t, int64_t, double, double), (COL(0, int64_t), COL(1, int64_t), COL(2, double), COL(3, double)))
LOOPS(ddqd, (double, double, int64_t, double), (COL(0, double), COL(1, double), COL(2, int64_t), COL(3, double)))
LOOPS(qdqd, (int64_t, double, int64_t, double), (COL(0, int64_t), COL(1, double), COL(2, int64_t), COL(3, double)))
LOOPS(dqqd, (double, int64_t, int64_t, double), (COL(0, double), COL(1, int64_t), COL(2, int64_t), COL(3, double)))
LOOPS(qqqd, (int64_t, int64_t, int64_t, double), (COL(0, int64_t), COL(1, int64_t), COL(2, int64_t), COL(3, double)))
LOOPS(dddq, (double, double, double, int64_t), (COL(0, double), COL(1, double), COL(2, double), COL(3, int64_t)))
LOOPS(qddq, (int64_t, double, double, int64_t), (COL(0, int64_t), COL(1, double), COL(2, double), COL(3, int64_t)))
LOOPS(dqdq, (double, int64_t, double, int64_t), (COL(0, double), COL(1, int64_t), COL(2, double), COL(3, int64_t)))
LOOPS(qqdq, (int64_t, int64_t, double, int64_t), (COL(0, int64_t), COL(1, int64_t), COL(2, double), COL(3, int64_t)))
LOOPS(ddqq, (double, double, int64_t, int64_t), (COL(0, double), COL(1, double), COL(2, int64_t), COL(3, int64_t)))
LOOPS(qdqq, (int64_t, double, int64_t, int64_t), (COL(0, int64_t), COL(1, double), COL(2, int64_t), COL(3, int64_t)))
LOOPS(dqqq, (double, int64_t, int64_t, int64_t), (COL(0, double), COL(1, int64_t), COL(2, int64_t), COL(3, int64_t)))
LOOPS(qqqq, (int64_t, int64_t, int64_t, int64_t), (COL(0, int64_t), COL(1, int64_t), COL(2, int64_t), COL(3, int64_t)))

/* Indexed by (1 << n) - 2 + mask, where bit k of mask says column k is int64. */
static const loop_fn LOOP_TABLE[][N_RESULTS] = {
    ROW(d),
    ROW(q),
    ROW(dd),
    ROW(qd),
    ROW(dq),
    ROW(qq),
    ROW(ddd),
    ROW(qdd),
    ROW(dqd),
    ROW(qqd),
    ROW(ddq),
    ROW(qdq),
    ROW(dqq),
    ROW(qqq),
    ROW(dddd),
    ROW(qddd),
    ROW(dqdd),
    ROW(qqdd),
    ROW(ddqd),
    ROW(qdqd),
    ROW(dqqd),
    ROW(qqqd),
    ROW(dddq),
    ROW(qddq),
    ROW(dqdq),
    ROW(qqdq),
    ROW(ddqq),
    ROW(qdqq),
    ROW(dqqq),
    ROW(qqqq)
};

/* ------------------------------------------------------------------------ */
/* Arguments                                                                */

/* 'd' (double) or 'q' (int64) for an 8-byte native format, else 0. */
static char
item_kind(const Py_buffer *view)
{
    const char *format = view->format ? view->format : "B";
    if (*format == '=' || *format == '@') {
        format++;
    }
    if (view->itemsize != 8 || format[0] == '\0' || format[1] != '\0') {
        return 0;
    }
    if (format[0] == 'd') {
        return 'd';
    }
    if (format[0] == 'q' || format[0] == 'l') {
        return 'q';
    }
    return 0;
}

/* A 1-D C-contiguous buffer of obj (writable if asked) with at least
   `length` items; 0, or -1 with an error naming `what`. */
static int
get_array(PyObject *obj, Py_buffer *view, int writable, const char *what, Py_ssize_t length)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a %s1-D C-contiguous array, got %.100s",
                     what, writable ? "writable " : "", Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (view->ndim != 1 || (length >= 0 && view->shape[0] < length)) {
        PyErr_Format(PyExc_ValueError, "%s must be 1-D with at least %zd items, got %d-D with %zd",
                     what, length, view->ndim, view->ndim == 1 ? view->shape[0] : (Py_ssize_t)0);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static const char call_doc[] =
    "call(address, result, columns, values, status, codes, positions, heartbeat=None, stop=False)\n"
    "--\n\n"
    "Call the C function at address on every element of columns, the GIL released;\n"
    "returns (attempted, computed, failed). See chunkmap.cfunc for the contract.";

static PyObject *
call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"address", "result", "columns", "values", "status", "codes",
                               "positions", "heartbeat", "stop", NULL};
    PyObject *address, *columns, *values, *status, *codes, *positions, *heartbeat = Py_None;
    int result, stop = 0;
    Py_buffer views[MAX_COLUMNS + 5];
    Py_ssize_t held = 0, k, ncols, n = 0;
    int mask = 0, values_kind;
    int64_t sink = 0;
    job_t job;
    PyObject *answer = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiOOOOO|Op:call", keywords, &address, &result,
                                     &columns, &values, &status, &codes, &positions, &heartbeat,
                                     &stop)) {
        return NULL;
    }
    memset(&job, 0, sizeof(job));
    job.fn = PyLong_AsVoidPtr(address);
    if (job.fn == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "address must be a non-zero int (a C function's address)");
        }
        return NULL;
    }
    if (result < 0 || result >= N_RESULTS) {
        return PyErr_Format(PyExc_ValueError, "result must be 0 to %d, got %d", N_RESULTS - 1, result);
    }
    if (!PyTuple_Check(columns) || PyTuple_GET_SIZE(columns) < 1 ||
        PyTuple_GET_SIZE(columns) > MAX_COLUMNS) {
        return PyErr_Format(PyExc_TypeError, "columns must be a tuple of 1 to %d arrays", MAX_COLUMNS);
    }
    ncols = PyTuple_GET_SIZE(columns);
    for (k = 0; k < ncols; k++) {
        Py_buffer *view = &views[held];
        char kind;
        if (get_array(PyTuple_GET_ITEM(columns, k), view, 0, "each column", k ? n : -1) != 0) {
            goto done;
        }
        held++;
        if (k == 0) {
            n = view->shape[0];
        } else if (view->shape[0] != n) {
            PyErr_Format(PyExc_ValueError, "the columns must have one length, got %zd and %zd",
                         n, view->shape[0]);
            goto done;
        }
        kind = item_kind(view);
        if (kind == 0) {
            PyErr_Format(PyExc_TypeError, "column %zd must be float64 or int64 in native byte order, "
                         "got buffer format '%s'", k, view->format ? view->format : "B");
            goto done;
        }
        mask |= (kind == 'q') << k;
        job.cols[k] = (char *)view->buf;
    }
    job.n = n;
    if (get_array(values, &views[held], 1, "values", n) != 0) {
        goto done;
    }
    values_kind = item_kind(&views[held]);
    job.values = views[held++].buf;
    if (values_kind != ((result == RESULT_DOUBLE || result == RESULT_CODE_DOUBLE) ? 'd' : 'q')) {
        PyErr_Format(PyExc_TypeError, "values must be %s for result %d",
                     (result == RESULT_DOUBLE || result == RESULT_CODE_DOUBLE) ? "float64" : "int64", result);
        goto done;
    }
    if (get_array(status, &views[held], 1, "status", n) != 0) {
        goto done;
    }
    job.status = (uint8_t *)views[held++].buf;
    if (views[held - 1].itemsize != 1) {
        PyErr_SetString(PyExc_TypeError, "status must be uint8");
        goto done;
    }
    if (get_array(codes, &views[held], 1, "codes", result >= RESULT_CODE_DOUBLE ? n : 0) != 0) {
        goto done;
    }
    job.codes = (int32_t *)views[held++].buf;
    if (views[held - 1].itemsize != 4) {
        PyErr_SetString(PyExc_TypeError, "codes must be int32");
        goto done;
    }
    if (get_array(positions, &views[held], 1, "positions", result >= RESULT_CODE_DOUBLE ? n : 0) != 0) {
        goto done;
    }
    job.positions = (int64_t *)views[held++].buf;
    if (item_kind(&views[held - 1]) != 'q' && views[held - 1].shape[0] > 0) {
        PyErr_SetString(PyExc_TypeError, "positions must be int64");
        goto done;
    }
    job.heartbeat = &sink;
    if (heartbeat != Py_None) {
        if (get_array(heartbeat, &views[held], 1, "heartbeat", 1) != 0) {
            goto done;
        }
        job.heartbeat = (int64_t *)views[held++].buf;
        if (item_kind(&views[held - 1]) != 'q') {
            PyErr_SetString(PyExc_TypeError, "heartbeat must be int64");
            goto done;
        }
    }
    job.stop = stop;
    Py_BEGIN_ALLOW_THREADS
    LOOP_TABLE[(1 << ncols) - 2 + mask][result](&job);
    Py_END_ALLOW_THREADS
    answer = Py_BuildValue("(nnn)", job.attempted, job.computed, job.failed);
done:
    while (held > 0) {
        PyBuffer_Release(&views[--held]);
    }
    return answer;
}

static PyMethodDef cloop_methods[] = {
    {"call", (PyCFunction)(void (*)(void))call, METH_VARARGS | METH_KEYWORDS, call_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cloop_module = {
    PyModuleDef_HEAD_INIT, "chunkmap._cloop",
    "A C function called over a chunk, the GIL released (see chunkmap.cfunc).", -1, cloop_methods,
};

PyMODINIT_FUNC
PyInit__cloop(void)
{
    PyObject *module = PyModule_Create(&cloop_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "MAX_COLUMNS", MAX_COLUMNS) != 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
