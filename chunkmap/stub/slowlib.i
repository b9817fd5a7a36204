/*
 * SWIG interface for slowlib (see slowlib.h): builds chunkmap.stub.slowlib,
 * a proxy module over the extension chunkmap.stub._slowlib.
 *
 * Python API
 *   slow_computation(a, b) -> int        GIL held during the C call
 *   slow_computation_nogil(a, b) -> int  GIL released during the C call
 *   set_cost_ns(ns), get_cost_ns()       per-call busy-wait (ValueError if ns < 0)
 *   max_concurrent_calls(), reset_max_concurrent_calls()
 *                                        most costly calls inside at once (a probe)
 *   InternalError                        raised for any slowlib error code
 *   CRASH_VALUE = -666.0, HANG_VALUE = -777.0   fault triggers (argument a)
 *
 * The computation, for a and b converted to C double (Python reference):
 *   a == CRASH_VALUE -> segmentation fault; a == HANG_VALUE -> never returns
 *   not abs(1000*x) < 2**62 for x in (a, b) (NaN, inf, huge) -> InternalError
 *   k = math.floor(1000*a) + math.floor(1000*b)
 *   k % 37 == 0 -> InternalError (~2.7 % of random inputs), else return k
 *
 * Build with `swig -python -builtin`: the functions are then C builtins of
 * _slowlib re-exported by the proxy, with no Python-level wrapper per call.
 */
%define SLOWLIB_MODULE_DOC
"SWIG wrapper of slowlib, a deliberately slow scalar C library.

See the chunkmap.stub package docstring for the API and the formula."
%enddef
%module(package="chunkmap.stub", docstring=SLOWLIB_MODULE_DOC, threads="1") slowlib

%{
#include "slowlib.h"

/* The two Python names share one C function; only GIL handling differs. */
#define slow_computation slowlib_compute
#define slow_computation_nogil slowlib_compute
#define set_cost_ns slowlib_set_cost_ns
#define get_cost_ns slowlib_get_cost_ns
#define max_concurrent_calls slowlib_get_max_concurrent
#define reset_max_concurrent_calls slowlib_reset_max_concurrent

static PyObject *slowlib_InternalError = NULL;

/* Raise InternalError naming the call, e.g.
   "slowlib_compute(0.5, 0.24): input outside the library's domain (code 1)". */
static void slowlib_raise(int code, double a, double b)
{
    char *ra = PyOS_double_to_string(a, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    char *rb = PyOS_double_to_string(b, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (ra != NULL && rb != NULL) {
        PyErr_Format(slowlib_InternalError, "slowlib_compute(%s, %s): %s (code %d)",
                     ra, rb, slowlib_strerror(code), code);
    }
    PyMem_Free(ra);
    PyMem_Free(rb);
}
%}

/* Only slow_computation_nogil releases the GIL (SWIG's "threadallow"). */
%nothread;
%thread slow_computation_nogil;
/* No PyGILState_Ensure per call: these are never called from foreign threads. */
%feature("nothreadblock");

/* long long *OUT_K: hidden output argument, returned as the Python int. */
%typemap(in, numinputs=0) long long *OUT_K (long long k) {
    $1 = &k;
}
%typemap(argout) long long *OUT_K {
    $result = PyLong_FromLongLong(*$1);
}
/* Status code -> InternalError (arg1/arg2 are SWIG's converted a and b). */
%typemap(out) int slow_computation, int slow_computation_nogil {
    if ($1 != SLOWLIB_OK) {
        slowlib_raise($1, arg1, arg2);
        SWIG_fail;
    }
    $result = NULL;
}
%typemap(out) int set_cost_ns {
    if ($1 != SLOWLIB_OK) {
        PyErr_Format(PyExc_ValueError, "set_cost_ns(%lld): the cost must be >= 0 ns", arg1);
        SWIG_fail;
    }
    $result = SWIG_Py_Void();
}

%feature("docstring") slow_computation
"slow_computation(a, b)
--

Compute ``floor(1000*a) + floor(1000*b)``; the GIL is held during the call.

Parameters
----------
a, b : float or int
    Converted to C double.

Returns
-------
int

Raises
------
chunkmap.stub.slowlib.InternalError
    If the result is a multiple of 37, or an input is not finite or too large.
";
int slow_computation(double a, double b, long long *OUT_K);

%feature("docstring") slow_computation_nogil
"slow_computation_nogil(a, b)
--

Same as `slow_computation`, with the GIL released during the C call.

Parameters
----------
a, b : float or int
    Converted to C double.

Returns
-------
int

Raises
------
chunkmap.stub.slowlib.InternalError
    If the result is a multiple of 37, or an input is not finite or too large.
";
int slow_computation_nogil(double a, double b, long long *OUT_K);

%feature("docstring") set_cost_ns
"set_cost_ns(ns)
--

Set the busy-wait done by every computation call, in nanoseconds.

Parameters
----------
ns : int
    The cost, >= 0.

Raises
------
ValueError
    If `ns` is negative.
";
int set_cost_ns(long long ns);

%feature("docstring") get_cost_ns
"get_cost_ns()
--

Return the per-call busy-wait in nanoseconds (int).
";
long long get_cost_ns(void);

%feature("docstring") max_concurrent_calls
"max_concurrent_calls()
--

Return the most calls with a cost > 0 that were inside the C function at the same
time since `reset_max_concurrent_calls` (int): 2 for two threads calling
`slow_computation_nogil` at once, 1 with `slow_computation`, whatever the load.
";
int max_concurrent_calls(void);

%feature("docstring") reset_max_concurrent_calls
"reset_max_concurrent_calls()
--

Restart `max_concurrent_calls` from the calls inside now.
";
void reset_max_concurrent_calls(void);

/* A SWIG object: a handle the library allocates, which (like most SWIG objects)
   cannot be pickled. Model(scale).predict(a, b) = scale * slow_computation(a, b). */
%feature("docstring") Model
"Model(scale)

A model object of the library: a C struct behind a SWIG handle that cannot be
pickled. ``Model(scale).predict(a, b)`` is ``scale * slow_computation(a, b)``.
";
%inline %{
typedef struct Model {
    double scale;
} Model;
%}
%exception Model::predict {
    $action
    if (PyErr_Occurred()) {
        SWIG_fail;
    }
}
%extend Model {
    Model(double scale) {
        Model *model = (Model *)malloc(sizeof(Model));
        if (model != NULL) {
            model->scale = scale;
        }
        return model;
    }
    ~Model() {
        free($self);
    }
    %feature("docstring") predict
    "predict(a, b) -> float: scale * slow_computation(a, b) (InternalError like it).";
    double predict(double a, double b) {
        long long k = 0;
        int code = slowlib_compute(a, b, &k);
        if (code != SLOWLIB_OK) {
            slowlib_raise(code, a, b);
            return 0.0;
        }
        return $self->scale * (double)k;
    }
}

%constant double CRASH_VALUE = SLOWLIB_CRASH_VALUE;
%constant double HANG_VALUE = SLOWLIB_HANG_VALUE;

%init %{
    slowlib_InternalError = PyErr_NewExceptionWithDoc(
        "chunkmap.stub.slowlib.InternalError",
        "Error code returned by slowlib (e.g. input outside the library's domain).",
        PyExc_Exception, NULL);
    if (slowlib_InternalError == NULL
            || PyModule_AddObjectRef(m, "InternalError", slowlib_InternalError) < 0) {
        return -1;
    }
#ifdef SWIGPYTHON_BUILTIN
    /* Exported by the proxy's "from ._slowlib import *". */
    SwigPyBuiltin_AddPublicSymbol(public_interface, "InternalError");
#endif
    /* SWIG starts builtin docstrings with a newline; drop it so that the
       "name(a, b)\n--\n\n" first lines give inspect.signature(). */
    {
        PyMethodDef *def;
        for (def = SwigMethods; def->ml_name != NULL; ++def) {
            if (def->ml_doc != NULL && def->ml_doc[0] == '\n') {
                def->ml_doc++;
            }
        }
    }
    if (slowlib_init_from_env() != SLOWLIB_OK) {
        PyErr_Format(PyExc_ValueError,
                     "SLOWLIB_COST_NS=%s: expected an integer number of nanoseconds >= 0",
                     getenv("SLOWLIB_COST_NS"));
        return -1;
    }
%}
