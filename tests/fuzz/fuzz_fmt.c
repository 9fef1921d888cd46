/*
 * libFuzzer target for the NDR format-string reader (dlls/cocancel/fmt.c).
 *
 * Input: one byte choosing the pointer size (even: 8, odd: 4), then three
 * procedure descriptions - the synchronous method, its Begin_ and its
 * Finish_ - each prefixed by a 16-bit little-endian length, then the type
 * format string.  Everything the engine would do with such tables is done:
 * read the three headers, split the method, and size every [out] parameter
 * (with a reader that hands out whatever argument value the input says).
 * The sanitizers catch any read outside the buffers.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"

struct reader_ctx
{
    const uint8_t *data;
    size_t size;
};

static int read_arg(void *ctx, uint16_t offset, uint8_t basetype, int deref, uint64_t *value)
{
    const struct reader_ctx *reader = ctx;

    (void)basetype;
    if (deref && (offset & 1)) return 0;
    *value = reader->size ? reader->data[offset % reader->size] * 97u : 0;
    return 1;
}

/* Copies the next length-prefixed piece into its own allocation, so that overruns are caught. */
static uint8_t *take(const uint8_t **data, size_t *size, size_t *len)
{
    uint8_t *copy;

    if (*size < 2) return NULL;
    *len = (*data)[0] | ((*data)[1] << 8);
    *data += 2;
    *size -= 2;
    if (*len > *size) *len = *size;
    if (!(copy = malloc(*len ? *len : 1))) return NULL;
    memcpy(copy, *data, *len);
    *data += *len;
    *size -= *len;
    return copy;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cc_fmt_proc *procs = calloc(3, sizeof(*procs));
    struct cc_fmt_split split;
    struct reader_ctx reader;
    uint8_t *pieces[3] = { NULL }, *types = NULL;
    size_t lens[3], types_len;
    enum cc_fmt_status status[3];
    unsigned int ptr_size, i;

    if (!procs || !size) goto done;
    ptr_size = (data[0] & 1) ? 4 : 8;
    data++;
    size--;
    for (i = 0; i < 3; i++)
        if (!(pieces[i] = take(&data, &size, &lens[i]))) goto done;
    types_len = size;
    if (!(types = malloc(types_len ? types_len : 1))) goto done;
    memcpy(types, data, types_len);
    reader.data = types;
    reader.size = types_len;

    for (i = 0; i < 3; i++) status[i] = cc_fmt_read_proc(pieces[i], lens[i], ptr_size, &procs[i]);
    if (status[0] == CC_FMT_OK)
    {
        for (i = 0; i < procs[0].param_count; i++)
        {
            uint64_t out;

            if (procs[0].params[i].attr & CC_PARAM_IS_OUT)
                cc_fmt_out_size(&procs[0].params[i], types, types_len, ptr_size, read_arg, &reader, &out);
        }
        if (status[1] == CC_FMT_OK && status[2] == CC_FMT_OK)
            cc_fmt_split_async(&procs[0], &procs[1], &procs[2], &split);
    }

done:
    for (i = 0; i < 3; i++) free(pieces[i]);
    free(types);
    free(procs);
    return 0;
}
