"""The GEMM epilogues applied in a micro-kernel's vector registers: a tile's int32 sums go straight to the output.

A micro-kernel (``vnni.py``) ends with ``rows x halves`` vectors of ``lanes`` int32 sums, row r and columns
c = col0 + lanes * h + i. Instead of storing them as accumulators for a second pass, ``emit`` applies the
epilogue record's formula to them lane by lane and stores the result, for rows r < nrows and columns
c < out.shape[1] (masked loads and stores at a panel's ragged end; out's columns contiguous)::

    raw = sum - zc[c]                                          (int32, wrapping: zc = z_a * col_offsets wrapped)
    RequantEpilogue  out[orow + r, c] = gemm.requant_epilogue(raw, bias_term[c], mult[c], out_zp, lo)   uint8
    DynamicEpilogue  out[orow + r, c] = gemm.dynamic_epilogue(raw, mult[c], bias[c], relu)              float32

with the scalar functions' operations in their order: requant = float32 convert, add, multiply (two roundings,
not fused), round half to even, an outside-int32 or NaN value -> lo, else clamp to int16, add out_zp, clamp to
[lo, 255]; dynamic = one ``llvm.fma`` (one rounding), then max(0, y) for a fused ReLU (a NaN stays NaN). The
int32 difference has the int64 difference's residue, so raw is the same wrapped value as the scalar path's.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils


def kind(ep) -> str:
    """'requant' or 'dynamic' for a Requant / Dynamic epilogue record type (``gemm``), else a TypeError."""
    from .gemm import DynamicEpilogue, RequantEpilogue          # gemm imports the kernels that import this
    cls = getattr(ep, "instance_class", None)
    if cls is RequantEpilogue:
        return "requant"
    if cls is DynamicEpilogue:
        return "dynamic"
    raise TypeError(f"register store: no vector epilogue for {ep}; expected a RequantEpilogue or DynamicEpilogue")


def check(ep, zc, out) -> None:
    """TypeError unless zc is int32 1-D and out 2-D of the epilogue's output dtype (uint8 / float32)."""
    want = types.uint8 if kind(ep) == "requant" else types.float32
    if getattr(zc, "dtype", None) != types.int32 or getattr(out, "dtype", None) != want or out.ndim != 2:
        raise TypeError(f"register store: zc must be int32 and out {want} 2-D for {ep.instance_class.__name__}, "
                        f"got {zc}, {out}")


def emit(context, builder, arg_types, values, sums, col0, lanes: int) -> None:
    """Store ``sums`` (rows of ``halves`` <lanes x i32> vectors) through the epilogue (module docstring).
    arg_types / values: (zc, ep, out, orow, nrows); col0: the tile's first column, i64."""
    zc_t, ep_t, out_t = arg_types[:3]
    zc_v, ep_v, out_v, orow_v, nrows_v = values
    i1, i8, i32, i64, f32 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
    vi, vf, vb = ir.VectorType(i32, lanes), ir.VectorType(f32, lanes), ir.VectorType(i8, lanes)
    vmask, vl = ir.VectorType(i1, lanes), ir.VectorType(i64, lanes)
    wide = lambda v: builder.sext(v, i64) if v.type.width < 64 else v       # noqa: E731
    lane_index = ir.Constant(vi, [0] * lanes)

    def splat(vec_t, v):
        lane0 = builder.insert_element(ir.Constant(vec_t, None), v, ir.Constant(i32, 0))
        return builder.shuffle_vector(lane0, ir.Constant(vec_t, None), lane_index)

    def field(i):
        return builder.extract_value(ep_v, i)

    def array(t, v):
        return context.make_array(t)(context, builder, v)

    def masked_load(arr, c0, vec_t, mask):
        name = f"llvm.masked.load.v{lanes}{'i32' if vec_t is vi else 'f32'}.p0"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec_t, [vec_t.as_pointer(), i32, vmask, vec_t]), name)
        ptr = builder.bitcast(builder.gep(arr.data, [c0]), vec_t.as_pointer())
        return builder.call(fn, [ptr, ir.Constant(i32, 4), mask, ir.Constant(vec_t, None)])

    def store(value, byte_ptr, full, mask):
        """A plain vector store when every lane is in range, else a masked one."""
        ptr = builder.bitcast(byte_ptr, value.type.as_pointer())
        with builder.if_else(full, likely=True) as (whole, ragged):
            with whole:
                builder.store(value, ptr, align=1)
            with ragged:
                name = f"llvm.masked.store.v{lanes}{'i8' if value.type is vb else 'f32'}.p0"
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [value.type, value.type.as_pointer(), i32, vmask]),
                    name)
                builder.call(fn, [value, ptr, ir.Constant(i32, 1), mask])

    requant = kind(ep_t) == "requant"
    ZC, O = array(zc_t, zc_v), array(out_t, out_v)
    ncols, ldo = builder.extract_value(O.shape, 1), builder.extract_value(O.strides, 0)
    itemsize = 1 if requant else 4
    orow, nrows = wide(orow_v), wide(nrows_v)
    base = builder.bitcast(O.data, ir.PointerType(i8))
    if requant:
        BT, MU = array(ep_t[0], field(0)), array(ep_t[1], field(1))
        zp, lo = splat(vi, builder.trunc(wide(field(2)), i32)), splat(vi, builder.trunc(wide(field(3)), i32))
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf]), f"llvm.rint.v{lanes}f32")
        fc = lambda v: ir.Constant(vf, [v] * lanes)                          # noqa: E731
        top = ir.Constant(vi, [255] * lanes)
    else:
        MU, BI = array(ep_t[0], field(0)), array(ep_t[1], field(1))
        relu = context.cast(builder, field(2), ep_t[2], types.boolean)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fma.v{lanes}f32")
        zero = ir.Constant(vf, [0.0] * lanes)
    iota = ir.Constant(vl, list(range(lanes)))
    for h in range(len(sums[0])):
        c0 = builder.add(col0, ir.Constant(i64, lanes * h))
        mask = builder.icmp_signed("<", builder.add(iota, splat(vl, c0)), splat(vl, ncols))
        full = builder.icmp_signed("<=", builder.add(c0, ir.Constant(i64, lanes)), ncols)
        zc = masked_load(ZC, c0, vi, mask)
        if requant:
            bias_term, mult = masked_load(BT, c0, vf, mask), masked_load(MU, c0, vf, mask)
        else:
            mult, bias = masked_load(MU, c0, vf, mask), masked_load(BI, c0, vf, mask)
        for r, row in enumerate(sums):
            with cgutils.if_likely(builder, builder.icmp_signed("<", ir.Constant(i64, r), nrows)):
                x = builder.sitofp(builder.sub(row[h], zc), vf)
                if requant:
                    x = builder.call(rint, [builder.fmul(builder.fadd(x, bias_term), mult)])
                    ok = builder.and_(builder.fcmp_ordered(">=", x, fc(-2147483648.0)),
                                      builder.fcmp_ordered("<", x, fc(2147483648.0)))
                    x = builder.select(builder.fcmp_ordered(">", x, fc(-32768.0)), x, fc(-32768.0))
                    x = builder.select(builder.fcmp_ordered("<", x, fc(32767.0)), x, fc(32767.0))
                    q = builder.add(builder.fptosi(x, vi), zp)
                    q = builder.select(builder.icmp_signed(">", q, lo), q, lo)
                    q = builder.select(builder.icmp_signed("<", q, top), q, top)
                    value = builder.trunc(builder.select(ok, q, lo), vb)
                else:
                    y = builder.call(fma, [x, mult, bias])
                    negative = builder.and_(builder.fcmp_ordered("<", y, zero), splat(vmask, relu))
                    value = builder.select(negative, zero, y)
                offset = builder.add(builder.mul(builder.add(orow, ir.Constant(i64, r)), ldo),
                                     builder.mul(c0, ir.Constant(i64, itemsize)))
                store(value, builder.gep(base, [offset]), full, mask)
