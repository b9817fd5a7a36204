/*
 * chunkmap.npy._pread: positional reads of a file for chunkmap.npy, one C call per read.
 *
 *   pread_path(path: bytes, buf, offset: int) -> int
 *       open(path, O_RDONLY | O_CLOEXEC [| O_NOATIME]), pread until buf is full or the file
 *       ends, close; returns the number of bytes read (fewer than len(buf) only at end of file).
 *   pread_fd(fd: int, buf, offset: int) -> int
 *       pread on a descriptor the caller holds, until buf is full or the file ends.
 *   pool_read(table, path: bytes, buf, offset: int) -> int | None
 *       the hit path of chunkmap.npy.fdpool.FdPool: look path up in the OrderedDict table of
 *       entries [fd, users, evicted], move it to the end, count one more user, pread with the GIL
 *       released, count one user fewer and close the descriptor if it was evicted meanwhile;
 *       None when path is not in table.
 *   entry_evict(entry) -> None
 *       close an entry's descriptor, or mark it for its last reader if a read uses it.
 *   open_ro(path: bytes) -> int
 *       open(path) with the flags of pread_path; the caller closes the descriptor.
 *
 * The contract is documented in chunkmap/npy/_io.py, which picks this module or its twin
 * chunkmap/npy/_pread_py.py (the same functions in Python: os.open, os.preadv, os.close) by
 * chunkmap's convention for C extensions (chunkmap/_extensions.py); the tests run both.  buf is any writable C-contiguous buffer (a numpy array, a
 * bytearray, a memoryview).  Errors are OSError subclasses with errno and the file name, as
 * os.open raises them.  The GIL is released around the system calls.  O_NOATIME (no access-time
 * update, Linux) needs the caller to own the file; it is dropped for good after the first EPERM.
 * No descriptor outlives a call of pread_path: the descriptor is closed on every path out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif
#ifdef O_NOATIME
static int noatime = O_NOATIME;
#else
static int noatime = 0;
#endif

/* pread until want bytes or end of file; returns bytes read, or -1 with errno set.
   Called without the GIL. */
static Py_ssize_t fill(int fd, char *p, Py_ssize_t want, long long offset)
{
    Py_ssize_t done = 0;
    while (done < want) {
        ssize_t n = pread(fd, p + done, (size_t)(want - done), (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += n;
    }
    return done;
}

/* open(path, O_RDONLY | O_CLOEXEC [| O_NOATIME]); the descriptor, or -1 with errno set.
   Called without the GIL. */
static int open_nogil(const char *path)
{
    int fd, flags = O_RDONLY | O_CLOEXEC | noatime;
    do {
        fd = open(path, flags);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0 && errno == EPERM && (flags & noatime)) {
        noatime = 0; /* not the file's owner: never ask again */
        do {
            fd = open(path, O_RDONLY | O_CLOEXEC);
        } while (fd < 0 && errno == EINTR);
    }
    return fd;
}

/* The path argument of name() as a C string: bytes without a null byte, else NULL with
   TypeError or ValueError. */
static const char *path_arg(PyObject *path, const char *name)
{
    if (!PyBytes_Check(path)) {
        PyErr_Format(PyExc_TypeError, "%s(): path must be bytes (os.fsencode), not %.100s", name,
                     Py_TYPE(path)->tp_name);
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(path);
    if ((Py_ssize_t)strlen(p) != PyBytes_GET_SIZE(path)) {
        PyErr_Format(PyExc_ValueError, "%s(): embedded null byte in path", name);
        return NULL;
    }
    return p;
}

static int get_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_buffer *view,
                    long long *offset)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes 3 arguments (%zd given)", name, nargs);
        return -1;
    }
    *offset = PyLong_AsLongLong(args[2]);
    if (*offset == -1 && PyErr_Occurred())
        return -1;
    if (*offset < 0) {
        PyErr_Format(PyExc_ValueError, "%s(): negative offset %lld", name, *offset);
        return -1;
    }
    return PyObject_GetBuffer(args[1], view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS);
}

static PyObject *pread_path(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    long long offset;
    if (nargs >= 1 && !PyBytes_Check(args[0])) {
        path_arg(args[0], "pread_path"); /* raises the TypeError */
        return NULL;
    }
    if (get_args(args, nargs, "pread_path", &view, &offset) < 0)
        return NULL;
    const char *path = path_arg(args[0], "pread_path");
    if (path == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t got = 0;
    int fd, err = 0, stage = 0;
    Py_BEGIN_ALLOW_THREADS
    fd = open_nogil(path);
    if (fd < 0) {
        err = errno;
        stage = 1;
    }
    else {
        got = fill(fd, (char *)view.buf, view.len, offset);
        if (got < 0) {
            err = errno;
            stage = 2;
        }
        close(fd); /* a read-only descriptor: nothing to report from close */
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (stage) {
        errno = err;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, args[0]);
    }
    return PyLong_FromSsize_t(got);
}

static PyObject *pread_fd(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    long long offset;
    if (nargs >= 1 && !PyLong_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "pread_fd(): fd must be an int, not %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    long lfd = PyLong_AsLong(args[0]);
    if (lfd == -1 && PyErr_Occurred())
        return NULL;
    if (lfd < 0 || lfd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "pread_fd(): bad file descriptor %ld", lfd);
        return NULL;
    }
    int fd = (int)lfd;
    if (get_args(args, nargs, "pread_fd", &view, &offset) < 0)
        return NULL;
    Py_ssize_t got;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    got = fill(fd, (char *)view.buf, view.len, offset);
    if (got < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (got < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(got);
}

static PyObject *open_ro(PyObject *self, PyObject *path)
{
    const char *p = path_arg(path, "open_ro");
    if (p == NULL)
        return NULL;
    int fd, err = 0;
    Py_BEGIN_ALLOW_THREADS
    fd = open_nogil(p);
    if (fd < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        errno = err;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    return PyLong_FromLong(fd);
}

/* Entries of an FdPool table are lists [fd, users, evicted]. Every change to an entry happens
   inside one of the functions below, with the GIL held and no Python code run, so each is atomic
   with respect to other threads (the module does not declare free-threading support, so a
   free-threaded interpreter keeps the GIL on for it). */
static PyObject *s_move_to_end = NULL;

static int entry_fields(PyObject *entry, long *fd, long *users, int *evicted)
{
    if (!PyList_CheckExact(entry) || PyList_GET_SIZE(entry) != 3) {
        PyErr_SetString(PyExc_TypeError, "pool entry must be a list [fd, users, evicted]");
        return -1;
    }
    *fd = PyLong_AsLong(PyList_GET_ITEM(entry, 0));
    if (*fd == -1 && PyErr_Occurred())
        return -1;
    *users = PyLong_AsLong(PyList_GET_ITEM(entry, 1));
    if (*users == -1 && PyErr_Occurred())
        return -1;
    *evicted = PyObject_IsTrue(PyList_GET_ITEM(entry, 2));
    return *evicted < 0 ? -1 : 0;
}

static int entry_set(PyObject *entry, Py_ssize_t i, PyObject *value)
{
    if (value == NULL)
        return -1;
    PyList_SetItem(entry, i, value); /* steals value, releases the old item */
    return 0;
}

/* Close an entry's descriptor now if no read uses it, else mark it for its last reader. */
static int evict_entry(PyObject *entry)
{
    long fd, users;
    int evicted;
    if (entry_fields(entry, &fd, &users, &evicted) < 0)
        return -1;
    if (users > 0) {
        Py_INCREF(Py_True);
        return entry_set(entry, 2, Py_True);
    }
    if (fd >= 0) {
        close((int)fd);
        return entry_set(entry, 0, PyLong_FromLong(-1));
    }
    return 0;
}

static PyObject *entry_evict(PyObject *self, PyObject *entry)
{
    if (evict_entry(entry) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *pool_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "pool_read() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *table = args[0], *path = args[1];
    if (!PyDict_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "pool_read(): table must be an OrderedDict");
        return NULL;
    }
    Py_buffer view;
    long long offset;
    /* the buffer first: from the lookup to the user count no Python code may run */
    if (get_args(args + 1, 3, "pool_read", &view, &offset) < 0)
        return NULL;
    PyObject *entry = PyDict_GetItemWithError(table, path); /* borrowed */
    long fd, users;
    int evicted;
    if (entry == NULL || entry_fields(entry, &fd, &users, &evicted) < 0 || fd < 0) {
        PyBuffer_Release(&view);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(entry); /* the table may drop it while the GIL is released */
    PyObject *r = PyObject_CallMethodOneArg(table, s_move_to_end, path);
    if (r == NULL || entry_set(entry, 1, PyLong_FromLong(users + 1)) < 0) {
        Py_XDECREF(r);
        Py_DECREF(entry);
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_DECREF(r);
    Py_ssize_t got;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    got = fill((int)fd, (char *)view.buf, view.len, offset);
    if (got < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    /* release: one user fewer; the last reader of an evicted entry closes it */
    int bad = entry_fields(entry, &fd, &users, &evicted) < 0
              || entry_set(entry, 1, PyLong_FromLong(users - 1)) < 0;
    if (!bad && users - 1 == 0 && evicted && fd >= 0) {
        close((int)fd);
        bad = entry_set(entry, 0, PyLong_FromLong(-1)) < 0;
    }
    Py_DECREF(entry);
    if (bad)
        return NULL;
    if (got < 0) {
        errno = err;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    return PyLong_FromSsize_t(got);
}

static PyMethodDef methods[] = {
    {"pool_read", (PyCFunction)(void (*)(void))pool_read, METH_FASTCALL,
     "pool_read(table, path: bytes, buf, offset: int) -> int | None\n\nRead through the pooled "
     "descriptor of path (table: OrderedDict path -> [fd, users, evicted], moved to the end); "
     "None when path has no descriptor in table."},
    {"entry_evict", (PyCFunction)entry_evict, METH_O,
     "entry_evict(entry) -> None\n\nClose the entry's descriptor now if no read uses it, else "
     "mark it so that its last reader closes it."},
    {"pread_path", (PyCFunction)(void (*)(void))pread_path, METH_FASTCALL,
     "pread_path(path: bytes, buf, offset: int) -> int\n\nOpen path, read len(buf) bytes at offset "
     "into buf (fewer only at end of file), close; return the number of bytes read."},
    {"open_ro", (PyCFunction)open_ro, METH_O,
     "open_ro(path: bytes) -> int\n\nOpen path read-only with the flags of pread_path; return the "
     "descriptor (the caller closes it)."},
    {"pread_fd", (PyCFunction)(void (*)(void))pread_fd, METH_FASTCALL,
     "pread_fd(fd: int, buf, offset: int) -> int\n\nRead len(buf) bytes at offset of fd into buf "
     "(fewer only at end of file); return the number of bytes read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chunkmap.npy._pread",
    "Positional reads for chunkmap.npy: open + pread + close in one C call (the contract is in "
    "chunkmap.npy._io; the pure-Python twin is chunkmap.npy._pread_py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__pread(void)
{
    s_move_to_end = PyUnicode_InternFromString("move_to_end");
    if (s_move_to_end == NULL)
        return NULL;
    return PyModule_Create(&module);
}
