"""Launchers for Lesson 4's Triton kernels: you write the kernel, the kit launches it.

A Triton kernel does nothing until something launches it: allocates its output, works out the grid
of programs, and passes the tensors with their sizes and strides. In Lesson 4 that part is the
kit's. Each ``*_launcher(kernel)`` takes a kernel written with ``@triton.jit`` and returns the
function a test checks, so what is checked is always this launcher running your kernel::

    scaled_add = scaled_add_launcher(scaled_add_kernel)
    scaled_add(torch.ones(5), torch.ones(5), 2.0)  # tensor([3., 3., 3., 3., 3.])

The launcher does nothing of the kernel's work (without your kernel it computes nothing); it makes
the kernel's mistakes show, the same way on every run:

* every tensor the kernel reads sits in a buffer with a guard zone of NaN on either side: a load
  past the end reads NaN, not another tensor's memory;
* the output, guard zones included, is filled with a marker (a NaN no arithmetic produces) before
  the launch. Afterwards, a marker overwritten in a guard zone is a store past the end (a missing
  mask); a marker left in the output is an element no program wrote (a grid or program-id
  mistake). Either raises a RuntimeError that says so.

The kernel given is checked: a kernel object made by ``@triton.jit`` from a function whose own source
carries that decorator, launched afresh from that function (nothing attached to the object runs).
A kernel whose body still raises ``NotImplementedError`` (the release's stub) is not launched.

Triton is imported when a launcher runs, so the kit imports without it. Where Triton is not
installed (it ships for Linux only), a notebook binds ``triton`` and ``tl`` to :data:`NO_TRITON`:
kernels can still be defined, and launching one raises a RuntimeError that says why.

Part of the student kit: it imports only the standard library and torch (and Triton, when a kernel runs).
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import textwrap
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["scaled_add_launcher", "softmax_launcher", "matmul_launcher", "flash_forward_launcher", "NO_TRITON",
           "NOT_INSTALLED", "VECTOR_BLOCK", "MATMUL_BLOCKS", "FLASH_BLOCKS", "softmax_block"]

VECTOR_BLOCK = 16  # elements per program of scaled_add_kernel
MATMUL_BLOCKS = (16, 16, 16)  # BLOCK_M, BLOCK_N, BLOCK_K: on a GPU, tl.dot needs every side >= 16
FLASH_BLOCKS = (16, 16)  # BLOCK_M queries per program, BLOCK_N keys per step of its loop
GUARD = 4096  # elements of guard zone before and after every tensor a kernel gets
NOT_INSTALLED = ("Triton is not installed in this Python, so no kernel can run here. It ships for Linux only "
                 "(there: pip install triton); the exercise scores 0 wherever it runs without Triton")
# The marker an output is filled with: a NaN with a payload, as the integer of the same width holds it.
_MARKERS = {torch.float32: (torch.int32, 0x7FC0DEAD), torch.float64: (torch.int64, 0x7FF80000DEADBEEF),
            torch.float16: (torch.int16, 0x7E5A), torch.bfloat16: (torch.int16, 0x7FDA)}


def softmax_block(n_cols: int) -> int:
    """BLOCK of softmax_kernel: one block holds a whole row, a power of two of at least 16."""
    return max(16, 1 << max(n_cols - 1, 0).bit_length())


# --- where Triton is not installed -------------------------------------------------------------------

class _NoTritonKernel:
    """What ``@triton.jit`` gives where Triton is not installed: the function, which cannot be launched."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __getitem__(self, grid: Any) -> Callable:
        raise RuntimeError(NOT_INSTALLED)


class _NoTriton:
    """Stands for ``triton`` and ``triton.language`` where Triton is not installed, so that a lesson's
    kernels can still be defined (``@triton.jit``, ``BLOCK: tl.constexpr``); every launch says why it
    cannot run."""

    def jit(self, fn: Callable | None = None, **options: Any) -> Any:
        return _NoTritonKernel(fn) if fn is not None else _NoTritonKernel

    def __getattr__(self, name: str) -> _NoTriton:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __repr__(self) -> str:
        return "NO_TRITON (Triton is not installed)"


NO_TRITON = _NoTriton()


# --- the kernel given ---------------------------------------------------------------------------------

def _triton() -> Any:
    try:
        import triton
    except ImportError:
        raise RuntimeError(NOT_INSTALLED) from None
    return triton


def _kernel_types() -> tuple[type, ...]:
    """What ``triton.jit`` returns: a JITFunction, or under TRITON_INTERPRET=1 an InterpretedFunction."""
    try:
        from triton.runtime.jit import JITFunction
    except ImportError:
        raise RuntimeError(NOT_INSTALLED) from None
    kinds: tuple[type, ...] = (JITFunction,)
    try:
        from triton.runtime.interpreter import InterpretedFunction
        kinds += (InterpretedFunction,)
    except ImportError:  # a Triton without the interpreter: compiled kernels only
        pass
    return kinds


def _definition(fn: Callable) -> ast.FunctionDef | None:
    """The ``def`` of ``fn`` as its source says, decorators included, or None without a source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    first = tree.body[0] if tree.body else None
    return first if isinstance(first, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _is_jit(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr == "jit" and isinstance(target.value, ast.Name) and target.value.id == "triton"
    return isinstance(target, ast.Name) and target.id == "jit"


def _stub(definition: ast.FunctionDef) -> bool:
    """Whether the kernel still raises NotImplementedError (the release's stub)."""
    for node in ast.walk(definition):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return True
    return False


@functools.lru_cache(maxsize=64)
def _launchable(fn: Callable) -> Any:
    """A kernel of our own from the student's function: compiled once per launcher, with no hook or
    other state that the object handed in may carry."""
    return _triton().jit(fn)


def _checked_kernel(kernel: Any, expected: str) -> Any:
    """``kernel`` made launchable, or a clear error: a TypeError for what is not a ``@triton.jit``
    kernel, NotImplementedError for the release's stub, RuntimeError where Triton is missing."""
    if isinstance(kernel, _NoTritonKernel):
        raise RuntimeError(NOT_INSTALLED)
    kinds = _kernel_types()
    if type(kernel) not in kinds:
        what = f"the function `{kernel.__name__}`" if inspect.isfunction(kernel) else f"a {type(kernel).__name__}"
        raise TypeError(f"expected a Triton kernel, `{expected}` written with @triton.jit on the line above its "
                        f"def; got {what}")
    definition = _definition(kernel.fn)
    if definition is None or not any(_is_jit(d) for d in definition.decorator_list):
        raise TypeError(f"`{expected}` must be defined with @triton.jit on the line above its def "
                        "(the grader reads the kernel's own source)")
    if _stub(definition):
        raise NotImplementedError(f"{expected}: not implemented yet")
    return _launchable(kernel.fn)


# --- guarded tensors ----------------------------------------------------------------------------------

def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _guarded_copy(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``, with its shape and strides, in a buffer with NaN guard zones either side."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(x.shape, x.stride())) if x.numel() else 0
    buffer = torch.full((span + 2 * GUARD,), float("nan"), dtype=x.dtype, device=device)
    inside = buffer.as_strided(x.shape, x.stride(), GUARD)
    inside.copy_(x)
    return inside


class _Output:
    """A contiguous output tensor in a buffer filled with the marker, guard zones included."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.name, self.shape = name, shape
        self.size = math.prod(shape)
        self.buffer = torch.empty(self.size + 2 * GUARD, dtype=dtype, device=device)
        self.marker = _MARKERS.get(dtype)
        if self.marker is None:
            raise TypeError(f"the launcher's outputs are floating-point tensors; got {dtype}")
        self.buffer.view(self.marker[0]).fill_(self.marker[1])
        self.tensor = self.buffer[GUARD:GUARD + self.size].view(shape)

    def problem(self, kernel: str, grid_note: str) -> str | None:
        """What the kernel did wrong with this output, or None: stores outside it, elements it left."""
        marked = (self.buffer.view(self.marker[0]) == self.marker[1]).cpu()
        outside = int((~marked[:GUARD]).sum() + (~marked[GUARD + self.size:]).sum())
        if outside:
            return (f"`{kernel}` stored {outside} value(s) outside `{self.name}`, past its end: a store needs a mask "
                    "that switches off the lanes past the end, as in tl.store(pointers, values, mask=offsets < n), "
                    f"and each program writes its own block only. {grid_note}")
        left = marked[GUARD:GUARD + self.size]
        if left.any():
            first = tuple(int(i) for i in torch.unravel_index(left.nonzero()[0, 0], self.shape))
            return (f"`{kernel}` left {int(left.sum())} of {self.size} elements of `{self.name}` unwritten (the first "
                    f"at index {first}): every element must be stored by some program. {grid_note}")
        return None


def _finish(kernel: str, outputs: list[_Output], grid_note: str) -> None:
    for output in outputs:
        problem = output.problem(kernel, grid_note)
        if problem is not None:
            raise RuntimeError(problem)


def _floating(name: str, *tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor) or tensor.dtype not in _MARKERS:
            raise TypeError(f"{name}: expected floating-point tensors, got {type(tensor).__name__}"
                            + (f" of dtype {tensor.dtype}" if isinstance(tensor, torch.Tensor) else ""))


# --- the launchers ------------------------------------------------------------------------------------

def scaled_add_launcher(kernel: Any) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """``scaled_add(x, y, alpha)``: ``out = x * alpha + y`` by ``kernel``, elementwise.

    The kernel is ``scaled_add_kernel(X, Y, OUT, alpha, n, BLOCK: tl.constexpr)``; the launcher
    flattens ``x`` and ``y`` (same shape), allocates ``out`` and starts ``cdiv(n, BLOCK)`` programs,
    ``BLOCK = VECTOR_BLOCK``, the last one partly past the end when ``n`` is not a multiple of it.
    """
    def scaled_add(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        jitted = _checked_kernel(kernel, "scaled_add_kernel")
        _floating("scaled_add", x, y)
        if x.shape != y.shape:
            raise ValueError(f"scaled_add: x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        device, n = _device(), x.numel()
        xs, ys = (_guarded_copy(t.reshape(-1), device) for t in (x, y))
        out = _Output("OUT", (n,), x.dtype, device)
        grid = (_triton().cdiv(n, VECTOR_BLOCK),)
        jitted[grid](xs, ys, out.tensor, float(alpha), n, BLOCK=VECTOR_BLOCK)
        _finish("scaled_add_kernel", [out], f"The grid is cdiv(n, BLOCK) = {grid[0]} programs: program "
                "tl.program_id(0) handles elements tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)")
        return out.tensor.reshape(x.shape).to(x.device)

    return scaled_add


def softmax_launcher(kernel: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``row_softmax(x)``: the softmax of every row of the 2-D ``x`` by ``kernel``, one program per row.

    The kernel is ``softmax_kernel(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols,
    BLOCK: tl.constexpr)``; ``x`` keeps its strides (a transposed or sliced ``x`` is not copied into
    another layout), ``BLOCK`` is the power of two of at least 16 that holds a row
    (:func:`softmax_block`), and the grid is ``(n_rows,)``.
    """
    def row_softmax(x: torch.Tensor) -> torch.Tensor:
        jitted = _checked_kernel(kernel, "softmax_kernel")
        _floating("softmax", x)
        if x.dim() != 2:
            raise ValueError(f"softmax: expected a 2-D tensor (rows, columns), got shape {tuple(x.shape)}")
        device, (n_rows, n_cols) = _device(), x.shape
        xs = _guarded_copy(x, device)
        out = _Output("OUT", (n_rows, n_cols), x.dtype, device)
        jitted[(n_rows,)](xs, out.tensor, *xs.stride(), *out.tensor.stride(), n_cols, BLOCK=softmax_block(n_cols))
        _finish("softmax_kernel", [out], f"The grid is (n_rows,) = ({n_rows},): program tl.program_id(0) "
                "handles row tl.program_id(0), whose elements are stride_xm apart from the next row's")
        return out.tensor.to(x.device)

    return row_softmax


def matmul_launcher(kernel: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``matmul(a, b)``: ``a @ b`` for 2-D ``a`` (M, K) and ``b`` (K, N) by ``kernel``, a tile per program.

    The kernel is ``matmul_kernel(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
    stride_cm, stride_cn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr)``;
    the inputs keep their strides, and the grid is ``(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))``: program
    ``(i, j)`` computes the tile of ``c`` at row tile ``i`` and column tile ``j``. Blocks:
    :data:`MATMUL_BLOCKS`.
    """
    def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        jitted = _checked_kernel(kernel, "matmul_kernel")
        _floating("matmul", a, b)
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: expected a (M, K) and b (K, N), got {tuple(a.shape)} and {tuple(b.shape)}")
        device, (m, k), n = _device(), a.shape, b.shape[1]
        block_m, block_n, block_k = MATMUL_BLOCKS
        a_s, b_s = _guarded_copy(a, device), _guarded_copy(b, device)
        c = _Output("C", (m, n), a.dtype, device)
        triton = _triton()
        grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
        jitted[grid](a_s, b_s, c.tensor, m, n, k, *a_s.stride(), *b_s.stride(), *c.tensor.stride(),
                     BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
        _finish("matmul_kernel", [c], f"The grid is (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)) = {grid}: tl.program_id(0) "
                "numbers the tiles of rows, tl.program_id(1) the tiles of columns")
        return c.tensor.to(a.device)

    return matmul


def flash_forward_launcher(kernel: Any) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``flash_forward(query, key, value, *, is_causal=False, scale=None)``: ``(out, lse)`` by ``kernel``.

    The kernel is ``flash_forward_kernel(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb,
    stride_kn, stride_kd, stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k,
    d, d_v, scale, IS_CAUSAL, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV)``, the last five ``tl.constexpr``.
    The launcher flattens the batch dimensions into one, ``BH`` (query (..., Lq, D) to (BH, Lq, D),
    keeping strides where a view can), allocates ``out`` (BH, Lq, Dv) in the inputs' dtype and the
    contiguous float32 ``lse`` (BH, Lq), and starts the grid ``(cdiv(Lq, BLOCK_M), BH)``: program
    ``(i, b)`` computes query tile ``i`` of batch x head ``b``. ``BLOCK_D`` and ``BLOCK_DV`` are the
    head sizes rounded up to a power of two of at least 16. Blocks: :data:`FLASH_BLOCKS`.
    """
    def flash_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, is_causal: bool = False,
                      scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        jitted = _checked_kernel(kernel, "flash_forward_kernel")
        _floating("flash_forward", query, key, value)
        *batch, n_q, d = query.shape
        n_k, d_v = key.shape[-2], value.shape[-1]
        if key.shape[:-2] != tuple(batch) or value.shape[:-1] != key.shape[:-1] or key.shape[-1] != d:
            raise ValueError(f"flash_forward: expected query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv), "
                             f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        scale = 1 / math.sqrt(d) if scale is None else float(scale)
        device, triton = _device(), _triton()
        q = _guarded_copy(query.reshape(-1, n_q, d), device)  # (BH, Lq, D)
        k = _guarded_copy(key.reshape(-1, n_k, d), device)  # (BH, Lk, D)
        v = _guarded_copy(value.reshape(-1, n_k, d_v), device)  # (BH, Lk, Dv)
        bh = q.shape[0]
        out = _Output("O", (bh, n_q, d_v), query.dtype, device)
        lse = _Output("LSE", (bh, n_q), torch.float32, device)
        block_m, block_n = FLASH_BLOCKS
        grid = (triton.cdiv(n_q, block_m), bh)
        jitted[grid](q, k, v, out.tensor, lse.tensor, *q.stride(), *k.stride(), *v.stride(), *out.tensor.stride(),
                     n_q, n_k, d, d_v, scale, IS_CAUSAL=bool(is_causal), BLOCK_M=block_m, BLOCK_N=block_n,
                     BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_DV=max(16, triton.next_power_of_2(d_v)))
        _finish("flash_forward_kernel", [out, lse], f"The grid is (cdiv(Lq, BLOCK_M), BH) = {grid}: tl.program_id(0) "
                "numbers the query tiles, tl.program_id(1) the (batch, head) pairs")
        return (out.tensor.reshape(*batch, n_q, d_v).to(query.device),
                lse.tensor.reshape(*batch, n_q).to(query.device))

    return flash_forward
