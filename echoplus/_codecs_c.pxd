# C types for echoplus/_codecs.py, which Cython compiles in pure-Python mode
# into the extension module echoplus._codecs_c.  This file adds types only:
# the logic is in _codecs.py, and only there.  Attributes read or set by
# other modules or by users' subclasses are public; a Python subclass of any
# of these classes still works (it gets a __dict__ of its own).
# cython: language_level=3

cimport cython

cdef bint _COMPILED


cdef class BufferedDecoder:
    cdef bytearray _held
    cdef public object error
    cdef public Py_ssize_t max_frame
    cdef public Py_ssize_t need

    cpdef list feed(self, data)
    cpdef Py_ssize_t parse(self, bytes data, list frames) except -1


cdef class IntPrefixDecoder(BufferedDecoder):
    cdef object _unpack_from
    cdef public Py_ssize_t size

    @cython.locals(
        size=Py_ssize_t,
        max_frame=Py_ssize_t,
        end_of_data=Py_ssize_t,
        offset=Py_ssize_t,
        start=Py_ssize_t,
        end=Py_ssize_t,
        length=Py_ssize_t,
        index=Py_ssize_t,
        view="const unsigned char*",
    )
    cpdef Py_ssize_t parse(self, bytes data, list frames) except -1


cdef class NetstringDecoder(BufferedDecoder):
    cdef Py_ssize_t _max_digits

    @cython.locals(
        max_frame=Py_ssize_t,
        max_digits=Py_ssize_t,
        end_of_data=Py_ssize_t,
        offset=Py_ssize_t,
        colon=Py_ssize_t,
        end=Py_ssize_t,
        length=Py_ssize_t,
        value=Py_ssize_t,
        digits_end=Py_ssize_t,
        known_lengths=dict,
        digits=bytes,
        view="const unsigned char*",
    )
    cpdef Py_ssize_t parse(self, bytes data, list frames) except -1


cdef class LineDecoder:
    cdef bytearray _held
    cdef Py_ssize_t _hold_limit
    cdef public bytes delimiter
    cdef public object error
    cdef public Py_ssize_t max_frame

    @cython.locals(held=bytearray, frames=list, rest=bytes, first=bytes,
                   scan_from=Py_ssize_t, end=Py_ssize_t)
    cpdef list feed(self, data)


cdef class RawDecoder:
    cdef public object error
    cdef public Py_ssize_t max_frame

    cpdef list feed(self, data)


cdef class LineEncoder:
    cdef bint _bordered
    cdef public bytes delimiter

    # payload + delimiter is a bytearray for a bytearray payload.
    @cython.locals(framed=object)
    cpdef encode(self, payload)
    @cython.locals(joined=bytes, view="const unsigned char*", byte="unsigned char",
                   found=Py_ssize_t, index=Py_ssize_t)
    cpdef bytes encode_batch(self, payloads)


cdef class IntPrefixEncoder:
    cdef Py_ssize_t _largest
    cdef object _pack
    cdef dict _prefixes
    cdef public Py_ssize_t size

    cpdef bytes encode(self, payload)
    @cython.locals(parts=list, length=Py_ssize_t, prefixes=dict)
    cpdef bytes encode_batch(self, payloads)
    cdef bytes _prefix(self, Py_ssize_t length)


cdef class NetstringEncoder:
    cpdef bytes encode(self, payload)
    @cython.locals(parts=list, length=Py_ssize_t, known=dict)
    cpdef bytes encode_batch(self, payloads)


cdef class RawEncoder:
    cpdef encode(self, payload)
    cpdef bytes encode_batch(self, payloads)
