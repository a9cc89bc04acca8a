/* Fan-out of one encoded frame to many sockets: one C loop of send(2) calls, run without the
 * GIL, instead of one Python call and one uvloop write per socket. On this workload the kernel's
 * send path is most of the cost, and send(2) is cheaper than the write(2) uvloop uses (no VFS
 * layer); what Python added per socket is gone. See docs/benchmarks.md.
 *
 * fanout(sockets, frame, exclude) -> (sent, rest)
 *
 *   sockets  dict of socket id -> connection; a connection's out_fd is its socket's fd while
 *            the transport buffers nothing and the connection is open, else -1
 *   frame    the bytes to send to each
 *   exclude  a connection to skip, or None
 *
 *   sent     how many sockets took the whole frame
 *   rest     [(connection, n)] for the others, for Python to finish:
 *              n = -2  not sent: out_fd is -1 (bytes queued, TLS, closing)
 *              n = -1  the send failed (the peer is gone)
 *              n >= 0  only n bytes went out (the socket buffer is full)
 *
 * The fds are read with the GIL held, and only they are touched once it is released. A descriptor
 * stays open until the connection has heard connection_lost (asyncio and uvloop both call it
 * before they close the socket), and that sets out_fd to -1, so a number read here is never
 * another connection's socket. tests/unit/test_fanout.py checks that order on both loops.
 *
 * Reading out_fd runs Python (it is an attribute, and may be a property), which may change the
 * dict while it is walked: the arrays are sized from the dict first, so the walk checks the size
 * after every read and raises RuntimeError if it changed, and never fills more entries than it
 * sized; each connection is held by a reference of our own while its out_fd is read.
 *
 * Not free-threading safe: the walk uses PyDict_Next without a critical section, and the
 * fd-reuse argument above needs the GIL to keep connection_lost (which closes the descriptor) from
 * running during the walk. The module does not declare Py_MOD_GIL_NOT_USED, so a free-threaded
 * interpreter turns the GIL back on when it imports it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
/* macOS and some BSDs lack it. CPython ignores SIGPIPE at start-up, so a send to a peer that is
 * gone still fails with EPIPE rather than killing the process. */
#define MSG_NOSIGNAL 0
#endif

static PyObject *str_out_fd;

static void send_all(const int *fds, ssize_t *results, Py_ssize_t count, const char *data, size_t size) {
    for (Py_ssize_t i = 0; i < count; i++) {
        ssize_t r = send(fds[i], data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0) {
            r = (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        }
        results[i] = r;
    }
}

static int add_rest(PyObject *rest, PyObject *conn, Py_ssize_t n) {
    PyObject *item = Py_BuildValue("(On)", conn, n);
    if (item == NULL) {
        return -1;
    }
    int failed = PyList_Append(rest, item);
    Py_DECREF(item);
    return failed;
}

static PyObject *fanout(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *sockets, *exclude;
    Py_buffer frame;
    if (!PyArg_ParseTuple(args, "O!y*O", &PyDict_Type, &sockets, &frame, &exclude)) {
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *rest = PyList_New(0);
    Py_ssize_t size = PyDict_GET_SIZE(sockets);
    PyObject **conns = PyMem_Malloc(sizeof(PyObject *) * (size_t)(size ? size : 1));
    int *fds = PyMem_Malloc(sizeof(int) * (size_t)(size ? size : 1));
    ssize_t *results = PyMem_Malloc(sizeof(ssize_t) * (size_t)(size ? size : 1));
    Py_ssize_t count = 0;
    if (rest == NULL || conns == NULL || fds == NULL || results == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    Py_ssize_t pos = 0;
    PyObject *key, *conn;
    while (PyDict_Next(sockets, &pos, &key, &conn)) {
        if (conn == exclude) {
            continue;
        }
        if (count >= size) {
            /* More entries than the dict had: it was changed (same size, other keys). */
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed during fan-out");
            goto done;
        }
        Py_INCREF(conn); /* out_fd may drop the dict's reference to it */
        PyObject *fd_obj = PyObject_GetAttr(conn, str_out_fd);
        if (PyDict_GET_SIZE(sockets) != size) {
            Py_XDECREF(fd_obj);
            Py_DECREF(conn);
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during fan-out");
            goto done;
        }
        if (fd_obj == NULL) {
            Py_DECREF(conn);
            goto done;
        }
        long fd = PyLong_AsLong(fd_obj);
        Py_DECREF(fd_obj);
        if (fd == -1 && PyErr_Occurred()) {
            Py_DECREF(conn);
            goto done;
        }
        if (fd < 0) {
            int failed = add_rest(rest, conn, -2);
            Py_DECREF(conn);
            if (failed < 0) {
                goto done;
            }
            continue;
        }
        conns[count] = conn; /* keeps the reference taken above */
        fds[count] = (int)fd;
        count++;
    }

    Py_BEGIN_ALLOW_THREADS
    send_all(fds, results, count, (const char *)frame.buf, (size_t)frame.len);
    Py_END_ALLOW_THREADS

    Py_ssize_t sent = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (results[i] == (ssize_t)frame.len) {
            sent++;
        } else if (add_rest(rest, conns[i], results[i]) < 0) {
            goto done;
        }
    }
    result = Py_BuildValue("(nO)", sent, rest);

done:
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_DECREF(conns[i]);
    }
    PyMem_Free(conns);
    PyMem_Free(fds);
    PyMem_Free(results);
    Py_XDECREF(rest);
    PyBuffer_Release(&frame);
    return result;
}

static PyMethodDef methods[] = {
    {"fanout", fanout, METH_VARARGS, "Send one frame to many sockets; see the module's source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "clarion._fanout", "Native fan-out of one frame to many sockets.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fanout(void) {
    str_out_fd = PyUnicode_InternFromString("out_fd");
    if (str_out_fd == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
