/*
 * chunkmap.npy._pread: positional reads of a file for chunkmap.npy, one C call per read.
 *
 *   pread_path(path: bytes, buf, offset: int) -> int
 *       open(path, O_RDONLY | O_CLOEXEC [| O_NOATIME]), pread until buf is full or the file
 *       ends, close; returns the number of bytes read (fewer than len(buf) only at end of file).
 *   pread_fd(fd: int, buf, offset: int) -> int
 *       pread on a descriptor the caller holds, until buf is full or the file ends.
 *
 * chunkmap/npy/_io.py implements exactly the same contract in Python (os.open, os.preadv,
 * os.close); the tests run both.  buf is any writable C-contiguous buffer (a numpy array, a
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
        PyErr_Format(PyExc_TypeError, "pread_path(): path must be bytes (os.fsencode), not %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (get_args(args, nargs, "pread_path", &view, &offset) < 0)
        return NULL;
    const char *path = PyBytes_AS_STRING(args[0]);
    if ((Py_ssize_t)strlen(path) != PyBytes_GET_SIZE(args[0])) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pread_path(): embedded null byte in path");
        return NULL;
    }
    Py_ssize_t got = 0;
    int fd, err = 0, stage = 0;
    Py_BEGIN_ALLOW_THREADS
    int flags = O_RDONLY | O_CLOEXEC | noatime;
    do {
        fd = open(path, flags);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0 && errno == EPERM && (flags & noatime)) {
        noatime = 0; /* not the file's owner: never ask again */
        do {
            fd = open(path, O_RDONLY | O_CLOEXEC);
        } while (fd < 0 && errno == EINTR);
    }
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

static PyMethodDef methods[] = {
    {"pread_path", (PyCFunction)(void (*)(void))pread_path, METH_FASTCALL,
     "pread_path(path: bytes, buf, offset: int) -> int\n\nOpen path, read len(buf) bytes at offset "
     "into buf (fewer only at end of file), close; return the number of bytes read."},
    {"pread_fd", (PyCFunction)(void (*)(void))pread_fd, METH_FASTCALL,
     "pread_fd(fd: int, buf, offset: int) -> int\n\nRead len(buf) bytes at offset of fd into buf "
     "(fewer only at end of file); return the number of bytes read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chunkmap.npy._pread",
    "Positional reads for chunkmap.npy: open + pread + close in one C call (see _io.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__pread(void)
{
    return PyModule_Create(&module);
}
