/*
 * The NDR format-string reader of cocancel (platform-free).
 *
 * The asynchronous call engine builds Begin_/Finish_ methods from the tables
 * a proxy DLL already carries: the -Oicf procedure format strings of the
 * synchronous method and of its Begin_ and Finish_ halves, and the type
 * format string.  This reader decodes exactly what the engine needs - the
 * procedure header, each parameter's attributes and stack offset, and the
 * memory size of what an [out] parameter points to - and refuses anything it
 * does not understand.  It reads only inside the bounds it is given, whatever
 * the bytes say, so a corrupt or hostile table gives an error, never a read
 * out of bounds (it is fuzzed on the host).
 *
 * Pointer size is a parameter: the same code reads x86_64 and i386 layouts.
 */

#ifndef COCANCEL_FMT_H
#define COCANCEL_FMT_H

#include <stddef.h>
#include <stdint.h>

enum cc_fmt_status
{
    CC_FMT_OK = 0,
    CC_FMT_TRUNCATED,       /* the bytes end before the structure does */
    CC_FMT_UNSUPPORTED,     /* well-formed, but not something the engine handles */
    CC_FMT_MISMATCH,        /* Begin_/Finish_ do not split the synchronous method */
};

/* Parameter attributes (PARAM_ATTRIBUTES in the public ndrtypes.h). */
#define CC_PARAM_MUST_SIZE    0x0001
#define CC_PARAM_MUST_FREE    0x0002
#define CC_PARAM_IS_PIPE      0x0004
#define CC_PARAM_IS_IN        0x0008
#define CC_PARAM_IS_OUT       0x0010
#define CC_PARAM_IS_RETURN    0x0020
#define CC_PARAM_IS_BASETYPE  0x0040
#define CC_PARAM_IS_BY_VALUE  0x0080
#define CC_PARAM_IS_SIMPLE_REF 0x0100

/* Oi2 flags of the -Oicf procedure header. */
#define CC_OI2_HAS_RETURN      0x04
#define CC_OI2_HAS_PIPES       0x08
#define CC_OI2_HAS_ASYNC_UUID  0x20
#define CC_OI2_HAS_EXTENSIONS  0x40
#define CC_OI2_HAS_ASYNC_HANDLE 0x80

/* Oi flags. */
#define CC_OI_HAS_RPCFLAGS   0x08
#define CC_OI_OBJECT_PROC    0x40

#define CC_FMT_MAX_PARAMS 64

struct cc_fmt_param
{
    uint16_t attr;
    uint16_t stack_offset;
    uint16_t type;          /* the base type (IsBasetype) or an offset into the type format string */
};

struct cc_fmt_proc
{
    uint8_t handle_type;
    uint8_t oi_flags;
    uint16_t proc_num;
    uint16_t stack_size;
    uint8_t oi2_flags;
    uint8_t param_count;
    uint16_t float_mask;    /* x86_64 extension: 2 bits per register argument, 1 float, 2 double */
    size_t length;          /* bytes of the procedure description, header and parameters */
    struct cc_fmt_param params[CC_FMT_MAX_PARAMS];
};

enum cc_fmt_status cc_fmt_read_proc(const uint8_t *fmt, size_t len, unsigned int ptr_size,
                                    struct cc_fmt_proc *proc);

/* Whether a parameter is a float or double passed by value (x86_64 passes those in xmm registers). */
static inline int cc_fmt_param_is_floating(const struct cc_fmt_param *param)
{
    return (param->attr & CC_PARAM_IS_BASETYPE) && !(param->attr & CC_PARAM_IS_SIMPLE_REF) &&
           (param->type == 0x0a /* FC_FLOAT */ || param->type == 0x0c /* FC_DOUBLE */);
}

/* Memory size of a base type (FC_BYTE .. FC_UINT3264), 0 if it is not one. */
unsigned int cc_fmt_basetype_size(uint8_t fc, unsigned int ptr_size);

/*
 * Where a parameter's size depends on another argument (size_is on a
 * top-level array), the reader asks for that argument: stack_offset is its
 * offset in the synchronous method's frame, deref says the argument is a
 * pointer to the count.  Returns 0 when the value cannot be read.
 */
typedef int (*cc_fmt_arg_reader)(void *ctx, uint16_t stack_offset, uint8_t basetype, int deref,
                                 uint64_t *value);

/* Bytes an [out] or [in,out] parameter points to (what Finish_ copies back). */
enum cc_fmt_status cc_fmt_out_size(const struct cc_fmt_param *param, const uint8_t *types, size_t types_len,
                                   unsigned int ptr_size, cc_fmt_arg_reader reader, void *ctx,
                                   uint64_t *size);

/*
 * How one synchronous method splits into Begin_ and Finish_: for each
 * synchronous parameter, its stack offset in the Begin_ frame (if it is
 * [in]) and in the Finish_ frame (if it is [out]).
 */
#define CC_FMT_NONE 0xffff

struct cc_fmt_split
{
    unsigned int count;             /* synchronous parameters, the return value excluded */
    uint16_t begin_offset[CC_FMT_MAX_PARAMS];
    uint16_t finish_offset[CC_FMT_MAX_PARAMS];
    uint8_t index[CC_FMT_MAX_PARAMS];   /* index of the parameter in sync->params */
};

enum cc_fmt_status cc_fmt_split_async(const struct cc_fmt_proc *sync, const struct cc_fmt_proc *begin,
                                      const struct cc_fmt_proc *finish, struct cc_fmt_split *split);

#endif /* COCANCEL_FMT_H */
