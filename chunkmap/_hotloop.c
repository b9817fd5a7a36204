/*
 * chunkmap._hotloop: the compiled per-element loop of chunkmap.loop.
 *
 *   loop(func, columns, skip, values, status, failures, start=0, heartbeat=None)
 *       -> (position, reason, obj)
 *
 * The contract is documented in chunkmap/loop.py, which picks this module or
 * its pure-Python twin chunkmap/_hotloop_py.py (the same names and exactly the
 * same contract; the tests check that both agree element by element) by
 * chunkmap's convention for C extensions (chunkmap/_extensions.py).
 * Plain C API: inputs and outputs are
 * read through the buffer protocol (no numpy C API), the function is called
 * with PyObject_Vectorcall, or, for callables without vectorcall (SWIG
 * -builtin wrappers are METH_VARARGS functions), with PyObject_Call on one
 * argument tuple that is reused whenever the callee did not keep it.
 * The GIL is held while func runs; every 4096 elements the loop checks for
 * signals (Ctrl-C) and runs one empty Python function, whose first bytecode
 * lets other threads take the GIL if they asked for it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_COLUMNS 32
/* Refilling an argument in place relies on Py_REFCNT(obj) == 1 meaning "only
   we hold it", which free-threaded builds do not guarantee. */
#ifdef Py_GIL_DISABLED
#define REUSE_ARGS 0
#else
#define REUSE_ARGS 1
#endif
#define SIGNAL_INTERVAL 4096

/* Kinds of input columns. */
enum {
    IN_BOOL, IN_I8, IN_I16, IN_I32, IN_I64, IN_U8, IN_U16, IN_U32, IN_U64,
    IN_F32, IN_F64, IN_C64, IN_C128
};

/* An empty Python function, called every SIGNAL_INTERVAL elements (see loop()). */
static PyObject *breaker = NULL;

/* How func is called. */
enum { CALL_VECTORCALL, CALL_TUPLE, CALL_CFUNCTION };

/* Kinds of output arrays. */
enum { OUT_I64, OUT_F64, OUT_F32, OUT_BOOL, OUT_C128, OUT_OBJ };

static const char COLUMN_TYPES[] =
    "supported are bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, "
    "float32, float64, complex64 and complex128 in native byte order; convert the column "
    "first (for example column.astype(numpy.float64))";
static const char VALUES_TYPES[] =
    "expected int64, float64, float32, bool, complex128 or object in native byte order";

static const char PLACEHOLDER[] = "<str() of the exception failed>";

/* ------------------------------------------------------------------------ */
/* Validation helpers                                                       */

/* Raises exc_type("<text>, got <type(obj).__name__>"); returns -1. */
static int
raise_got(PyObject *exc_type, const char *text, PyObject *obj)
{
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "__name__");
    if (name != NULL) {
        PyErr_Format(exc_type, "%s, got %S", text, name);
        Py_DECREF(name);
    }
    return -1;
}

/* What the error messages call the array's type: str(obj.dtype) when it has
   one, else "buffer format 'X'" (new reference, or NULL with an error). */
static PyObject *
describe_type(PyObject *obj, const char *format)
{
    PyObject *dtype = PyObject_GetAttrString(obj, "dtype");
    if (dtype != NULL) {
        PyObject *text = PyObject_Str(dtype);
        Py_DECREF(dtype);
        return text;
    }
    PyErr_Clear();
    return PyUnicode_FromFormat("buffer format '%s'", format);
}

/* Gets a strided buffer with its format; on failure raises
   TypeError("<what> has dtype X, ...") or TypeError("<what> must be an array ..."). */
static int
get_buffer(PyObject *obj, Py_buffer *view, const char *what, const char *types)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) == 0) {
        return 0;
    }
    PyErr_Clear();
    PyObject *dtype = PyObject_GetAttrString(obj, "dtype");
    if (dtype == NULL) {
        PyErr_Clear();
        PyObject *text = PyUnicode_FromFormat("%s must be a numpy array (or buffer)", what);
        if (text != NULL) {
            raise_got(PyExc_TypeError, PyUnicode_AsUTF8(text), obj);
            Py_DECREF(text);
        }
        return -1;
    }
    PyErr_Format(PyExc_TypeError, "%s has dtype %S, %s", what, dtype, types);
    Py_DECREF(dtype);
    return -1;
}

/* Format without a leading '@' (native order and size), or NULL if another
   byte-order character is present. */
static const char *
native_format(const Py_buffer *view)
{
    const char *f = view->format != NULL ? view->format : "B";
    if (f[0] == '@') {
        f++;
    }
    if (f[0] == '<' || f[0] == '>' || f[0] == '=' || f[0] == '!') {
        return NULL;
    }
    return f;
}

static int
column_kind(const Py_buffer *view)
{
    const char *f = native_format(view);
    Py_ssize_t s = view->itemsize;
    if (f == NULL) {
        return -1;
    }
    if (f[0] != '\0' && f[1] == '\0') {
        switch (f[0]) {
        case '?': return s == 1 ? IN_BOOL : -1;
        case 'b': case 'h': case 'i': case 'l': case 'q':
            return s == 1 ? IN_I8 : s == 2 ? IN_I16 : s == 4 ? IN_I32 : s == 8 ? IN_I64 : -1;
        case 'B': case 'H': case 'I': case 'L': case 'Q':
            return s == 1 ? IN_U8 : s == 2 ? IN_U16 : s == 4 ? IN_U32 : s == 8 ? IN_U64 : -1;
        case 'f': return s == 4 ? IN_F32 : -1;
        case 'd': return s == 8 ? IN_F64 : -1;
        default: return -1;
        }
    }
    if (strcmp(f, "Zf") == 0 && s == 8) {
        return IN_C64;
    }
    if (strcmp(f, "Zd") == 0 && s == 16) {
        return IN_C128;
    }
    return -1;
}

static int
values_kind(const Py_buffer *view)
{
    const char *f = native_format(view);
    Py_ssize_t s = view->itemsize;
    if (f == NULL) {
        return -1;
    }
    if ((strcmp(f, "q") == 0 || strcmp(f, "l") == 0) && s == 8) return OUT_I64;
    if (strcmp(f, "d") == 0 && s == 8) return OUT_F64;
    if (strcmp(f, "f") == 0 && s == 4) return OUT_F32;
    if (strcmp(f, "?") == 0 && s == 1) return OUT_BOOL;
    if (strcmp(f, "Zd") == 0 && s == 16) return OUT_C128;
    if (strcmp(f, "O") == 0 && s == (Py_ssize_t)sizeof(PyObject *)) return OUT_OBJ;
    return -1;
}

static int
raise_bad_type(PyObject *obj, const Py_buffer *view, const char *what, const char *types)
{
    PyObject *text = describe_type(obj, view->format != NULL ? view->format : "B");
    if (text != NULL) {
        PyErr_Format(PyExc_TypeError, "%s has dtype %U, %s", what, text, types);
        Py_DECREF(text);
    }
    return -1;
}

/* Shape checks shared by every array argument. */
static int
check_shape(const Py_buffer *view, const char *what, int writable, int contiguous)
{
    if (view->ndim != 1) {
        PyErr_Format(PyExc_ValueError, "%s must be 1-dimensional, got %d dimensions",
                     what, view->ndim);
        return -1;
    }
    if (writable && view->readonly) {
        PyErr_Format(PyExc_ValueError, "%s must be writable", what);
        return -1;
    }
    if (contiguous && !PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous", what);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Element conversion                                                       */

/* func's argument for the element at p: a plain Python bool/int/float/complex. */
static inline PyObject *
make_arg(int kind, const char *p)
{
    switch (kind) {
    case IN_F64: {
        double v;
        memcpy(&v, p, sizeof v);
        return PyFloat_FromDouble(v);
    }
    case IN_F32: {
        float v;
        memcpy(&v, p, sizeof v);
        return PyFloat_FromDouble((double)v);
    }
    case IN_I64: {
        long long v;
        memcpy(&v, p, sizeof v);
        return PyLong_FromLongLong(v);
    }
    case IN_I32: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        return PyLong_FromLong((long)v);
    }
    case IN_I16: {
        int16_t v;
        memcpy(&v, p, sizeof v);
        return PyLong_FromLong((long)v);
    }
    case IN_I8:
        return PyLong_FromLong((long)*(const int8_t *)p);
    case IN_U64: {
        unsigned long long v;
        memcpy(&v, p, sizeof v);
        return PyLong_FromUnsignedLongLong(v);
    }
    case IN_U32: {
        uint32_t v;
        memcpy(&v, p, sizeof v);
        return PyLong_FromUnsignedLong((unsigned long)v);
    }
    case IN_U16: {
        uint16_t v;
        memcpy(&v, p, sizeof v);
        return PyLong_FromLong((long)v);
    }
    case IN_U8:
        return PyLong_FromLong((long)*(const uint8_t *)p);
    case IN_BOOL:
        return PyBool_FromLong(*(const unsigned char *)p != 0);
    case IN_C64: {
        float v[2];
        memcpy(v, p, sizeof v);
        return PyComplex_FromDoubles((double)v[0], (double)v[1]);
    }
    case IN_C128: {
        double v[2];
        memcpy(v, p, sizeof v);
        return PyComplex_FromDoubles(v[0], v[1]);
    }
    }
    PyErr_SetString(PyExc_SystemError, "chunkmap._hotloop: unknown column kind");
    return NULL;
}

/* Makes held[c] func's argument for element i of every column. A float or
   complex that only held[c] references (func did not keep it) is refilled in
   place instead of being freed and allocated again: nobody can observe it.
   -1 with an error set if an argument cannot be made (held stays valid,
   possibly with NULL items). */
static inline int
fill_args(Py_ssize_t ncols, const int *kinds, const char *const *bases,
          const Py_ssize_t *sizes, Py_ssize_t i, PyObject **held)
{
    Py_ssize_t c;
    for (c = 0; c < ncols; c++) {
        const char *p = bases[c] + i * sizes[c];
        PyObject *old = held[c];
        PyObject *arg;
        if (REUSE_ARGS && old != NULL && Py_REFCNT(old) == 1) {
            switch (kinds[c]) {
            case IN_F64:
                memcpy(&((PyFloatObject *)old)->ob_fval, p, sizeof(double));
                continue;
            case IN_F32: {
                float v;
                memcpy(&v, p, sizeof v);
                ((PyFloatObject *)old)->ob_fval = (double)v;
                continue;
            }
            case IN_C128: {
                double v[2];
                memcpy(v, p, sizeof v);
                ((PyComplexObject *)old)->cval.real = v[0];
                ((PyComplexObject *)old)->cval.imag = v[1];
                continue;
            }
            case IN_C64: {
                float v[2];
                memcpy(v, p, sizeof v);
                ((PyComplexObject *)old)->cval.real = (double)v[0];
                ((PyComplexObject *)old)->cval.imag = (double)v[1];
                continue;
            }
            default:
                break;
            }
        }
        arg = make_arg(kinds[c], p);
        if (arg == NULL) {
            return -1;
        }
        held[c] = arg;
        Py_XDECREF(old);
    }
    return 0;
}

/* A Python int (not bool) as a double, when it lies in the int64 or uint64
   range (as numpy's array coercion would read it); 0 if it does not. */
static inline int
int_as_double(PyObject *r, double *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(r, &overflow);
    if (overflow == 0) {
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = (double)v;
        return 1;
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(r);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = (double)u;
        return 1;
    }
    return 0;
}

/* A real result as a double: float (or subclass), bool, or an int in the
   int64/uint64 range.  0 for a misfit. */
static inline int
real_as_double(PyObject *r, double *out)
{
    if (PyFloat_Check(r)) {
        *out = PyFloat_AS_DOUBLE(r);
        return 1;
    }
    if (r == Py_True || r == Py_False) {
        *out = r == Py_True ? 1.0 : 0.0;
        return 1;
    }
    if (PyLong_Check(r)) {
        return int_as_double(r, out);
    }
    return 0;
}

/* Stores result r at element i of the output: 1 if stored (the reference to
   r is consumed for object outputs only), 0 for a misfit. Never fails. */
static inline int
store(int kind, char *base, Py_ssize_t i, PyObject *r)
{
    switch (kind) {
    case OUT_I64: {
        long long v;
        if (PyLong_CheckExact(r) || (PyLong_Check(r) && r != Py_True && r != Py_False)) {
            int overflow;
            v = PyLong_AsLongLongAndOverflow(r, &overflow);
            if (overflow != 0) {
                return 0;
            }
            if (v == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
        }
        else if (r == Py_True || r == Py_False) {
            v = r == Py_True;
        }
        else {
            return 0;
        }
        memcpy(base + i * 8, &v, sizeof v);
        return 1;
    }
    case OUT_F64: {
        double v;
        if (PyFloat_CheckExact(r)) {
            v = PyFloat_AS_DOUBLE(r);
        }
        else if (!real_as_double(r, &v)) {
            return 0;
        }
        memcpy(base + i * 8, &v, sizeof v);
        return 1;
    }
    case OUT_F32: {
        double v;
        float f;
        if (!real_as_double(r, &v)) {
            return 0;
        }
        f = (float)v;
        memcpy(base + i * 4, &f, sizeof f);
        return 1;
    }
    case OUT_BOOL:
        if (r == Py_True || r == Py_False) {
            base[i] = r == Py_True;
            return 1;
        }
        return 0;
    case OUT_C128: {
        double v[2];
        if (PyComplex_Check(r)) {
            Py_complex c = PyComplex_AsCComplex(r);
            v[0] = c.real;
            v[1] = c.imag;
        }
        else if (real_as_double(r, &v[0])) {
            v[1] = 0.0;
        }
        else {
            return 0;
        }
        memcpy(base + i * 16, v, sizeof v);
        return 1;
    }
    case OUT_OBJ: {
        PyObject **slot = (PyObject **)base + i;
        PyObject *old = *slot;
        *slot = r; /* steals the reference */
        Py_XDECREF(old);
        return 1;
    }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Exceptions                                                               */

/* The current exception, normalised, with its traceback attached (the error
   indicator is cleared). */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        value = Py_None;
        Py_INCREF(value);
    }
    else if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static PyObject *
type_name(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030B0000
    return PyType_GetName(Py_TYPE(exc));
#else
    return PyObject_GetAttrString((PyObject *)Py_TYPE(exc), "__name__");
#endif
}

/* Appends (i, type(exc).__name__, str(exc)) to failures (a skipped
   exception). 0 on success, -1 with an error set. */
static int
record_failure(PyObject *failures, Py_ssize_t i)
{
    PyObject *exc = take_exception();
    PyObject *name = NULL, *message = NULL, *position = NULL, *entry = NULL;
    int rc = -1;

    name = type_name(exc);
    if (name == NULL) {
        goto done;
    }
    message = PyObject_Str(exc);
    if (message == NULL) {
        /* str(exc) raised: a placeholder, unless it is not an Exception
           (KeyboardInterrupt, SystemExit...), which propagates. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto done;
        }
        PyErr_Clear();
        message = PyUnicode_FromString(PLACEHOLDER);
        if (message == NULL) {
            goto done;
        }
    }
    position = PyLong_FromSsize_t(i);
    if (position == NULL) {
        goto done;
    }
    entry = PyTuple_Pack(3, position, name, message);
    if (entry == NULL) {
        goto done;
    }
    /* Holds only atomic objects: the collector need not visit it (it would
       untrack it itself on its first pass). */
    PyObject_GC_UnTrack(entry);
    rc = PyList_Append(failures, entry);
done:
    Py_DECREF(exc);
    Py_XDECREF(name);
    Py_XDECREF(message);
    Py_XDECREF(position);
    Py_XDECREF(entry);
    return rc;
}

/* What PyObject_Call says when a C function returns NULL without an
   exception, or a result with one: SystemError (NULL returned). */
static PyObject *
bad_result(PyObject *func, PyObject *result)
{
    if (result == NULL) {
        PyErr_Format(PyExc_SystemError, "%R returned NULL without setting an exception", func);
        return NULL;
    }
    PyObject *cause = take_exception();
    Py_DECREF(result);
    PyErr_Format(PyExc_SystemError, "%R returned a result with an exception set", func);
    PyObject *exc = take_exception();
    PyException_SetCause(exc, cause);
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* loop()                                                                   */

PyDoc_STRVAR(loop_doc,
"loop(func, columns, skip, values, status, failures, start=0, heartbeat=None)\n"
"--\n"
"\n"
"Call func(col0[i], col1[i], ...) for i in [start, n); the compiled twin of\n"
"chunkmap._hotloop_py.loop (see the chunkmap.loop module docstring for the contract).\n"
"Returns (position, reason, obj): (n, 0, None) when done, (i, 1, result) for a\n"
"result that does not fit values, (i, 2, exception) for an exception not in skip.");

static PyObject *
loop(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"func", "columns", "skip", "values", "status",
                               "failures", "start", "heartbeat", NULL};
    PyObject *func, *columns, *skip, *values_obj, *status_obj, *failures;
    PyObject *heartbeat_obj = Py_None;
    Py_ssize_t start = 0;

    Py_buffer colview[MAX_COLUMNS];
    Py_buffer valview, statview, hbview;
    int ncols_held = 0, val_held = 0, stat_held = 0, hb_held = 0;
    int kinds[MAX_COLUMNS];
    const char *bases[MAX_COLUMNS];
    Py_ssize_t sizes[MAX_COLUMNS];
    PyObject *stack[MAX_COLUMNS] = {NULL};
    PyObject *ret = NULL;
    PyObject *argtuple = NULL;
    Py_ssize_t ncols, n = 0, i, c;
    int vkind;
    char *vbase;
    unsigned char *sbase;
    volatile long long *hb = NULL;
    int how;
    int countdown;
    char what[32];

    (void)module;
    if (!PyGILState_Check()) {
        Py_FatalError("chunkmap._hotloop.loop called without holding the GIL");
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO|nO:loop", keywords, &func,
                                     &columns, &skip, &values_obj, &status_obj,
                                     &failures, &start, &heartbeat_obj)) {
        return NULL;
    }

    /* --- validation --- */
    if (!PyCallable_Check(func)) {
        raise_got(PyExc_TypeError, "func must be callable", func);
        return NULL;
    }
    if (!PyTuple_Check(columns)) {
        raise_got(PyExc_TypeError, "columns must be a tuple of arrays", columns);
        return NULL;
    }
    ncols = PyTuple_GET_SIZE(columns);
    if (ncols < 1 || ncols > MAX_COLUMNS) {
        PyErr_Format(PyExc_ValueError, "columns must hold 1 to %d arrays, got %zd",
                     MAX_COLUMNS, ncols);
        return NULL;
    }
    if (!PyTuple_Check(skip)) {
        raise_got(PyExc_TypeError, "skip must be a tuple of exception classes", skip);
        return NULL;
    }
    for (c = 0; c < PyTuple_GET_SIZE(skip); c++) {
        PyObject *item = PyTuple_GET_ITEM(skip, c);
        if (!PyExceptionClass_Check(item)) {
            PyErr_Format(PyExc_TypeError, "skip[%zd] must be an exception class, got %R",
                         c, item);
            return NULL;
        }
    }
    if (!PyList_Check(failures)) {
        raise_got(PyExc_TypeError, "failures must be a list", failures);
        return NULL;
    }
    for (c = 0; c < ncols; c++) {
        PyObject *col = PyTuple_GET_ITEM(columns, c);
        PyOS_snprintf(what, sizeof what, "columns[%d]", (int)c);
        if (get_buffer(col, &colview[c], what, COLUMN_TYPES) < 0) {
            goto cleanup;
        }
        ncols_held++;
        kinds[c] = column_kind(&colview[c]);
        if (kinds[c] < 0) {
            raise_bad_type(col, &colview[c], what, COLUMN_TYPES);
            goto cleanup;
        }
        if (check_shape(&colview[c], what, 0, 1) < 0) {
            goto cleanup;
        }
        if (c == 0) {
            n = colview[0].shape[0];
        }
        else if (colview[c].shape[0] != n) {
            PyErr_Format(PyExc_ValueError,
                         "columns[%zd] has %zd elements but columns[0] has %zd; all columns "
                         "must have the same length", c, colview[c].shape[0], n);
            goto cleanup;
        }
        bases[c] = (const char *)colview[c].buf;
        sizes[c] = colview[c].itemsize;
    }
    if (get_buffer(values_obj, &valview, "values", VALUES_TYPES) < 0) {
        goto cleanup;
    }
    val_held = 1;
    vkind = values_kind(&valview);
    if (vkind < 0) {
        raise_bad_type(values_obj, &valview, "values", VALUES_TYPES);
        goto cleanup;
    }
    if (check_shape(&valview, "values", 1, 1) < 0) {
        goto cleanup;
    }
    if (valview.shape[0] < n) {
        PyErr_Format(PyExc_ValueError,
                     "values has %zd elements, fewer than the %zd of the columns",
                     valview.shape[0], n);
        goto cleanup;
    }
    if (get_buffer(status_obj, &statview, "status", "expected uint8") < 0) {
        goto cleanup;
    }
    stat_held = 1;
    {
        const char *f = native_format(&statview);
        if (f == NULL || strcmp(f, "B") != 0 || statview.itemsize != 1) {
            raise_bad_type(status_obj, &statview, "status", "expected uint8");
            goto cleanup;
        }
    }
    if (check_shape(&statview, "status", 1, 1) < 0) {
        goto cleanup;
    }
    if (statview.shape[0] < n) {
        PyErr_Format(PyExc_ValueError,
                     "status has %zd elements, fewer than the %zd of the columns",
                     statview.shape[0], n);
        goto cleanup;
    }
    if (start < 0 || start > n) {
        PyErr_Format(PyExc_ValueError,
                     "start must be between 0 and %zd (the columns' length), got %zd",
                     n, start);
        goto cleanup;
    }
    if (heartbeat_obj != Py_None) {
        if (get_buffer(heartbeat_obj, &hbview, "heartbeat", "expected int64") < 0) {
            goto cleanup;
        }
        hb_held = 1;
        {
            const char *f = native_format(&hbview);
            if (f == NULL || (strcmp(f, "q") != 0 && strcmp(f, "l") != 0) ||
                hbview.itemsize != 8) {
                raise_bad_type(heartbeat_obj, &hbview, "heartbeat", "expected int64");
                goto cleanup;
            }
        }
        if (check_shape(&hbview, "heartbeat", 1, 0) < 0) {
            goto cleanup;
        }
        if (hbview.shape[0] < 1) {
            PyErr_SetString(PyExc_ValueError, "heartbeat must have at least 1 element");
            goto cleanup;
        }
        hb = (volatile long long *)hbview.buf;
    }
    vbase = (char *)valview.buf;
    sbase = (unsigned char *)statview.buf;

    /* --- the loop --- */
    /* How func is called (see the file's docstring): */
    if (PyCFunction_Check(func) &&
        (PyCFunction_GET_FLAGS(func) &
         (METH_VARARGS | METH_KEYWORDS | METH_NOARGS | METH_O | METH_FASTCALL | METH_METHOD)) ==
            METH_VARARGS) {
        how = CALL_CFUNCTION; /* a METH_VARARGS builtin (SWIG -builtin): no dispatch */
    }
    else if (PyVectorcall_Function(func) != NULL) {
        how = CALL_VECTORCALL;
    }
    else {
        how = CALL_TUPLE;
    }
    countdown = SIGNAL_INTERVAL;
    for (i = start; i < n; i++) {
        PyObject *result;

        if (hb != NULL) {
            *hb = (long long)i;
        }
        if (how == CALL_VECTORCALL) {
            if (fill_args(ncols, kinds, bases, sizes, i, stack) < 0) {
                goto cleanup;
            }
            result = PyObject_Vectorcall(func, stack, (size_t)ncols, NULL);
        }
        else {
            /* One tuple, refilled while nobody else holds it. */
            if (argtuple == NULL || Py_REFCNT(argtuple) != 1) {
                Py_XDECREF(argtuple);
                argtuple = PyTuple_New(ncols);
                if (argtuple == NULL) {
                    goto cleanup;
                }
            }
            if (fill_args(ncols, kinds, bases, sizes, i,
                          ((PyTupleObject *)argtuple)->ob_item) < 0) {
                goto cleanup; /* a tuple with NULL items is still freed correctly */
            }
            if (how == CALL_CFUNCTION) {
                result = PyCFunction_GET_FUNCTION(func)(PyCFunction_GET_SELF(func), argtuple);
                if (result == NULL ? !PyErr_Occurred() : PyErr_Occurred() != NULL) {
                    result = bad_result(func, result);
                }
            }
            else {
                result = PyObject_Call(func, argtuple, NULL);
            }
        }

        if (result == NULL) {
            if (PyTuple_GET_SIZE(skip) > 0 && PyErr_ExceptionMatches(skip)) {
                if (record_failure(failures, i) < 0) {
                    goto cleanup;
                }
                sbase[i] = 1;
            }
            else if (PyErr_ExceptionMatches(PyExc_Exception)) {
                PyObject *exc = take_exception();
                ret = Py_BuildValue("(niN)", i, 2, exc);
                goto cleanup;
            }
            else {
                goto cleanup; /* KeyboardInterrupt, SystemExit...: propagate */
            }
        }
        else if (store(vkind, vbase, i, result)) {
            if (vkind != OUT_OBJ) {
                Py_DECREF(result);
            }
            sbase[i] = 0;
        }
        else {
            ret = Py_BuildValue("(niN)", i, 1, result);
            goto cleanup;
        }

        if (--countdown == 0) {
            countdown = SIGNAL_INTERVAL;
            if (PyErr_CheckSignals() < 0) {
                goto cleanup;
            }
            /* Let other threads run, as the eval loop would between bytecodes
               (a dask worker's threads, a progress thread): a call of an empty
               Python function, whose first instruction serves the interpreter's
               GIL drop requests, pending calls and asynchronous exceptions.
               (Releasing and retaking the GIL here would not do: the waiting
               thread only asks for the GIL after 5 ms without any switch.) */
            PyObject *none = PyObject_CallNoArgs(breaker);
            if (none == NULL) {
                goto cleanup;
            }
            Py_DECREF(none);
        }
    }
    ret = Py_BuildValue("(niO)", n, 0, Py_None);

cleanup:
    Py_XDECREF(argtuple);
    for (c = 0; c < ncols; c++) {
        Py_XDECREF(stack[c]);
    }
    for (c = 0; c < ncols_held; c++) {
        PyBuffer_Release(&colview[c]);
    }
    if (val_held) PyBuffer_Release(&valview);
    if (stat_held) PyBuffer_Release(&statview);
    if (hb_held) PyBuffer_Release(&hbview);
    return ret;
}

static PyMethodDef hotloop_methods[] = {
    {"loop", (PyCFunction)(void (*)(void))loop, METH_VARARGS | METH_KEYWORDS, loop_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef hotloop_module = {
    PyModuleDef_HEAD_INIT,
    "chunkmap._hotloop",
    "Compiled per-element loop of chunkmap.loop (see that module for the contract; the "
    "pure-Python twin is chunkmap._hotloop_py).",
    -1,
    hotloop_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__hotloop(void)
{
    PyObject *module, *globals, *code, *result;

    if (breaker == NULL) {
        globals = PyDict_New();
        if (globals == NULL) {
            return NULL;
        }
        if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
            Py_DECREF(globals);
            return NULL;
        }
        code = Py_CompileString("def eval_breaker():\n    pass\n", "<chunkmap._hotloop>",
                                Py_file_input);
        result = code != NULL ? PyEval_EvalCode(code, globals, globals) : NULL;
        Py_XDECREF(code);
        Py_XDECREF(result);
        breaker = result != NULL ? PyDict_GetItemString(globals, "eval_breaker") : NULL;
        Py_XINCREF(breaker);
        Py_DECREF(globals);
        if (breaker == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError, "chunkmap._hotloop: no eval_breaker");
            }
            return NULL;
        }
    }
    module = PyModule_Create(&hotloop_module);
    if (module != NULL && PyModule_AddStringConstant(module, "PLACEHOLDER", PLACEHOLDER) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
