/*
 * Host unit tests of the NDR format-string reader (dlls/cocancel/fmt.c),
 * on widl's -Oicf output for the conformance test's interfaces, in both the
 * x86_64 and the i386 layout, and on hand-made and truncated tables.
 * Built with -fsanitize=address,undefined by "make check".
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fmt.h"

#include "formats64.h"
#include "formats32.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

struct layout
{
    unsigned int ptr_size;
    const unsigned char *procs;
    size_t procs_len;
    const unsigned char *types;
    size_t types_len;
    const unsigned short *sync;
    const unsigned short *async;
};

static const struct layout x86_64 =
{
    8, w64_procs, sizeof(w64_procs), w64_types, sizeof(w64_types),
    w64_ICcAsyncTest_offsets, w64_AsyncICcAsyncTest_offsets,
};

static const struct layout i386 =
{
    4, w32_procs, sizeof(w32_procs), w32_types, sizeof(w32_types),
    w32_ICcAsyncTest_offsets, w32_AsyncICcAsyncTest_offsets,
};

/* Methods of ICcAsyncTest, in vtable order from slot 3. */
enum { ADD, SLOW, MIX, STRUCT, ARRAY, STR, IFACE, MANY, SWAP, FAIL, METHODS };

static void read_method(const struct layout *l, unsigned int k, struct cc_fmt_proc *sync,
                        struct cc_fmt_proc *begin, struct cc_fmt_proc *finish, struct cc_fmt_split *split)
{
    assert_int_equal(cc_fmt_read_proc(l->procs + l->sync[k], l->procs_len - l->sync[k], l->ptr_size, sync),
                     CC_FMT_OK);
    assert_int_equal(cc_fmt_read_proc(l->procs + l->async[2 * k], l->procs_len - l->async[2 * k], l->ptr_size,
                                      begin), CC_FMT_OK);
    assert_int_equal(cc_fmt_read_proc(l->procs + l->async[2 * k + 1], l->procs_len - l->async[2 * k + 1],
                                      l->ptr_size, finish), CC_FMT_OK);
    assert_int_equal(cc_fmt_split_async(sync, begin, finish, split), CC_FMT_OK);
}

/* Size of what the n-th synchronous parameter points to. */
static uint64_t out_size(const struct layout *l, const struct cc_fmt_proc *sync, unsigned int n)
{
    uint64_t size = 0;

    assert_int_equal(cc_fmt_out_size(&sync->params[n], l->types, l->types_len, l->ptr_size, NULL, NULL, &size),
                     CC_FMT_OK);
    return size;
}

static void check_headers(const struct layout *l)
{
    struct cc_fmt_proc sync, begin, finish;
    struct cc_fmt_split split;
    unsigned int k;

    for (k = 0; k < METHODS; k++)
    {
        read_method(l, k, &sync, &begin, &finish, &split);
        assert_int_equal(sync.proc_num, 3 + k);
        assert_int_equal(begin.proc_num, 3 + 2 * k);
        assert_int_equal(finish.proc_num, 4 + 2 * k);
        assert_true(sync.oi_flags & CC_OI_OBJECT_PROC);
        assert_true(sync.oi2_flags & CC_OI2_HAS_RETURN);
        /* The return value's slot closes every frame. */
        assert_int_equal(sync.params[sync.param_count - 1].stack_offset, sync.stack_size - l->ptr_size);
        assert_int_equal(split.count, sync.param_count - 1);
    }
}

static void test_headers_x86_64(void **state)
{
    (void)state;
    check_headers(&x86_64);
}

static void test_headers_i386(void **state)
{
    (void)state;
    check_headers(&i386);
}

/* Begin_ carries [in] and [in,out], Finish_ [out] and [in,out], at their own stack offsets. */
static void check_split(const struct layout *l)
{
    unsigned int p = l->ptr_size;
    struct cc_fmt_proc sync, begin, finish;
    struct cc_fmt_split split;

    read_method(l, ADD, &sync, &begin, &finish, &split);
    assert_int_equal(split.count, 3);
    assert_int_equal(split.begin_offset[0], p);
    assert_int_equal(split.begin_offset[1], 2 * p);
    assert_int_equal(split.begin_offset[2], CC_FMT_NONE);
    assert_int_equal(split.finish_offset[0], CC_FMT_NONE);
    assert_int_equal(split.finish_offset[2], p);
    assert_int_equal(out_size(l, &sync, 2), 4);

    /* Mix(double d, float f, BSTR s, [in,out] int *io, [out] BSTR *out, [out] double *dout) */
    read_method(l, MIX, &sync, &begin, &finish, &split);
    assert_int_equal(split.count, 6);
    assert_int_equal(split.begin_offset[3], begin.params[3].stack_offset);
    assert_int_equal(split.finish_offset[3], finish.params[0].stack_offset);
    assert_int_equal(split.finish_offset[4], finish.params[1].stack_offset);
    assert_int_equal(out_size(l, &sync, 3), 4);
    assert_int_equal(out_size(l, &sync, 4), p);      /* a BSTR */
    assert_int_equal(out_size(l, &sync, 5), 8);
    if (p == 8)
    {
        /* The doubles and floats among the first four register arguments are flagged. */
        assert_int_not_equal(sync.float_mask, 0);
        assert_int_equal(sync.params[0].stack_offset, 8);
    }
    else
    {
        /* i386: a double takes two slots. */
        assert_int_equal(sync.params[1].stack_offset, 12);
        assert_int_equal(sync.float_mask, 0);
    }

    read_method(l, STRUCT, &sync, &begin, &finish, &split);
    assert_int_equal(out_size(l, &sync, 1), 24);     /* int, double, short */
    read_method(l, ARRAY, &sync, &begin, &finish, &split);
    assert_int_equal(out_size(l, &sync, 2), 16);     /* int[4] */
    assert_int_equal(out_size(l, &sync, 3), 4);
    read_method(l, STR, &sync, &begin, &finish, &split);
    assert_int_equal(out_size(l, &sync, 2), p);
    read_method(l, IFACE, &sync, &begin, &finish, &split);
    assert_int_equal(out_size(l, &sync, 1), p);      /* an interface pointer */
    read_method(l, SWAP, &sync, &begin, &finish, &split);
    assert_int_not_equal(split.begin_offset[0], CC_FMT_NONE);
    assert_int_not_equal(split.finish_offset[0], CC_FMT_NONE);
    assert_int_equal(out_size(l, &sync, 0), p);
    assert_int_equal(out_size(l, &sync, 1), 24);

    /* Many: nine [in] values and one [out], the frame past eight slots. */
    read_method(l, MANY, &sync, &begin, &finish, &split);
    assert_int_equal(split.count, 10);
    assert_int_equal(split.finish_offset[9], p);
    assert_int_equal(out_size(l, &sync, 9), 8);
    if (p == 8) assert_int_equal(sync.params[8].stack_offset, 72);
    else assert_int_equal(sync.params[8].stack_offset, 4 + 4 + 8 + 4 + 4 + 4 + 8 + 4 + 8);
}

static void test_split_x86_64(void **state)
{
    (void)state;
    check_split(&x86_64);
}

static void test_split_i386(void **state)
{
    (void)state;
    check_split(&i386);
}

/* Every prefix of a procedure description is refused, and nothing is read past it. */
static void check_truncation(const struct layout *l)
{
    struct cc_fmt_proc proc;
    unsigned int k;
    size_t len;

    for (k = 0; k < METHODS; k++)
    {
        const unsigned char *start = l->procs + l->sync[k];

        assert_int_equal(cc_fmt_read_proc(start, l->procs_len - l->sync[k], l->ptr_size, &proc), CC_FMT_OK);
        for (len = 0; len < proc.length; len++)
        {
            unsigned char copy[512];
            struct cc_fmt_proc cut;

            memcpy(copy, start, len);
            assert_int_not_equal(cc_fmt_read_proc(copy, len, l->ptr_size, &cut), CC_FMT_OK);
        }
    }
}

static void test_truncated(void **state)
{
    (void)state;
    check_truncation(&x86_64);
    check_truncation(&i386);
}

static int reader_calls, reader_deref;

static int read_count(void *ctx, uint16_t offset, uint8_t basetype, int deref, uint64_t *value)
{
    (void)ctx;
    reader_calls++;
    reader_deref = deref;
    if (offset != 8 || basetype != 0x08) return 0;
    *value = 5;
    return 1;
}

static int read_count_18(void *ctx, uint16_t offset, uint8_t basetype, int deref, uint64_t *value)
{
    (void)ctx;
    if (offset != 0x18 || basetype != 0x08 || deref) return 0;
    *value = 7;
    return 1;
}

/* [out, size_is(n)] arrays: the count comes from the named argument. */
static void test_conformant_out(void **state)
{
    static const uint8_t types[] =
    {
        0x1b, 0x03, 0x04, 0x00, 0x28, 0x00, 0x08, 0x00, 0x08, 0x5b,    /* FC_CARRAY of 4-byte, size_is(arg at 8) */
        0x1b, 0x03, 0x02, 0x00, 0x28, 0x54, 0x08, 0x00, 0x06, 0x5b,    /* ... dereferenced, 2-byte elements */
        0x1b, 0x03, 0x04, 0x00, 0x28, 0x00, 0x10, 0x00, 0x08, 0x5b,    /* ... an argument the reader refuses */
        0x1b, 0x03, 0x04, 0x00, 0x40, 0x00, 0x03, 0x00, 0x08, 0x5b,    /* ... a constant count of 3 */
    };
    struct cc_fmt_param param = { CC_PARAM_IS_OUT | CC_PARAM_MUST_FREE, 16, 0 };
    uint64_t size = 0;

    (void)state;
    assert_int_equal(cc_fmt_out_size(&param, types, sizeof(types), 8, read_count, NULL, &size), CC_FMT_OK);
    assert_int_equal(size, 20);
    assert_int_equal(reader_deref, 0);
    param.type = 10;
    assert_int_equal(cc_fmt_out_size(&param, types, sizeof(types), 8, read_count, NULL, &size), CC_FMT_OK);
    assert_int_equal(size, 10);
    assert_int_equal(reader_deref, 1);
    param.type = 20;
    assert_int_equal(cc_fmt_out_size(&param, types, sizeof(types), 8, read_count, NULL, &size),
                     CC_FMT_UNSUPPORTED);
    param.type = 30;
    assert_int_equal(cc_fmt_out_size(&param, types, sizeof(types), 8, NULL, NULL, &size), CC_FMT_OK);
    assert_int_equal(size, 12);
    /* Without a reader a variable size cannot be known. */
    param.type = 0;
    assert_int_equal(cc_fmt_out_size(&param, types, sizeof(types), 8, NULL, NULL, &size), CC_FMT_UNSUPPORTED);
    /* Offsets past the end. */
    param.type = sizeof(types);
    assert_int_not_equal(cc_fmt_out_size(&param, types, sizeof(types), 8, read_count, NULL, &size), CC_FMT_OK);
    /* A reference pointer whose target lies outside the string. */
    {
        static const uint8_t bad[] = { 0x11, 0x00, 0x00, 0x80 };

        param.type = 0;
        assert_int_not_equal(cc_fmt_out_size(&param, bad, sizeof(bad), 8, NULL, NULL, &size), CC_FMT_OK);
    }
    /* An [in] parameter has no [out] size. */
    param.attr = CC_PARAM_IS_IN;
    assert_int_equal(cc_fmt_out_size(&param, types, sizeof(types), 8, NULL, NULL, &size), CC_FMT_UNSUPPORTED);
}

/* Tables that do not split: wrong parameter counts, kinds and missing return values. */
static void test_split_mismatch(void **state)
{
    struct cc_fmt_proc sync, begin, finish, other;
    struct cc_fmt_split split;

    (void)state;
    read_method(&x86_64, ADD, &sync, &begin, &finish, &split);
    /* Begin_ of another method. */
    assert_int_equal(cc_fmt_read_proc(w64_procs + w64_AsyncICcAsyncTest_offsets[2 * MIX],
                                      sizeof(w64_procs) - w64_AsyncICcAsyncTest_offsets[2 * MIX], 8, &other),
                     CC_FMT_OK);
    assert_int_equal(cc_fmt_split_async(&sync, &other, &finish, &split), CC_FMT_MISMATCH);
    /* Begin_ and Finish_ swapped. */
    assert_int_equal(cc_fmt_split_async(&sync, &finish, &begin, &split), CC_FMT_MISMATCH);
    /* No return value. */
    other = sync;
    other.oi2_flags &= ~CC_OI2_HAS_RETURN;
    assert_int_equal(cc_fmt_split_async(&other, &begin, &finish, &split), CC_FMT_MISMATCH);
    /* A base type that changed. */
    other = begin;
    other.params[0].type = 0x0c;
    assert_int_equal(cc_fmt_split_async(&sync, &other, &finish, &split), CC_FMT_MISMATCH);
}

/* Headers the engine does not handle are refused, not misread. */
static void test_unsupported(void **state)
{
    struct cc_fmt_proc proc;
    uint8_t copy[64];
    size_t len;

    (void)state;
    assert_int_equal(cc_fmt_read_proc(w64_procs, sizeof(w64_procs), 8, &proc), CC_FMT_OK);
    len = proc.length;
    memcpy(copy, w64_procs, len);
    /* Not an object method. */
    copy[1] &= ~CC_OI_OBJECT_PROC;
    assert_int_equal(cc_fmt_read_proc(copy, len, 8, &proc), CC_FMT_UNSUPPORTED);
    memcpy(copy, w64_procs, len);
    /* Pipes. */
    copy[14] |= CC_OI2_HAS_PIPES;
    assert_int_equal(cc_fmt_read_proc(copy, len, 8, &proc), CC_FMT_UNSUPPORTED);
    /* A parameter outside the frame. */
    memcpy(copy, w64_procs, len);
    copy[len - 6 * 4 + 2] = 0xf0;
    assert_int_equal(cc_fmt_read_proc(copy, len, 8, &proc), CC_FMT_UNSUPPORTED);
    /* A pointer size that is neither. */
    assert_int_equal(cc_fmt_read_proc(w64_procs, sizeof(w64_procs), 2, &proc), CC_FMT_UNSUPPORTED);
}

/*
 * Layout details of Microsoft MIDL's /Oicf output that widl does not
 * produce for the test IDL: HasAsyncUuid in the Oi2 flags of a method of an
 * interface with an async_uuid, a ten-byte extension with the float mask on
 * x86_64, and six-byte (robust) correlation descriptors.  Written from the
 * published format description: HRESULT M([in] double d, [in] float f,
 * [in] long n, [out, size_is(n)] long *a).
 */
static void test_midl_layout(void **state)
{
    static const uint8_t proc[] =
    {
        0x33, 0x6c, 0x00, 0x00, 0x00, 0x00,     /* FC_AUTO_HANDLE, Oi flags, RPC flags */
        0x05, 0x00, 0x30, 0x00,                 /* method 5, stack size 48 */
        0x18, 0x00, 0x08, 0x00,                 /* client and server buffer hints */
        0x67, 0x05,                             /* Oi2: server/client must size, return, async uuid, extensions; 5 params */
        0x0a, 0x05, 0x00, 0x00, 0x01, 0x00,     /* extension: 10 bytes, new correlation descriptors, hints */
        0x00, 0x00, 0x06, 0x00,                 /* notify index, float mask: d double (2), f float (1) */
        0x48, 0x00, 0x08, 0x00, 0x0c, 0x00,     /* d: in, base type, FC_DOUBLE */
        0x48, 0x00, 0x10, 0x00, 0x0a, 0x00,     /* f: in, base type, FC_FLOAT */
        0x48, 0x00, 0x18, 0x00, 0x08, 0x00,     /* n: in, base type, FC_LONG */
        0x13, 0x20, 0x20, 0x00, 0x00, 0x00,     /* a: must size, must free, out, server alloc 8; type 0 */
        0x70, 0x00, 0x28, 0x00, 0x08, 0x00,     /* return value */
    };
    static const uint8_t types[] =
    {
        0x11, 0x00, 0x02, 0x00,                 /* FC_RP to the array below */
        0x1b, 0x03, 0x04, 0x00,                 /* FC_CARRAY of 4-byte elements */
        0x28, 0x00, 0x18, 0x00, 0x01, 0x00,     /* size_is(n): top level, FC_LONG, robust flags */
        0x08, 0x5b,
    };
    struct cc_fmt_proc parsed;
    uint64_t size = 0;

    (void)state;
    assert_int_equal(cc_fmt_read_proc(proc, sizeof(proc), 8, &parsed), CC_FMT_OK);
    assert_int_equal(parsed.proc_num, 5);
    assert_int_equal(parsed.param_count, 5);
    assert_true(parsed.oi2_flags & CC_OI2_HAS_ASYNC_UUID);
    assert_int_equal(parsed.float_mask, 0x06);
    assert_int_equal(parsed.length, sizeof(proc));
    assert_int_equal(parsed.params[3].stack_offset, 0x20);
    /* The count comes from n, the argument at offset 0x18. */
    assert_int_equal(cc_fmt_out_size(&parsed.params[3], types, sizeof(types), 8, read_count_18, NULL, &size),
                     CC_FMT_OK);
    assert_int_equal(size, 28);
}

int main(void)
{
    const struct CMUnitTest tests[] =
    {
        cmocka_unit_test(test_headers_x86_64),
        cmocka_unit_test(test_headers_i386),
        cmocka_unit_test(test_split_x86_64),
        cmocka_unit_test(test_split_i386),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_conformant_out),
        cmocka_unit_test(test_split_mismatch),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_midl_layout),
    };

    return cmocka_run_group_tests_name("format-string reader", tests, NULL, NULL);
}
