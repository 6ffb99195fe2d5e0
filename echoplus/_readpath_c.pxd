# C types for echoplus/_readpath.py, which Cython compiles in pure-Python
# mode into the extension module echoplus._readpath_c.  Types only: the
# logic is in _readpath.py, and only there.  Every field is public: the
# rest of the protocol, the policies and users' subclasses read and set
# them as attributes.
# cython: language_level=3

cdef class ReadPath:
    cdef public bint _active
    cdef public bint _closing
    cdef public bint _decodes
    cdef public bint _encodes
    cdef public bint _progressed
    cdef public bint _write_paused
    cdef public Py_ssize_t _bytes_in
    cdef public Py_ssize_t _bytes_out
    cdef public Py_ssize_t _frames_in
    cdef public Py_ssize_t _frames_out
    cdef public Py_ssize_t _sending
    cdef public object _batch
    cdef public object _decoder
    cdef public object _dispatcher
    cdef public object _encoder
    cdef public object _generation
    cdef public object _metrics
    cdef public object _rate
    cdef public object _send

    # C functions: called from here with no lookup for a Python override
    # first.  Python code calls them through _dispatch_frames, _encode and
    # _write_encoded; a subclass overriding those is heard only by Python
    # callers.
    cdef _run_frames(self, list frames)
    cdef _encode_all(self, payloads)
    cdef _write(self, Py_ssize_t count, data)


cdef class DirectWriter:
    cdef bint _has_fd_queue
    cdef object _producer
    cdef object _send
    cdef object _transport
    cdef object _write
