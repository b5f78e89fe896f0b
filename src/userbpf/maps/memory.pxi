# Python views of map memory (value_view, ringbuf_view).

from cpython.buffer cimport PyBUF_WRITABLE


cdef class _MapMemory:
    """A buffer over a map's C memory that keeps the map alive: memoryviews
    of it stay valid however long they are kept."""
    cdef object owner
    cdef uint8_t *ptr
    cdef Py_ssize_t length
    cdef bint readonly
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self.readonly and (flags & PyBUF_WRITABLE):
            raise BufferError("this map memory is read-only")
        self.shape[0] = self.length
        self.strides[0] = 1
        view.buf = self.ptr
        view.obj = self
        view.len = self.length
        view.readonly = self.readonly
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass


cdef object _map_memory(object owner, uint8_t *ptr, Py_ssize_t length, bint readonly):
    cdef _MapMemory mem = _MapMemory.__new__(_MapMemory)
    mem.owner = owner
    mem.ptr = ptr
    mem.length = length
    mem.readonly = readonly
    return memoryview(mem)
