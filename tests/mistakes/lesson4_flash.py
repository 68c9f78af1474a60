"""Lesson 4's known mistakes, written as students write them (independently of the exercise definitions).

Each entry below is one exercise's answer with one mistake in it, the way it shows up in real
submissions; ``MISTAKES`` pairs it with the words its visible test's failure must show.
"""

from __future__ import annotations

from course_kit.triton_launch import (
    NO_TRITON,
    flash_forward_launcher,
    matmul_launcher,
    scaled_add_launcher,
    softmax_launcher,
)
from mistakes import KnownMistake

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton ships for Linux only: the kernels are still defined, their entries left out
    triton = tl = NO_TRITON

MISTAKES: list[KnownMistake] = []


# === Triton, exercises 6 to 9 ===========================================================================
# Kernels as students write them; each answer is the kit's launcher running one, as the lesson's test
# cell builds it (`softmax_launcher(softmax_kernel)`). The launcher itself names a store past the end
# and an element no program wrote; the exercises' Mistake hints name the rest.

# --- exercise 6: scaled_add_kernel ---------------------------------------------------------------------

@triton.jit
def scaled_add_without_a_mask(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(OUT + offsets, tl.load(X + offsets) * alpha + tl.load(Y + offsets))


@triton.jit
def scaled_add_without_the_program_id(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)  # every program takes the first block
    inside = offsets < n
    tl.store(OUT + offsets, tl.load(X + offsets, mask=inside) * alpha + tl.load(Y + offsets, mask=inside),
             mask=inside)


# --- exercise 7: softmax_kernel ------------------------------------------------------------------------

@triton.jit
def softmax_without_the_max(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=cols < n_cols, other=float("-inf"))
    e = tl.exp(x)
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=cols < n_cols)


@triton.jit
def softmax_ignoring_the_strides(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * n_cols + cols, mask=cols < n_cols, other=float("-inf"))  # as if x were contiguous
    e = tl.exp(x - tl.max(x, 0))
    tl.store(OUT + row * n_cols + cols, e / tl.sum(e, 0), mask=cols < n_cols)


@triton.jit
def softmax_padding_loaded_as_zero(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols,
                                   BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=cols < n_cols)  # no other=: the lanes past the end are 0
    e = tl.exp(x - tl.max(x, 0))
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=cols < n_cols)


@triton.jit
def softmax_row_from_the_wrong_axis(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols,
                                    BLOCK: tl.constexpr):
    row = tl.program_id(1)  # the grid has one axis: this is 0 in every program
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=cols < n_cols, other=float("-inf"))
    e = tl.exp(x - tl.max(x, 0))
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=cols < n_cols)


# --- exercise 8: matmul_kernel -------------------------------------------------------------------------

@triton.jit
def matmul_operands_swapped(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(B + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc += tl.dot(b, a, input_precision="ieee")
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def matmul_unmasked_along_k(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * stride_am + ks[None, :] * stride_ak, mask=rows[:, None] < M, other=0.0)
        b = tl.load(B + ks[:, None] * stride_bk + cols[None, :] * stride_bn, mask=cols[None, :] < N, other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def matmul_program_ids_swapped(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # axis 1 numbers the column tiles
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(B + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def matmul_ignoring_the_strides(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
                                stride_cn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(B + ks[:, None] * N + cols[None, :], mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(C + rows[:, None] * N + cols[None, :], acc, mask=(rows[:, None] < M) & (cols[None, :] < N))


# --- exercise 9: flash_forward_kernel ------------------------------------------------------------------
# One body with a switch per mistake (the lines a student gets wrong), and one kernel per mistake with
# the launcher's signature; the rest of each is the right kernel, as a student's would be.

@triton.jit
def flash_forward_body(
    Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
    stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale,
    IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, SWAP_PROGRAM_IDS: tl.constexpr, NO_MAX: tl.constexpr, NO_KEY_MASK: tl.constexpr,
):
    if SWAP_PROGRAM_IDS:
        start_m, bh = tl.program_id(1) * BLOCK_M, tl.program_id(0)
    else:
        start_m, bh = tl.program_id(0) * BLOCK_M, tl.program_id(1)
    rows = start_m + tl.arange(0, BLOCK_M)
    cols_d, cols_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(Q + bh * stride_qb + rows[:, None] * stride_qm + cols_d[None, :] * stride_qd,
                mask=(rows[:, None] < n_q) & (cols_d[None, :] < d), other=0.0) * scale
    m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    k_end = n_k
    if IS_CAUSAL:
        k_end = tl.minimum(n_k, start_m + BLOCK_M)
    for start_n in range(0, k_end, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        k_t = tl.load(K + bh * stride_kb + keys[None, :] * stride_kn + cols_d[:, None] * stride_kd,
                      mask=(keys[None, :] < n_k) & (cols_d[:, None] < d), other=0.0)
        s = tl.dot(q, k_t, input_precision="ieee")
        visible = keys[None, :] < n_k
        if NO_KEY_MASK:
            visible = keys[None, :] >= 0  # every lane, the padding past n_k included
        if IS_CAUSAL:
            visible = visible & (keys[None, :] <= rows[:, None])
        s = tl.where(visible, s, float("-inf"))
        if NO_MAX:
            m_new = tl.zeros((BLOCK_M,), dtype=tl.float32)
        else:
            m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(V + bh * stride_vb + keys[:, None] * stride_vn + cols_dv[None, :] * stride_vd,
                    mask=(keys[:, None] < n_k) & (cols_dv[None, :] < d_v), other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m = m_new
    acc = acc / l[:, None]
    tl.store(O + bh * stride_ob + rows[:, None] * stride_om + cols_dv[None, :] * stride_od,
             acc.to(O.dtype.element_ty), mask=(rows[:, None] < n_q) & (cols_dv[None, :] < d_v))
    tl.store(LSE + bh * n_q + rows, m + tl.log(l), mask=rows < n_q)


@triton.jit
def flash_program_ids_swapped(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
                              stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v,
                              scale, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    flash_forward_body(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd, stride_vb,
                       stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale, IS_CAUSAL,
                       BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, True, False, False)


@triton.jit
def flash_without_the_running_max(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn,
                                  stride_kd, stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q,
                                  n_k, d, d_v, scale, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    flash_forward_body(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd, stride_vb,
                       stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale, IS_CAUSAL,
                       BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, False, True, False)


@triton.jit
def flash_without_the_key_mask(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
                               stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v,
                               scale, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    flash_forward_body(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd, stride_vb,
                       stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale, IS_CAUSAL,
                       BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, False, False, True)


TRITON_MISTAKES = [
    KnownMistake("triton_scaled_add", "no mask on the last block", scaled_add_launcher(scaled_add_without_a_mask),
                 "a store needs a mask"),
    KnownMistake("triton_scaled_add", "program id not used", scaled_add_launcher(scaled_add_without_the_program_id),
                 "unwritten"),
    KnownMistake("triton_softmax", "row max not subtracted", softmax_launcher(softmax_without_the_max),
                 "subtract the row's maximum"),
    KnownMistake("triton_softmax", "strides ignored", softmax_launcher(softmax_ignoring_the_strides),
                 "read through its strides"),
    KnownMistake("triton_softmax", "padding lanes loaded as 0", softmax_launcher(softmax_padding_loaded_as_zero),
                 'other=float("-inf")'),
    KnownMistake("triton_softmax", "program id of the wrong axis", softmax_launcher(softmax_row_from_the_wrong_axis),
                 "unwritten"),
    KnownMistake("triton_matmul", "tl.dot operands swapped", matmul_launcher(matmul_operands_swapped),
                 "operands swapped"),
    KnownMistake("triton_matmul", "no mask along K", matmul_launcher(matmul_unmasked_along_k),
                 "Mask them with ks < K"),
    KnownMistake("triton_matmul", "program ids swapped", matmul_launcher(matmul_program_ids_swapped), "unwritten"),
    KnownMistake("triton_matmul", "strides ignored", matmul_launcher(matmul_ignoring_the_strides),
                 "read through their strides"),
    KnownMistake("triton_flash_forward", "program ids swapped", flash_forward_launcher(flash_program_ids_swapped),
                 "unwritten"),
    KnownMistake("triton_flash_forward", "running max not subtracted",
                 flash_forward_launcher(flash_without_the_running_max), "subtract the maximum"),
    KnownMistake("triton_flash_forward", "no mask on the last key tile",
                 flash_forward_launcher(flash_without_the_key_mask), "padding lanes of the last key tile"),
]
if triton is not NO_TRITON:  # without Triton no kernel runs: nothing to catalogue
    MISTAKES += TRITON_MISTAKES
# === end of Triton ======================================================================================
