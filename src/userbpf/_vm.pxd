# The interpreter's cdef API; the C structures are declared in includes/vm.pxd.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t

from userbpf.includes.insn cimport *
from userbpf.includes.vm cimport *


# Run a pre-decoded program. Returns r0; run.status says how it ended.
cdef uint64_t vm_exec(const vm_prog *prog, vm_run *run) noexcept nogil
cdef uint64_t vm_exec_at(const vm_prog *prog, vm_run *run, uint32_t entry, uint64_t r1,
                         uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5,
                         int base) noexcept nogil


cdef class VMProgram:
    cdef vm_prog prog
    cdef list _helper_objs        # Python callables / capsules the table points into
    cdef list _regions            # memoryviews of registered regions (kept alive)
    cdef list _maps               # MapCore objects the program references
    cdef public object fault      # fault(status, orig_pc, addr, size, write, exc) -> exception
    cdef public uint64_t budget
    cdef readonly uint64_t insn_count
    cdef public uint64_t ctx_min_size   # the converted ctx accesses' furthest byte

    cdef int _prepare(self, vm_run *run, uint8_t *stack, object mem, Py_buffer *view,
                      bint *have_view) except -1
    cdef object _finish(self, vm_run *run)
