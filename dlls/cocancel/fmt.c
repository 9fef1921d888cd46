/*
 * The NDR format-string reader of cocancel (platform-free; see fmt.h).
 *
 * Layouts follow Microsoft's published description of -Oicf format strings
 * ("Procedure Format String", "Parameter Descriptors" and the type format
 * pages of the MIDL reference) as emitted by both MIDL and widl.
 */

#include <string.h>

#include "fmt.h"

/* Format characters used here. */
enum
{
    FC_BYTE = 0x01, FC_CHAR, FC_SMALL, FC_USMALL, FC_WCHAR, FC_SHORT, FC_USHORT,
    FC_LONG, FC_ULONG, FC_FLOAT, FC_HYPER, FC_DOUBLE, FC_ENUM16, FC_ENUM32,
    FC_IGNORE, FC_ERROR_STATUS_T,
    FC_RP = 0x11, FC_UP, FC_OP, FC_FP,
    FC_STRUCT = 0x15, FC_PSTRUCT, FC_CSTRUCT, FC_CPSTRUCT, FC_CVSTRUCT, FC_BOGUS_STRUCT,
    FC_CARRAY = 0x1b, FC_CVARRAY, FC_SMFARRAY, FC_LGFARRAY, FC_SMVARRAY, FC_LGVARRAY, FC_BOGUS_ARRAY,
    FC_C_CSTRING = 0x22, FC_C_WSTRING = 0x25, FC_CSTRING = 0x26, FC_WSTRING = 0x29,
    FC_IP = 0x2f,
    FC_BIND_CONTEXT = 0x30, FC_BIND_GENERIC, FC_BIND_PRIMITIVE,
    FC_STRING_SIZED = 0x44,
    FC_DEREFERENCE = 0x54,
    FC_USER_MARSHAL = 0xb4,
    FC_RANGE = 0xb7,
    FC_INT3264 = 0xb8, FC_UINT3264,
};

#define FC_SIMPLE_POINTER 0x08
#define FC_TOP_LEVEL_CONFORMANCE 0x20
#define FC_CONSTANT_CONFORMANCE 0x40

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

unsigned int cc_fmt_basetype_size(uint8_t fc, unsigned int ptr_size)
{
    switch (fc)
    {
    case FC_BYTE: case FC_CHAR: case FC_SMALL: case FC_USMALL:
        return 1;
    case FC_WCHAR: case FC_SHORT: case FC_USHORT:
        return 2;
    case FC_LONG: case FC_ULONG: case FC_FLOAT: case FC_ENUM16: case FC_ENUM32: case FC_ERROR_STATUS_T:
        return 4;
    case FC_HYPER: case FC_DOUBLE:
        return 8;
    case FC_INT3264: case FC_UINT3264:
        return ptr_size;
    default:
        return 0;
    }
}

enum cc_fmt_status cc_fmt_read_proc(const uint8_t *fmt, size_t len, unsigned int ptr_size,
                                    struct cc_fmt_proc *proc)
{
    size_t pos = 0;
    unsigned int i;

    memset(proc, 0, sizeof(*proc));
    if (ptr_size != 4 && ptr_size != 8) return CC_FMT_UNSUPPORTED;
    if (len < 2) return CC_FMT_TRUNCATED;
    proc->handle_type = fmt[0];
    proc->oi_flags = fmt[1];
    pos = 2;
    if (proc->oi_flags & CC_OI_HAS_RPCFLAGS) pos += 4;
    if (len < pos + 4) return CC_FMT_TRUNCATED;
    proc->proc_num = get16(fmt + pos);
    proc->stack_size = get16(fmt + pos + 2);
    pos += 4;
    /* COM methods carry their object as the first argument, never a binding handle. */
    if (!(proc->oi_flags & CC_OI_OBJECT_PROC) || !proc->handle_type) return CC_FMT_UNSUPPORTED;

    /* Oif header: client and server buffer hints, Oi2 flags, parameter count. */
    if (len < pos + 6) return CC_FMT_TRUNCATED;
    proc->oi2_flags = fmt[pos + 4];
    proc->param_count = fmt[pos + 5];
    pos += 6;
    if (proc->oi2_flags & CC_OI2_HAS_EXTENSIONS)
    {
        uint8_t size;

        if (len < pos + 1) return CC_FMT_TRUNCATED;
        size = fmt[pos];
        if (size < 8) return CC_FMT_UNSUPPORTED;
        if (len < pos + size) return CC_FMT_TRUNCATED;
        /* x86_64 adds a mask of floating-point register arguments. */
        if (ptr_size == 8 && size >= 10) proc->float_mask = get16(fmt + pos + 8);
        pos += size;
    }
    if (proc->oi2_flags & (CC_OI2_HAS_PIPES | CC_OI2_HAS_ASYNC_HANDLE)) return CC_FMT_UNSUPPORTED;
    if (proc->param_count > CC_FMT_MAX_PARAMS) return CC_FMT_UNSUPPORTED;
    if (len < pos + 6 * (size_t)proc->param_count) return CC_FMT_TRUNCATED;

    for (i = 0; i < proc->param_count; i++, pos += 6)
    {
        struct cc_fmt_param *param = &proc->params[i];

        param->attr = get16(fmt + pos);
        param->stack_offset = get16(fmt + pos + 2);
        param->type = (param->attr & CC_PARAM_IS_BASETYPE) ? fmt[pos + 4] : get16(fmt + pos + 4);
        if (param->attr & CC_PARAM_IS_PIPE) return CC_FMT_UNSUPPORTED;
        /* The object pointer occupies the first slot of the frame. */
        if (param->stack_offset < ptr_size || param->stack_offset >= proc->stack_size) return CC_FMT_UNSUPPORTED;
        if ((param->attr & CC_PARAM_IS_BASETYPE) && !cc_fmt_basetype_size((uint8_t)param->type, ptr_size))
            return CC_FMT_UNSUPPORTED;
        if (i && param->stack_offset <= proc->params[i - 1].stack_offset) return CC_FMT_UNSUPPORTED;
    }
    proc->length = pos;
    return CC_FMT_OK;
}

/* Number of elements given by a conformance descriptor of a top-level array. */
static enum cc_fmt_status read_conformance(const uint8_t *desc, size_t avail, unsigned int ptr_size,
                                           cc_fmt_arg_reader reader, void *ctx, uint64_t *count)
{
    uint8_t kind, basetype, op;
    uint64_t value;

    if (avail < 4) return CC_FMT_TRUNCATED;
    kind = desc[0] & 0xf0;
    basetype = desc[0] & 0x0f;
    op = desc[1];
    if (kind == FC_CONSTANT_CONFORMANCE)
    {
        *count = (uint32_t)desc[1] << 16 | get16(desc + 2);
        return CC_FMT_OK;
    }
    if (kind != FC_TOP_LEVEL_CONFORMANCE || !reader) return CC_FMT_UNSUPPORTED;
    if (op && op != FC_DEREFERENCE) return CC_FMT_UNSUPPORTED;
    if (!cc_fmt_basetype_size(basetype, ptr_size) || basetype == FC_FLOAT || basetype == FC_DOUBLE)
        return CC_FMT_UNSUPPORTED;
    if (!reader(ctx, get16(desc + 2), basetype, op == FC_DEREFERENCE, &value)) return CC_FMT_UNSUPPORTED;
    *count = value;
    return CC_FMT_OK;
}

/* Memory size of the type at types[offset], as a pointee. */
static enum cc_fmt_status type_size(const uint8_t *types, size_t len, size_t offset, unsigned int ptr_size,
                                    cc_fmt_arg_reader reader, void *ctx, unsigned int depth, uint64_t *size)
{
    const uint8_t *t;
    size_t avail;
    uint64_t count;
    enum cc_fmt_status status;

    if (depth > 4) return CC_FMT_UNSUPPORTED;
    if (offset >= len) return CC_FMT_TRUNCATED;
    t = types + offset;
    avail = len - offset;

    if ((*size = cc_fmt_basetype_size(t[0], ptr_size))) return CC_FMT_OK;
    switch (t[0])
    {
    case FC_RP: case FC_UP: case FC_OP: case FC_FP: case FC_IP:
        *size = ptr_size;
        return CC_FMT_OK;
    case FC_STRUCT: case FC_PSTRUCT: case FC_SMFARRAY: case FC_SMVARRAY: case FC_CSTRING:
        if (avail < 4) return CC_FMT_TRUNCATED;
        *size = get16(t + 2);
        return CC_FMT_OK;
    case FC_WSTRING:
        if (avail < 4) return CC_FMT_TRUNCATED;
        *size = (uint64_t)get16(t + 2) * 2;
        return CC_FMT_OK;
    case FC_BOGUS_STRUCT:
        if (avail < 6) return CC_FMT_TRUNCATED;
        if (get16(t + 4)) return CC_FMT_UNSUPPORTED;   /* a conformant tail */
        *size = get16(t + 2);
        return CC_FMT_OK;
    case FC_LGFARRAY: case FC_LGVARRAY:
        if (avail < 6) return CC_FMT_TRUNCATED;
        *size = get32(t + 2);
        return CC_FMT_OK;
    case FC_USER_MARSHAL:
        if (avail < 6) return CC_FMT_TRUNCATED;
        *size = get16(t + 4);
        return CC_FMT_OK;
    case FC_RANGE:
        if (avail < 2) return CC_FMT_TRUNCATED;
        if (!(*size = cc_fmt_basetype_size(t[1] & 0x0f, ptr_size))) return CC_FMT_UNSUPPORTED;
        return CC_FMT_OK;
    case FC_CARRAY: case FC_CVARRAY:
        if (avail < 4) return CC_FMT_TRUNCATED;
        if ((status = read_conformance(t + 4, avail - 4, ptr_size, reader, ctx, &count))) return status;
        *size = count * get16(t + 2);
        return CC_FMT_OK;
    case FC_C_CSTRING: case FC_C_WSTRING:
        if (avail < 2) return CC_FMT_TRUNCATED;
        if (t[1] != FC_STRING_SIZED) return CC_FMT_UNSUPPORTED;
        if ((status = read_conformance(t + 2, avail - 2, ptr_size, reader, ctx, &count))) return status;
        *size = count * (t[0] == FC_C_WSTRING ? 2 : 1);
        return CC_FMT_OK;
    default:
        return CC_FMT_UNSUPPORTED;
    }
}

enum cc_fmt_status cc_fmt_out_size(const struct cc_fmt_param *param, const uint8_t *types, size_t types_len,
                                   unsigned int ptr_size, cc_fmt_arg_reader reader, void *ctx,
                                   uint64_t *size)
{
    const uint8_t *t;

    *size = 0;
    if (!(param->attr & CC_PARAM_IS_OUT) || (param->attr & CC_PARAM_IS_RETURN)) return CC_FMT_UNSUPPORTED;
    if (param->attr & CC_PARAM_IS_BASETYPE)
    {
        /* An [out] base type always travels by reference. */
        if (!(param->attr & CC_PARAM_IS_SIMPLE_REF)) return CC_FMT_UNSUPPORTED;
        *size = cc_fmt_basetype_size((uint8_t)param->type, ptr_size);
        return *size ? CC_FMT_OK : CC_FMT_UNSUPPORTED;
    }
    if (param->attr & CC_PARAM_IS_BY_VALUE) return CC_FMT_UNSUPPORTED;
    /* A simple reference names the pointee type directly. */
    if (param->attr & CC_PARAM_IS_SIMPLE_REF)
        return type_size(types, types_len, param->type, ptr_size, reader, ctx, 0, size);

    if (param->type >= types_len) return CC_FMT_TRUNCATED;
    if (types_len - param->type < 4) return CC_FMT_TRUNCATED;
    t = types + param->type;
    /* Anything but a reference pointer describes the pointee itself (an
     * array, or the pointer an [out] T ** receives). */
    if (t[0] != FC_RP) return type_size(types, types_len, param->type, ptr_size, reader, ctx, 0, size);
    if (t[1] & FC_SIMPLE_POINTER)
    {
        *size = cc_fmt_basetype_size(t[2], ptr_size);
        return *size ? CC_FMT_OK : CC_FMT_UNSUPPORTED;
    }
    {
        /* The pointee offset is relative to where it is stored. */
        int64_t target = (int64_t)param->type + 2 + (int16_t)get16(t + 2);

        if (target < 0 || (uint64_t)target >= types_len) return CC_FMT_TRUNCATED;
        return type_size(types, types_len, (size_t)target, ptr_size, reader, ctx, 1, size);
    }
}

static int is_float(const struct cc_fmt_param *param)
{
    return (param->attr & CC_PARAM_IS_BASETYPE) && !(param->attr & CC_PARAM_IS_SIMPLE_REF) &&
           (param->type == FC_FLOAT || param->type == FC_DOUBLE);
}

/* Do a parameter of the synchronous method and its async counterpart agree? */
static int same_kind(const struct cc_fmt_param *a, const struct cc_fmt_param *b)
{
    uint16_t mask = CC_PARAM_IS_BASETYPE | CC_PARAM_IS_BY_VALUE;

    if ((a->attr & mask) != (b->attr & mask)) return 0;
    if ((a->attr & CC_PARAM_IS_BASETYPE) && a->type != b->type) return 0;
    return is_float(a) == is_float(b);
}

enum cc_fmt_status cc_fmt_split_async(const struct cc_fmt_proc *sync, const struct cc_fmt_proc *begin,
                                      const struct cc_fmt_proc *finish, struct cc_fmt_split *split)
{
    unsigned int i, b = 0, f = 0;

    memset(split, 0, sizeof(*split));
    /* All three return an HRESULT (the last parameter, FC_LONG). */
    if (!(sync->oi2_flags & CC_OI2_HAS_RETURN) || !(begin->oi2_flags & CC_OI2_HAS_RETURN) ||
        !(finish->oi2_flags & CC_OI2_HAS_RETURN))
        return CC_FMT_MISMATCH;
    if (!sync->param_count || !begin->param_count || !finish->param_count) return CC_FMT_MISMATCH;
    if (!(sync->params[sync->param_count - 1].attr & CC_PARAM_IS_RETURN) ||
        !(begin->params[begin->param_count - 1].attr & CC_PARAM_IS_RETURN) ||
        !(finish->params[finish->param_count - 1].attr & CC_PARAM_IS_RETURN))
        return CC_FMT_MISMATCH;

    for (i = 0; i + 1 < sync->param_count; i++)
    {
        const struct cc_fmt_param *param = &sync->params[i];

        if (param->attr & CC_PARAM_IS_RETURN) return CC_FMT_MISMATCH;
        split->index[split->count] = (uint8_t)i;
        split->begin_offset[split->count] = CC_FMT_NONE;
        split->finish_offset[split->count] = CC_FMT_NONE;
        if (param->attr & CC_PARAM_IS_IN)
        {
            const struct cc_fmt_param *other = &begin->params[b];

            if (b + 1 >= begin->param_count || !(other->attr & CC_PARAM_IS_IN) || (other->attr & CC_PARAM_IS_OUT))
                return CC_FMT_MISMATCH;
            /* [in,out] becomes a pointer [in] on Begin_: the kinds agree except by value. */
            if (!(param->attr & CC_PARAM_IS_OUT) && !same_kind(param, other)) return CC_FMT_MISMATCH;
            split->begin_offset[split->count] = other->stack_offset;
            b++;
        }
        if (param->attr & CC_PARAM_IS_OUT)
        {
            const struct cc_fmt_param *other = &finish->params[f];

            if (f + 1 >= finish->param_count || !(other->attr & CC_PARAM_IS_OUT) || (other->attr & CC_PARAM_IS_IN))
                return CC_FMT_MISMATCH;
            if (!(param->attr & CC_PARAM_IS_IN) && !same_kind(param, other)) return CC_FMT_MISMATCH;
            split->finish_offset[split->count] = other->stack_offset;
            f++;
        }
        if (!(param->attr & (CC_PARAM_IS_IN | CC_PARAM_IS_OUT))) return CC_FMT_MISMATCH;
        split->count++;
    }
    if (b + 1 != begin->param_count || f + 1 != finish->param_count) return CC_FMT_MISMATCH;
    return CC_FMT_OK;
}
