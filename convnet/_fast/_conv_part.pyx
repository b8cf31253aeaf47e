# cython: language_level=3
"""A batch part of the im2col, im2row and Winograd convolutions in one call without the GIL, and the direct
convolution's images shared with the worker (private; see convnet/fast/conv_im2col.py, conv_im2row.py,
conv_winograd.py and conv_direct.py).

A part's lowering kernels and GEMMs run here back to back, the GEMMs through
numpy's own BLAS (``cblas_sgemm``/``cblas_dgemm``, whose addresses
:mod:`convnet.fast._cblas` finds and :func:`set_gemm` stores). Through numpy,
each of a part's dozen steps is a separate call that takes the GIL back, and
two threads' parts queue for it between their steps.

Layouts as in ``_im2col.pyx``. ``dout`` and ``out`` are (N, F, P) with
``P = H_out*W_out``; the scratch buffers are 1-D and hold at least the
elements each function's docstring names. Nothing here validates: the callers
in :mod:`convnet.fast` check every argument, size the scratch, and call only
after :func:`set_gemm` succeeded.

With ``split`` a call's GEMMs are cut into blocks of rows that this thread
and one worker thread claim (the worker from the end). The worker writes its
blocks to a buffer of its own and this thread copies them in, so it never
waits for a worker the machine has descheduled: it takes back a block that
stays unfinished for longer than one of its own took, and returns. Until the
worker has let go of a job, the pool keeps the job's arrays alive and lends
itself to no other call. The direct convolution's jobs (``direct_forward``,
``direct_backward``) are cut the same way: one image's output rows, and its
filter gradient's taps, in blocks (kernels of ``_direct_kernels.pxd``).
"""
import numpy as np
from cython cimport floating
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport realloc
from libc.string cimport memcpy, memset

from convnet._fast._direct_kernels cimport (DC_DW_TB, dc_dw_double, dc_dw_float, dc_dwf_double, dc_dwf_float,
                                            dc_forward_double, dc_forward_float, pad_image, pad_rows,
                                            transpose_planes)
from convnet._fast._lowering cimport (bias_transpose_chunk, col2im_plane, im2col_row, im2row_image,
                                      row2im_image, sum_planes, transpose_tiles)
from convnet._fast._tiles cimport (CB, input_adjoint_plane, input_block_t, input_plane, output_adjoint_plane,
                                   output_plane, scratch_size)
from convnet._fast._window cimport output_size

# CBLAS's enum values (cblas.h): every BLAS that has a CBLAS interface uses them.
cdef enum:
    ROW_MAJOR = 101
    NO_TRANS = 111
    TRANS = 112

ctypedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t, float, const float*, int64_t,
                           const float*, int64_t, float, float*, int64_t) noexcept nogil
ctypedef void (*dgemm64_t)(int, int, int, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t) noexcept nogil
ctypedef void (*sgemm32_t)(int, int, int, int, int, int, float, const float*, int,
                           const float*, int, float, float*, int) noexcept nogil
ctypedef void (*dgemm32_t)(int, int, int, int, int, int, double, const double*, int,
                           const double*, int, double, double*, int) noexcept nogil

# Set once by set_gemm; an ILP64 BLAS (64-bit integers) or an LP64 one.
cdef void* _sgemm = NULL
cdef void* _dgemm = NULL
cdef bint _ilp64 = False


def set_gemm(uintptr_t sgemm, uintptr_t dgemm, bint ilp64):
    """Store the addresses of ``cblas_sgemm`` and ``cblas_dgemm`` and whether they take 64-bit integers."""
    global _sgemm, _dgemm, _ilp64
    _sgemm, _dgemm, _ilp64 = <void*>sgemm, <void*>dgemm, ilp64


def gemm_ready():
    """Whether :func:`set_gemm` stored both functions."""
    return _sgemm != NULL and _dgemm != NULL


cdef inline void _gemm(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                       Py_ssize_t lda, const floating* B, Py_ssize_t ldb, floating beta, floating* C,
                       Py_ssize_t ldc) noexcept nogil:
    # C (M, N) = op(A) @ op(B) + beta * C, row major; op transposes where ta / tb.
    cdef int a = TRANS if ta else NO_TRANS
    cdef int b = TRANS if tb else NO_TRANS
    if floating is float:
        if _ilp64:
            (<sgemm64_t>_sgemm)(ROW_MAJOR, a, b, M, N, K, 1, A, lda, B, ldb, beta, C, ldc)
        else:
            (<sgemm32_t>_sgemm)(ROW_MAJOR, a, b, <int>M, <int>N, <int>K, 1, A, <int>lda, B, <int>ldb, beta, C,
                                <int>ldc)
    else:
        if _ilp64:
            (<dgemm64_t>_dgemm)(ROW_MAJOR, a, b, M, N, K, 1, A, lda, B, ldb, beta, C, ldc)
        else:
            (<dgemm32_t>_dgemm)(ROW_MAJOR, a, b, <int>M, <int>N, <int>K, 1, A, <int>lda, B, <int>ldb, beta, C,
                                <int>ldc)


cdef extern from *:
    """
    #include <time.h>
    #if defined(_WIN32)
    #define CP_THREADS 0
    typedef int cp_mutex;
    typedef int cp_cond;
    static void cp_init(cp_mutex* m, cp_cond* c) { (void)m; (void)c; }
    static void cp_lock(cp_mutex* m) { (void)m; }
    static void cp_unlock(cp_mutex* m) { (void)m; }
    static void cp_wait(cp_cond* c, cp_mutex* m) { (void)c; (void)m; }
    static void cp_signal(cp_cond* c) { (void)c; }
    static int cp_load(int* p) { return *p; }
    static void cp_store(int* p, int v) { *p = v; }
    static int cp_cas(int* p, int expected, int desired) { if (*p != expected) return 0; *p = desired; return 1; }
    static void cp_pause(void) {}
    static double cp_seconds(void) { return 0.0; }
    static void cp_sleep(double s) { (void)s; }
    #else
    #include <pthread.h>
    #define CP_THREADS 1
    typedef pthread_mutex_t cp_mutex;
    typedef pthread_cond_t cp_cond;
    static void cp_init(cp_mutex* m, cp_cond* c) { pthread_mutex_init(m, NULL); pthread_cond_init(c, NULL); }
    static void cp_lock(cp_mutex* m) { pthread_mutex_lock(m); }
    static void cp_unlock(cp_mutex* m) { pthread_mutex_unlock(m); }
    static void cp_wait(cp_cond* c, cp_mutex* m) { pthread_cond_wait(c, m); }
    static void cp_signal(cp_cond* c) { pthread_cond_signal(c); }
    static int cp_load(int* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static void cp_store(int* p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static int cp_cas(int* p, int expected, int desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    #if defined(__x86_64__) || defined(__i386__)
    static void cp_pause(void) { __builtin_ia32_pause(); }
    #else
    static void cp_pause(void) {}
    #endif
    static double cp_seconds(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
    }
    static void cp_sleep(double s) {
        struct timespec t;
        t.tv_sec = (time_t)s;
        t.tv_nsec = (long)((s - (double)t.tv_sec) * 1e9);
        nanosleep(&t, NULL);
    }
    #endif
    """
    ctypedef struct cp_mutex:
        pass
    ctypedef struct cp_cond:
        pass
    int CP_THREADS
    void cp_init(cp_mutex*, cp_cond*) noexcept nogil
    void cp_lock(cp_mutex*) noexcept nogil
    void cp_unlock(cp_mutex*) noexcept nogil
    void cp_wait(cp_cond*, cp_mutex*) noexcept nogil
    void cp_signal(cp_cond*) noexcept nogil
    int cp_load(int*) noexcept nogil
    void cp_store(int*, int) noexcept nogil
    bint cp_cas(int*, int, int) noexcept nogil
    void cp_pause() noexcept nogil
    double cp_seconds() noexcept nogil
    void cp_sleep(double) noexcept nogil

cdef enum:
    MAX_TASKS = 2
    MAX_BLOCKS = 32
    # Blocks per GEMM.
    TASK_BLOCKS = 8
    # A block's states: unclaimed, this thread's, the worker's (running, result in the scratch), taken back.
    FREE = 0
    CALLER = 1
    WORKER = 2
    READY = 3
    TAKEN = 4
    # A task's kind: GEMMs, or one image's direct-convolution kernel over blocks of output rows (forward, dx), of
    # dw's tap blocks (a row's pixels in the lanes), or of dw^T's tap blocks (the filters in the lanes).
    GEMM = 0
    ROWS = 1
    TAPS = 2
    TAPS_T = 3

cdef struct Direct:
    # One image padded into xp (rows Wpp apart, taps at off[:ntaps]); ROWS: out (F, Ho, Wo) = bias + the blocked
    # filters wt (blocks of fb) at each tap; TAPS: out (F, ntaps) += dy (F, Ho, Wq) by xp, zeros for an odd F's
    # partner; TAPS_T: out (ntaps, Fp) += xp by dy (Ho*Wo, Fp).
    const void* xp
    const void* wt
    const void* bias
    const void* dy
    const void* zeros
    const Py_ssize_t* off
    Py_ssize_t Wpp, ntaps, fb, F, Ho, Wo, Wq, Fp

cdef struct Task:
    # GEMM: C[i] (M, N) = op(A[i]) @ op(B[i]) + beta * C[i] for the `count` members i (A[i] = A + i*sa elements,
    # ...): blocks of `rows` rows of one matrix, or of `members` whole members, from block `first` of the job.
    # The worker's blocks land in the scratch from element `offset`, member after member, each (M, N). A direct
    # kind: blocks of `rows` of its M units (rows or tap blocks) into C; the worker's into the scratch from
    # `offset` laid out as C.
    int kind
    bint dbl, ta, tb
    Py_ssize_t M, N, K, lda, ldb, ldc, count, sa, sb, sc, rows, members, first, offset
    const void* A
    const void* B
    void* C
    double beta
    Direct d

cdef struct Job:
    Task task[MAX_TASKS]
    int ntasks, nblocks
    int task_of[MAX_BLOCKS]
    int state[MAX_BLOCKS]
    Py_ssize_t scratch

# The pool: one worker thread, lent to one call at a time (_busy). _posted jobs were handed out, the worker
# let go of _finished; the worker is idle when the two agree.
cdef cp_mutex _lock
cdef cp_cond _wake
cdef int _posted = 0, _finished = 0, _sleeping = 0, _busy = 0
cdef long _taken = 0  # blocks this thread took back from the worker
cdef int _worker = 0  # 0 not started, 1 running, -1 cannot start (no threads: a sandbox, Windows)
cdef Job _job
cdef char* _scratch = NULL
cdef size_t _scratch_bytes = 0
cdef double _spin = 300e-6  # seconds the worker spins for the next job before it sleeps
cdef double _stall = 0  # seconds the worker sleeps in each block it claims: a descheduled worker, for tests
# The fewest rows a block of one GEMM holds: each block packs the right operand again.
cdef Py_ssize_t _min_rows = 32
_held = None  # the arrays of the job the worker may still read


cdef void _gemm_rows(const Task* t, Py_ssize_t i, Py_ssize_t r0, Py_ssize_t r1, void* C, Py_ssize_t ldc,
                     double beta) noexcept nogil:
    # Rows r0:r1 of member i's product into C (their first row), + beta * C.
    cdef Py_ssize_t a = i * t.sa + (r0 if t.ta else r0 * t.lda), b = i * t.sb
    if t.dbl:
        _gemm(t.ta, t.tb, r1 - r0, t.N, t.K, (<const double*>t.A) + a, t.lda, (<const double*>t.B) + b, t.ldb,
              beta, <double*>C, ldc)
    else:
        _gemm(t.ta, t.tb, r1 - r0, t.N, t.K, (<const float*>t.A) + a, t.lda, (<const float*>t.B) + b, t.ldb,
              <float>beta, <float*>C, ldc)


cdef inline void _register(Job* job, Py_ssize_t nb, Py_ssize_t size) noexcept nogil:
    # The job's next task (filled in) as blocks first.. of it, its worker's output `size` elements of the scratch.
    cdef Task* t = &job.task[job.ntasks]
    cdef Py_ssize_t b
    t.first, t.offset = job.nblocks, job.scratch
    for b in range(nb):
        job.task_of[job.nblocks + b] = job.ntasks
        job.state[job.nblocks + b] = FREE
    job.nblocks += nb
    job.scratch += size
    job.ntasks += 1


cdef inline void _add_batch(Job* job, bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                            const floating* A, Py_ssize_t lda, Py_ssize_t sa, const floating* B, Py_ssize_t ldb,
                            Py_ssize_t sb, floating beta, floating* C, Py_ssize_t ldc, Py_ssize_t sc,
                            Py_ssize_t count) noexcept nogil:
    # Append C[i] (M, N) = op(A[i]) @ op(B[i]) + beta * C[i], i < count, to the job.
    cdef Task* t = &job.task[job.ntasks]
    cdef Py_ssize_t nb
    t.kind = GEMM
    t.dbl, t.ta, t.tb = floating is double, ta, tb
    t.M, t.N, t.K, t.lda, t.ldb, t.ldc = M, N, K, lda, ldb, ldc
    t.count, t.sa, t.sb, t.sc = count, sa, sb, sc
    t.A, t.B, t.C, t.beta = A, B, C, beta
    if count == 1:
        t.members, t.rows = 1, max(_min_rows, (M + TASK_BLOCKS - 1) // TASK_BLOCKS)
        nb = (M + t.rows - 1) // t.rows
    else:
        t.members, t.rows = (count + TASK_BLOCKS - 1) // TASK_BLOCKS, M
        nb = (count + t.members - 1) // t.members
    _register(job, nb, count * M * N)


cdef inline void _add_task(Job* job, bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                           const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb, floating beta,
                           floating* C, Py_ssize_t ldc) noexcept nogil:
    # Append C (M, N) = op(A) @ op(B) + beta * C to the job.
    _add_batch(job, ta, tb, M, N, K, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1)


cdef inline void _add_direct(Job* job, int kind, Direct d, Py_ssize_t units, Py_ssize_t size,
                             floating* out) noexcept nogil:
    # Append a direct kernel over `units` rows or tap blocks into out (`size` elements) to the job.
    cdef Task* t = &job.task[job.ntasks]
    cdef Py_ssize_t nb
    t.kind, t.dbl, t.d, t.C = kind, floating is double, d, out
    t.M, t.count = units, 1
    t.rows = (units + TASK_BLOCKS - 1) // TASK_BLOCKS
    nb = (units + t.rows - 1) // t.rows
    _register(job, nb, size)


cdef struct Block:
    # Members i0:i1, rows r0:r1 of each, of one task.
    Py_ssize_t i0, i1, r0, r1


cdef inline Block _block(const Task* t, int b) noexcept nogil:
    cdef Block k
    cdef Py_ssize_t j = b - t.first
    if t.count == 1:
        k.i0, k.i1, k.r0 = 0, 1, j * t.rows
        k.r1 = min(t.M, k.r0 + t.rows)
    else:
        k.i0, k.r0, k.r1 = j * t.members, 0, t.M
        k.i1 = min(t.count, k.i0 + t.members)
    return k


cdef void _direct_block(const Task* t, Py_ssize_t r0, Py_ssize_t r1, bint scratch) noexcept nogil:
    # Units r0:r1 of a direct task into its output, or (the worker's, dw's zeroed first) into the scratch.
    cdef const Direct* d = &t.d
    cdef size_t size = sizeof(double) if t.dbl else sizeof(float)
    cdef char* out = _scratch + t.offset * size if scratch else <char*>t.C
    cdef Py_ssize_t f, t0 = r0 * DC_DW_TB, nt = (r1 - r0) * DC_DW_TB
    if t.kind == ROWS:
        if t.dbl:
            dc_forward_double[d.fb](<const double*>d.xp, d.Wpp, d.off, d.ntaps, <const double*>d.wt,
                                    <const double*>d.bias, <double*>out, d.F, d.Ho, d.Wo, r0, r1)
        else:
            dc_forward_float[d.fb](<const float*>d.xp, d.Wpp, d.off, d.ntaps, <const float*>d.wt,
                                   <const float*>d.bias, <float*>out, d.F, d.Ho, d.Wo, r0, r1)
    elif t.kind == TAPS:
        if scratch:
            for f in range(d.F):
                memset(out + (f * d.ntaps + t0) * size, 0, nt * size)
        if t.dbl:
            dc_dw_double(<const double*>d.xp, d.Wpp, d.off + t0, nt, 0, <const double*>d.dy,
                         <const double*>d.zeros, 1, d.F, d.Ho, d.Wo, d.Wq, <double*>out + t0, d.ntaps)
        else:
            dc_dw_float(<const float*>d.xp, d.Wpp, d.off + t0, nt, 0, <const float*>d.dy,
                        <const float*>d.zeros, 1, d.F, d.Ho, d.Wo, d.Wq, <float*>out + t0, d.ntaps)
    else:
        if scratch:
            memset(out + t0 * d.Fp * size, 0, nt * d.Fp * size)
        if t.dbl:
            dc_dwf_double(<const double*>d.xp, d.Wpp, d.off + t0, nt, 0, <const double*>d.dy, 1, d.Fp, d.Ho,
                          d.Wo, <double*>out + t0 * d.Fp)
        else:
            dc_dwf_float(<const float*>d.xp, d.Wpp, d.off + t0, nt, 0, <const float*>d.dy, 1, d.Fp, d.Ho,
                         d.Wo, <float*>out + t0 * d.Fp)


cdef void _direct_commit(const Task* t, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    # The worker's finished units r0:r1 of a direct task from the scratch: rows copied, dw's taps added.
    cdef const Direct* d = &t.d
    cdef Py_ssize_t f, j, n, at
    cdef double* dd
    cdef const double* ds
    cdef float* fd
    cdef const float* fs
    if t.kind == ROWS:
        n = (r1 - r0) * d.Wo
        for f in range(d.F):
            at = (f * d.Ho + r0) * d.Wo
            if t.dbl:
                memcpy(<double*>t.C + at, <const double*>_scratch + t.offset + at, n * sizeof(double))
            else:
                memcpy(<float*>t.C + at, <const float*>_scratch + t.offset + at, n * sizeof(float))
        return
    # TAPS: F rows of the block's taps, ntaps apart; TAPS_T: one run of its taps' rows of Fp.
    n = (r1 - r0) * DC_DW_TB * (1 if t.kind == TAPS else d.Fp)
    for f in range(d.F if t.kind == TAPS else 1):
        at = f * d.ntaps + r0 * DC_DW_TB if t.kind == TAPS else r0 * DC_DW_TB * d.Fp
        if t.dbl:
            dd, ds = <double*>t.C + at, <const double*>_scratch + t.offset + at
            for j in range(n):
                dd[j] += ds[j]
        else:
            fd, fs = <float*>t.C + at, <const float*>_scratch + t.offset + at
            for j in range(n):
                fd[j] += fs[j]


cdef void _block_into(const Job* job, int b, bint scratch) noexcept nogil:
    # Block b straight into its output, or (the worker's) into the scratch, for the caller to commit.
    cdef const Task* t = &job.task[job.task_of[b]]
    cdef Block k = _block(t, b)
    cdef size_t size = sizeof(double) if t.dbl else sizeof(float)
    cdef Py_ssize_t i
    if t.kind != GEMM:
        _direct_block(t, k.r0, k.r1, scratch)
        return
    for i in range(k.i0, k.i1):
        if scratch:
            _gemm_rows(t, i, k.r0, k.r1, _scratch + (t.offset + (i * t.M + k.r0) * t.N) * size, t.N, 0)
        else:
            _gemm_rows(t, i, k.r0, k.r1, <char*>t.C + (i * t.sc + k.r0 * t.ldc) * size, t.ldc, t.beta)


cdef void _commit(const Job* job, int b) noexcept nogil:
    # The worker's finished block b from the scratch into its output (+ beta * what is there).
    cdef const Task* t = &job.task[job.task_of[b]]
    cdef Block k = _block(t, b)
    cdef Py_ssize_t i, r, j
    cdef double* dd
    cdef const double* ds
    cdef float* fd
    cdef const float* fs
    if t.kind != GEMM:
        _direct_commit(t, k.r0, k.r1)
        return
    for i in range(k.i0, k.i1):
        for r in range(k.r0, k.r1):
            if t.dbl:
                dd = <double*>t.C + i * t.sc + r * t.ldc
                ds = <const double*>_scratch + t.offset + (i * t.M + r) * t.N
                if t.beta == 0:
                    memcpy(dd, ds, t.N * sizeof(double))
                else:
                    for j in range(t.N):
                        dd[j] = ds[j] + t.beta * dd[j]
            else:
                fd = <float*>t.C + i * t.sc + r * t.ldc
                fs = <const float*>_scratch + t.offset + (i * t.M + r) * t.N
                if t.beta == 0:
                    memcpy(fd, fs, t.N * sizeof(float))
                else:
                    for j in range(t.N):
                        fd[j] = fs[j] + <float>t.beta * fd[j]


cdef void _worker_loop() noexcept nogil:
    # The worker: wait for a job (spin, then sleep), claim its blocks from the end, let go of it.
    cdef int seen = cp_load(&_finished), b  # jobs posted before it started are still its to let go of
    cdef double t0
    while True:
        t0 = cp_seconds()
        while cp_load(&_posted) == seen:
            if cp_seconds() - t0 > _spin:
                cp_lock(&_lock)
                cp_store(&_sleeping, 1)
                while cp_load(&_posted) == seen:
                    cp_wait(&_wake, &_lock)
                cp_store(&_sleeping, 0)
                cp_unlock(&_lock)
                break
            cp_pause()
        seen = cp_load(&_posted)
        for b in range(_job.nblocks - 1, -1, -1):
            if cp_cas(&_job.state[b], FREE, WORKER):
                if _stall > 0:
                    cp_sleep(_stall)
                _block_into(&_job, b, True)
                if not cp_cas(&_job.state[b], WORKER, READY):
                    break  # taken back: the caller holds every block now
        cp_store(&_finished, seen)


cdef void _run(Job* job, bint split) noexcept nogil:
    # The job's GEMMs: on this thread alone, or (split) shared with the worker, never waiting for it longer
    # than one of this thread's blocks took.
    global _scratch, _scratch_bytes, _taken
    cdef int b, st, mine = 0
    cdef double t0, block, deadline
    cdef char* grown
    if split and job.nblocks > 1 and job.scratch * sizeof(double) > _scratch_bytes:
        grown = <char*>realloc(_scratch, job.scratch * sizeof(double))
        if grown == NULL:
            split = False
        else:
            _scratch, _scratch_bytes = grown, job.scratch * sizeof(double)
    if not split or job.nblocks < 2:
        for b in range(job.nblocks):
            _block_into(job, b, False)
        return
    memcpy(&_job, job, sizeof(Job))
    cp_store(&_posted, cp_load(&_posted) + 1)
    if cp_load(&_sleeping):
        cp_lock(&_lock)
        cp_signal(&_wake)
        cp_unlock(&_lock)
    t0 = cp_seconds()
    for b in range(_job.nblocks):
        if cp_cas(&_job.state[b], FREE, CALLER):
            _block_into(&_job, b, False)
            mine += 1
    block = (cp_seconds() - t0) / max(mine, 1)
    for b in range(_job.nblocks):
        st = cp_load(&_job.state[b])
        if st == WORKER:
            deadline = cp_seconds() + block
            while st == WORKER and cp_seconds() < deadline:
                cp_pause()
                st = cp_load(&_job.state[b])
            if st == WORKER and cp_cas(&_job.state[b], WORKER, TAKEN):
                _block_into(&_job, b, False)
                _taken += 1
                continue
            st = cp_load(&_job.state[b])
        if st == READY:
            _commit(&_job, b)


def _worker_main():
    with nogil:
        _worker_loop()


def _after_fork_in_child():
    # The worker thread did not survive the fork; a pool locked at the fork must not stay locked.
    global _posted, _finished, _sleeping, _busy, _worker, _held
    cp_init(&_lock, &_wake)
    _posted = _finished = _sleeping = _busy = _worker = 0
    _held = None


def _start_worker():
    global _worker
    import threading
    if not CP_THREADS:
        _worker = -1
        return
    cp_init(&_lock, &_wake)
    _worker = 1  # before start(), which lets other threads in: one worker only
    try:
        threading.Thread(target=_worker_main, name="convnet-gemm", daemon=True).start()
    except RuntimeError:  # no threads here (a sandbox that forbids them, interpreter shutdown)
        _worker = -1


cdef bint _lend() noexcept:
    # Whether this call may split its GEMMs: the worker runs, is idle, and no other call has it.
    global _held
    if _worker == 0:
        _start_worker()
    if _worker != 1 or not cp_cas(&_busy, 0, 1):
        return False
    if cp_load(&_finished) != cp_load(&_posted):
        cp_store(&_busy, 0)
        return False
    _held = None
    return True


cdef void _give_back(tuple arrays) noexcept:
    # Keep the job's arrays alive while the worker may still read them, then lend the pool again.
    global _held
    _held = arrays if cp_load(&_finished) != cp_load(&_posted) else None
    cp_store(&_busy, 0)


def split_state():
    """``(worker, posted, finished, taken)``: the pool's worker (0 not started, 1 running, -1 none possible),
    the jobs handed out and let go of, and the blocks taken back from the worker (for tests)."""
    return _worker, cp_load(&_posted), cp_load(&_finished), _taken


def set_spin(double seconds):
    """How long the worker spins for the next job before it sleeps (for tests and benchmarks)."""
    global _spin
    _spin = seconds


def set_min_rows(Py_ssize_t rows):
    """The fewest rows a block of one GEMM holds (for tests and benchmarks); returns the previous value."""
    global _min_rows
    previous, _min_rows = _min_rows, max(1, rows)
    return previous


def set_stall(double seconds):
    """Make the worker sleep ``seconds`` in every block it claims, as a descheduled thread would (for tests)."""
    global _stall
    _stall = seconds


def held():
    """The arrays the pool keeps alive for a job the worker has not let go of, or None (for tests)."""
    return _held


import os as _os
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


# The per-chunk loops are functions of their own, not inline: inside the part functions gcc keeps their loop
# pointers on the stack (im2row's channels-last copy ran at half speed).
cdef void _add_bias_grad(const floating* dout, double* db, Py_ssize_t m, Py_ssize_t F,
                         Py_ssize_t P) noexcept nogil:
    # db[f] += the sum of dout[n, f, :] over the chunk's m images (a double sum: float32 planes are long).
    sum_planes(dout, m, F, P, db)


cdef struct Shape:
    Py_ssize_t C, H, W, F, K, H_out, W_out, P


cdef inline Shape _shape(const Py_ssize_t* x, const Py_ssize_t* w, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride,
                         Py_ssize_t pad) noexcept nogil:
    # A part's sizes from x (N, C, H, W) and the filter matrix (F, K).
    cdef Shape z
    z.C, z.H, z.W, z.F, z.K = x[1], x[2], x[3], w[0], w[1]
    z.H_out, z.W_out = output_size(z.H, HH, stride, pad), output_size(z.W, WW, stride, pad)
    z.P = z.H_out * z.W_out
    return z


cdef void _im2col_chunk(const floating* x, floating* cols, Py_ssize_t m, Shape z, Py_ssize_t HH,
                        Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # cols (K, m, P) of the m images from x on; row k = (c*HH + kh)*WW + kw, without dividing k.
    cdef Py_ssize_t c, kh, kw, k = 0
    for c in range(z.C):
        for kh in range(HH):
            for kw in range(WW):
                im2col_row(x, cols + k * m * z.P, m, z.C, z.H, z.W, c, kh, kw, stride, pad, z.H_out, z.W_out)
                k += 1


cdef void _im2row_chunk(const floating* x, floating* rows, floating* xt, Py_ssize_t m, Shape z,
                        Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # rows (m, P, K) of the m images from x on, each through its channels-last copy in xt.
    cdef Py_ssize_t n
    for n in range(m):
        transpose_tiles(x + n * z.C * z.H * z.W, xt, z.C, z.H * z.W, <floating*>NULL)
        im2row_image(xt, rows + n * z.P * z.K, z.C, z.H, z.W, HH, WW, stride, pad, z.H_out, z.W_out)


cdef void _transpose_chunk(const floating* src, floating* dst, Py_ssize_t m, Py_ssize_t A, Py_ssize_t B,
                           const floating* bias) noexcept nogil:
    # dst[n] (B, A) = src[n] (A, B) transposed (+ bias[q] on row q), for the m planes of a chunk.
    cdef Py_ssize_t n
    for n in range(m):
        transpose_tiles(src + n * A * B, dst + n * A * B, A, B, bias)


cdef void _gather_planes(const floating* dout, floating* dmat, Py_ssize_t m, Py_ssize_t F,
                         Py_ssize_t P) noexcept nogil:
    # dmat (F, m, P) = dout (m, F, P): the GEMMs' operand with the chunk's images side by side.
    cdef Py_ssize_t f, n
    for f in range(F):
        for n in range(m):
            memcpy(dmat + (f * m + n) * P, dout + (n * F + f) * P, P * sizeof(floating))


cdef void _col2im_chunk(const floating* dcols, floating* dx, Py_ssize_t m, Shape z, Py_ssize_t HH,
                        Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # dx (m, C, H, W) of the chunk = the column gradient (K, m, P) added back.
    cdef Py_ssize_t nc
    for nc in range(m * z.C):
        col2im_plane(dcols, dx + nc * z.H * z.W, m, nc // z.C, nc % z.C, z.H, z.W, HH, WW, stride, pad,
                     z.H_out, z.W_out)


cdef void _row2im_chunk(const floating* drows, floating* dx, floating* xt, Py_ssize_t m, Shape z,
                        Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # dx (m, C, H, W) of the chunk = the row gradient (m, P, K) added back, channels last in xt, then transposed.
    cdef Py_ssize_t n
    for n in range(m):
        row2im_image(drows + n * z.P * z.K, xt, z.C, z.H, z.W, HH, WW, stride, pad, z.H_out, z.W_out)
        transpose_tiles(xt, dx + n * z.C * z.H * z.W, z.H * z.W, z.C, <floating*>NULL)


def im2col_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] wmat, const floating[::1] b,
                   floating[:, :, ::1] out, floating[::1] cols, floating[::1] res,
                   Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                   Py_ssize_t stride, Py_ssize_t pad, bint split=False):
    """out[lo:hi] = the convolution of x[lo:hi] by wmat (F, K) plus b, in chunks of nb images.

    cols and res hold K*nb*P and F*nb*P elements. split: share the GEMMs with the worker.
    """
    cdef Shape z = _shape(x.shape, wmat.shape, HH, WW, stride, pad)
    cdef Py_ssize_t n0 = lo, m
    cdef Job job
    cdef bint shared = split and _lend()
    with nogil:
        while n0 < hi:
            m = min(nb, hi - n0)
            _im2col_chunk(&x[n0, 0, 0, 0], &cols[0], m, z, HH, WW, stride, pad)
            job.ntasks = job.nblocks = job.scratch = 0
            _add_task(&job, False, False, z.F, m * z.P, z.K, &wmat[0, 0], z.K, &cols[0], m * z.P, 0, &res[0],
                      m * z.P)
            _run(&job, shared)
            bias_transpose_chunk(&res[0], &b[0], &out[n0, 0, 0], z.F, m, z.P)
            n0 += m
    if shared:
        _give_back((wmat.base, cols.base))


def im2col_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] wmat, const floating[:, :, ::1] dout,
                    floating[:, :, :, ::1] dx, floating[:, ::1] dw, double[::1] db,
                    floating[::1] cols, floating[::1] dcols, floating[::1] dmat,
                    Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                    Py_ssize_t stride, Py_ssize_t pad, bint per_image, bint dw_transposed, bint split=False):
    """dx[lo:hi] (overwritten; dx None: not computed), dw and db (overwritten) of images lo:hi, in chunks of nb.

    dw is (F, K), or (K, F) with dw_transposed (a long GEMM runs faster
    producing dw^T). per_image: dw and the column gradient by one GEMM per
    image on dout as it lies (thin layers), else through dmat, dout's chunk
    gathered to (F, m*P). cols and dcols hold K*nb*P elements, dmat F*nb*P
    (unused with per_image). split: share the GEMMs with the worker.
    """
    cdef Shape z = _shape(x.shape, wmat.shape, HH, WW, stride, pad)
    cdef Py_ssize_t F = z.F, K = z.K, P = z.P, C = z.C
    cdef Py_ssize_t n0 = lo, m, n, f, L
    cdef floating beta = 0
    cdef floating* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    cdef Job job
    cdef bint shared = split and _lend()
    with nogil:
        for f in range(F):
            db[f] = 0
        while n0 < hi:
            m = min(nb, hi - n0)
            L = m * P
            _im2col_chunk(&x[n0, 0, 0, 0], &cols[0], m, z, HH, WW, stride, pad)
            _add_bias_grad(&dout[n0, 0, 0], &db[0], m, F, P)
            if per_image:
                for n in range(m):
                    job.ntasks = job.nblocks = job.scratch = 0
                    _add_task(&job, False, True, F, K, P, &dout[n0 + n, 0, 0], P, &cols[n * P], L, beta,
                              &dw[0, 0], K)
                    if dxp != NULL:
                        _add_task(&job, True, False, K, P, F, &wmat[0, 0], K, &dout[n0 + n, 0, 0], P, 0,
                                  &dcols[n * P], L)
                    _run(&job, shared)
                    beta = 1
            else:
                _gather_planes(&dout[n0, 0, 0], &dmat[0], m, F, P)
                job.ntasks = job.nblocks = job.scratch = 0
                if dw_transposed:
                    _add_task(&job, False, True, K, F, L, &cols[0], L, &dmat[0], L, beta, &dw[0, 0], F)
                else:
                    _add_task(&job, False, True, F, K, L, &dmat[0], L, &cols[0], L, beta, &dw[0, 0], K)
                if dxp != NULL:
                    _add_task(&job, True, False, K, L, F, &wmat[0, 0], K, &dmat[0], L, 0, &dcols[0], L)
                _run(&job, shared)
                beta = 1
            if dxp != NULL:
                _col2im_chunk(&dcols[0], dxp + n0 * C * z.H * z.W, m, z, HH, WW, stride, pad)
            n0 += m
    if shared:
        _give_back((wmat.base, dout.base, cols.base, dmat.base))


def im2row_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] wt, const floating[::1] b,
                   floating[:, :, ::1] out, floating[::1] rows, floating[::1] res, floating[::1] xt,
                   Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                   Py_ssize_t stride, Py_ssize_t pad, bint split=False):
    """out[lo:hi] = the convolution of x[lo:hi] by wt (F, HH*WW*C, channels last) plus b, in chunks of nb.

    rows and res hold nb*P*K and nb*P*F elements, xt C*H*W. split: share the GEMMs with the worker.
    """
    cdef Shape z = _shape(x.shape, wt.shape, HH, WW, stride, pad)
    cdef Py_ssize_t n0 = lo, m
    cdef Job job
    cdef bint shared = split and _lend()
    with nogil:
        while n0 < hi:
            m = min(nb, hi - n0)
            _im2row_chunk(&x[n0, 0, 0, 0], &rows[0], &xt[0], m, z, HH, WW, stride, pad)
            job.ntasks = job.nblocks = job.scratch = 0
            _add_task(&job, False, True, m * z.P, z.F, z.K, &rows[0], z.K, &wt[0, 0], z.K, 0, &res[0], z.F)
            _run(&job, shared)
            _transpose_chunk(&res[0], &out[n0, 0, 0], m, z.P, z.F, &b[0])
            n0 += m
    if shared:
        _give_back((wt.base, rows.base))


def im2row_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] wt, const floating[:, :, ::1] dout,
                    floating[:, :, :, ::1] dx, floating[:, ::1] dw, double[::1] db,
                    floating[::1] rows, floating[::1] drows, floating[::1] dT, floating[::1] xt,
                    Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb, Py_ssize_t HH, Py_ssize_t WW,
                    Py_ssize_t stride, Py_ssize_t pad, bint split=False):
    """dx[lo:hi] (overwritten; dx None: not computed), dw (F, HH*WW*C) and db (overwritten) of images lo:hi.

    rows and drows hold nb*P*K elements, dT nb*P*F, xt C*H*W. split: share the GEMMs with the worker.
    """
    cdef Shape z = _shape(x.shape, wt.shape, HH, WW, stride, pad)
    cdef Py_ssize_t F = z.F, K = z.K, P = z.P, CHW = z.C * z.H * z.W
    cdef Py_ssize_t n0 = lo, m, f
    cdef floating beta = 0
    cdef floating* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    cdef Job job
    cdef bint shared = split and _lend()
    with nogil:
        for f in range(F):
            db[f] = 0
        while n0 < hi:
            m = min(nb, hi - n0)
            _im2row_chunk(&x[n0, 0, 0, 0], &rows[0], &xt[0], m, z, HH, WW, stride, pad)
            _transpose_chunk(&dout[n0, 0, 0], &dT[0], m, F, P, <floating*>NULL)
            _add_bias_grad(&dout[n0, 0, 0], &db[0], m, F, P)
            job.ntasks = job.nblocks = job.scratch = 0
            _add_task(&job, True, False, F, K, m * P, &dT[0], F, &rows[0], K, beta, &dw[0, 0], K)
            if dxp != NULL:
                _add_task(&job, False, False, m * P, K, F, &dT[0], F, &wt[0, 0], K, 0, &drows[0], K)
            _run(&job, shared)
            beta = 1
            if dxp != NULL:
                _row2im_chunk(&drows[0], dxp + n0 * CHW, &xt[0], m, z, HH, WW, stride, pad)
            n0 += m
    if shared:
        _give_back((wt.base, rows.base, dT.base))


cdef inline void _slab_gemms(bint ta, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A, Py_ssize_t lda,
                             Py_ssize_t sa, const floating* B, Py_ssize_t ldb, Py_ssize_t sb, floating beta,
                             floating* C, Py_ssize_t ldc, Py_ssize_t sc, Py_ssize_t count, bint split) noexcept nogil:
    # C[i] = op(A[i]) @ B[i] + beta * C[i] for the count slabs i (A[i] = A + i*sa elements, ...) as one job;
    # split: shared with the worker (the caller lent it).
    cdef Job job
    job.ntasks = job.nblocks = job.scratch = 0
    _add_batch(&job, ta, False, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, count)
    _run(&job, split)


def batched_gemm(const floating[:, :, :] A, const floating[:, :, :] B, floating[:, :, :] C, double beta,
                 bint split=False, bint trans_a=False):
    """C[i] = op(A[i]) @ B[i] + beta * C[i] for every i: (nk, M, K) @ (nk, K, N) -> (nk, M, N), op(A) = A
    or, with ``trans_a``, A transposed (A then (nk, K, M)).

    Each matrix has unit stride along its rows (any row and member strides,
    such as Winograd's slabs). split: share the GEMMs with the worker.
    """
    cdef Py_ssize_t z = sizeof(floating)
    cdef bint shared = split and _lend()
    with nogil:
        _slab_gemms(trans_a, C.shape[1], C.shape[2], B.shape[1], &A[0, 0, 0], A.strides[1] // z, A.strides[0] // z,
                    &B[0, 0, 0], B.strides[1] // z, B.strides[0] // z, <floating>beta, &C[0, 0, 0], C.strides[1] // z,
                    C.strides[0] // z, C.shape[0], shared)
    if shared:
        _give_back((A.base, B.base))


# ---------------------------------------------------------------- Winograd
# V (nk, C, nb*T) and M (nk, F, nb*T) are the slabs of vbuf and mbuf (rows vbuf.shape[1] and mbuf.shape[1] apart,
# each holding at least nb*T*C and nb*T*F elements); the backward pass also reads vbuf as (nk, nb*T, C).
# T = tH*tW tiles per plane, nk = (m + 2)^2; the tile layouts are _winograd.pyx's.


cdef _tile_scratch(floating like, Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m, Py_ssize_t planes):
    # The stages' scratch (_tiles.scratch_size), one thread's.
    return np.empty(scratch_size(tH, tW, m, planes), dtype=np.float32 if floating is float else np.float64)


def winograd_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] U, const floating[::1] b,
                     floating[:, :, :, ::1] out, floating[:, ::1] vbuf, floating[:, ::1] mbuf, Py_ssize_t pad,
                     Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb):
    """out[lo:hi] = the F(m x m, 3x3) convolution of x[lo:hi] by the transformed filters U (nk, F, C), plus b.

    In chunks of nb images: the input transform into V, the nk GEMMs M[k] = U[k] @ V[k], the output transform.
    """
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3], F = out.shape[1]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3], T = tH * tW, nk = (m + 2) * (m + 2)
    cdef Py_ssize_t vs = vbuf.shape[1], ms = mbuf.shape[1], n0 = lo, mm, P, i
    cdef Py_ssize_t z = sizeof(floating), lu = U.strides[1] // z, su = U.strides[0] // z
    cdef floating[::1] tb = _tile_scratch(x[0, 0, 0, 0], tH, tW, m, 1)
    cdef floating* V = &vbuf[0, 0]
    cdef floating* M = &mbuf[0, 0]
    with nogil:
        while n0 < hi:
            mm = min(nb, hi - n0)
            P = mm * T
            for i in range(mm * C):
                input_plane(&x[n0 + i // C, i % C, 0, 0], V + (i % C) * P + (i // C) * T, vs, &tb[0], H, W, pad,
                            tH, tW, m)
            _slab_gemms(False, F, P, C, &U[0, 0, 0], lu, su, V, P, vs, 0, M, P, ms, nk, False)
            for i in range(mm * F):
                output_plane(M + (i % F) * P + (i // F) * T, ms, &tb[0], &out[n0 + i // F, i % F, 0, 0], b[i % F],
                             Ho, Wo, tH, tW, m)
            n0 += mm


def winograd_backward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] U, const floating[:, :, :, ::1] dout,
                      floating[:, :, :, ::1] dx, floating[:, :, ::1] dU, double[::1] db, floating[:, ::1] vbuf,
                      floating[:, ::1] mbuf, Py_ssize_t pad, Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t m,
                      Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t nb):
    """dU (nk, F, C) and db (F,), both overwritten, and dx[lo:hi] (overwritten; dx None: not computed, and U
    may be None) of images lo:hi.

    Per chunk of nb images: dM = A dY A^T into M, the input tiles laid out (P, C) into vbuf (so dM @ V^T is an
    NN GEMM), dU[k] += dM[k] @ V[k]^T; then dV[k] = U[k]^T dM[k] into V, whose input adjoint is dx.
    """
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3], F = dout.shape[1]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3], T = tH * tW, nk = (m + 2) * (m + 2)
    cdef Py_ssize_t vs = vbuf.shape[1], ms = mbuf.shape[1], n0 = lo, mm, P, i, k, c0
    cdef Py_ssize_t nblk = (C + CB - 1) // CB, z = sizeof(floating)
    cdef Py_ssize_t ldu = dU.strides[1] // z, sdu = dU.strides[0] // z
    cdef Py_ssize_t lu = U.strides[1] // z if U is not None else 0, su = U.strides[0] // z if U is not None else 0
    cdef floating beta = 0
    cdef floating* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    cdef floating[::1] tb = _tile_scratch(x[0, 0, 0, 0], tH, tW, m, CB)
    cdef floating* V = &vbuf[0, 0]
    cdef floating* M = &mbuf[0, 0]
    with nogil:
        for k in range(F):
            db[k] = 0
        while n0 < hi:
            mm = min(nb, hi - n0)
            P = mm * T
            _add_bias_grad(&dout[n0, 0, 0, 0], &db[0], mm, F, Ho * Wo)
            for i in range(mm * F):
                output_adjoint_plane(&dout[n0 + i // F, i % F, 0, 0], &tb[0], M + (i % F) * P + (i // F) * T, ms,
                                     Ho, Wo, tH, tW, m)
            for i in range(mm * nblk):
                c0 = (i % nblk) * CB
                input_block_t(&x[n0 + i // nblk, c0, 0, 0], min(<Py_ssize_t>CB, C - c0), V + (i // nblk) * T * C + c0,
                              vs, C, &tb[0], H, W, pad, tH, tW, m)
            _slab_gemms(False, F, C, P, M, P, ms, V, C, vs, beta, &dU[0, 0, 0], ldu, sdu, nk, False)
            beta = 1
            if dxp != NULL:
                # The tiles are used up: their memory takes their gradient.
                _slab_gemms(True, C, P, F, &U[0, 0, 0], lu, su, M, P, ms, 0, V, P, vs, nk, False)
                for i in range(mm * C):
                    input_adjoint_plane(V + (i % C) * P + (i // C) * T, vs, &tb[0],
                                        dxp + ((n0 + i // C) * C + i % C) * H * W, H, W, pad, tH, tW, m)
            n0 += mm


# ---------------------------------------------------------------- direct convolution
# One image at a time, its kernels cut into blocks shared with the worker (convnet/fast/conv_direct.py sizes the
# buffers and builds the offsets; layouts as _direct.pyx's).


cdef inline Direct _rows_kernel(const floating* xp, Py_ssize_t Wpp, const Py_ssize_t[::1] off, const floating* wt,
                                Py_ssize_t fb, const floating* bias, Py_ssize_t F, Py_ssize_t Ho,
                                Py_ssize_t Wo) noexcept nogil:
    cdef Direct d
    d.xp, d.Wpp, d.off, d.ntaps, d.wt, d.fb, d.bias = xp, Wpp, &off[0], off.shape[0], wt, fb, bias
    d.F, d.Ho, d.Wo = F, Ho, Wo
    return d


def direct_forward(const floating[:, :, :, ::1] x, const floating[::1] wt, const floating[::1] bias,
                   floating[:, :, :, ::1] out, floating[::1] scratch, const Py_ssize_t[::1] off,
                   Py_ssize_t fb, Py_ssize_t Hp, Py_ssize_t Wpp, Py_ssize_t top, Py_ssize_t left,
                   Py_ssize_t lo, Py_ssize_t hi, bint split=False):
    """out[lo:hi] as ``_direct.correlate``; split: each image's output rows shared with the worker."""
    cdef Py_ssize_t n, C = x.shape[1], F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Direct d = _rows_kernel(&scratch[0], Wpp, off, &wt[0], fb, &bias[0], F, Ho, Wo)
    cdef Job job
    cdef bint shared = split and _lend()
    with nogil:
        for n in range(lo, hi):
            pad_image(&x[n, 0, 0, 0], C, x.shape[2], x.shape[3], &scratch[0], Hp, Wpp, top, left)
            job.ntasks = job.nblocks = job.scratch = 0
            _add_direct(&job, ROWS, d, Ho, F * Ho * Wo, &out[n, 0, 0, 0])
            _run(&job, shared)
    if shared:
        _give_back((wt.base, bias.base, scratch.base, off.base))


def direct_backward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dout, floating[:, ::1] dw,
                    double[::1] db, floating[::1] scratch, floating[::1] dscratch, const floating[::1] zeros,
                    const Py_ssize_t[::1] off, Py_ssize_t Hp, Py_ssize_t Wpp, Py_ssize_t Wq, Py_ssize_t pad,
                    bint by_filters, floating[:, :, :, ::1] dx, const floating[::1] wt, const Py_ssize_t[::1] dx_off,
                    Py_ssize_t fb, Py_ssize_t Hq, Py_ssize_t Wqx, Py_ssize_t top, Py_ssize_t left, floating[::1] dpad,
                    Py_ssize_t lo, Py_ssize_t hi, bint split=False):
    """dw and db (added to) and dx[lo:hi] (overwritten; dx None: not computed) of images lo:hi, as
    ``_direct.filter_gradient`` (one image at a time: ``scratch`` C*Hp*Wpp, ``dscratch`` one image's dout
    prepared for dw) and ``_direct.correlate`` on dout padded into ``dpad`` (F*Hq*Wqx) by the filters ``wt``
    (blocks of ``fb``) at ``dx_off``, dout at (top, left) in (F, Hq, Wqx); split: each image's dw taps and dx
    rows shared with the worker."""
    cdef Py_ssize_t n, C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dout.shape[1], Ho = dout.shape[2], Wo = dout.shape[3], Fp = dw.shape[1]
    cdef Py_ssize_t ntaps = off.shape[0]
    cdef Direct d, e
    cdef floating* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    cdef Job job
    cdef bint shared = split and _lend()
    d.xp, d.Wpp, d.off, d.ntaps, d.dy, d.zeros = &scratch[0], Wpp, &off[0], ntaps, &dscratch[0], &zeros[0]
    d.F, d.Ho, d.Wo, d.Wq, d.Fp = F, Ho, Wo, Wq, Fp
    if dxp != NULL:
        e = _rows_kernel(&dpad[0], Wqx, dx_off, &wt[0], fb, &zeros[0], C, H, W)
    with nogil:
        for n in range(lo, hi):
            sum_planes(&dout[n, 0, 0, 0], 1, F, Ho * Wo, &db[0])
            pad_image(&x[n, 0, 0, 0], C, H, W, &scratch[0], Hp, Wpp, pad, pad)
            if by_filters:
                transpose_planes(&dout[n, 0, 0, 0], 1, F, Ho * Wo, &dscratch[0], Fp)
            else:
                pad_rows(&dout[n, 0, 0, 0], F * Ho, Wo, &dscratch[0], Wq)
            job.ntasks = job.nblocks = job.scratch = 0
            _add_direct(&job, TAPS_T if by_filters else TAPS, d, ntaps // DC_DW_TB, dw.shape[0] * Fp, &dw[0, 0])
            if dxp != NULL:
                pad_image(&dout[n, 0, 0, 0], F, Ho, Wo, &dpad[0], Hq, Wqx, top, left)
                _add_direct(&job, ROWS, e, H, C * H * W, dxp + n * C * H * W)
            _run(&job, shared)
    if shared:
        _give_back((scratch.base, dscratch.base, zeros.base, off.base, wt.base if dxp != NULL else None,
                    dx_off.base if dxp != NULL else None, dpad.base if dxp != NULL else None))
