/*
 * cocancel's debug channel on top of Wine's debug output.  See debug.h.
 */

#include <stdarg.h>
#include <stdio.h>
#include <windef.h>
#include <winbase.h>

#include "debug.h"

/* Same layout as Wine's struct __wine_debug_channel; 0xff means "not yet looked up". */
struct cc_debug_channel
{
    unsigned char flags;
    char name[15];
};

static struct cc_debug_channel channel = { 0xff, "cocancel" };

static unsigned char (__cdecl *p_get_channel_flags)(struct cc_debug_channel *);
static int (__cdecl *p_dbg_header)(int cls, struct cc_debug_channel *, const char *function);
static int (__cdecl *p_dbg_output)(const char *str);

void cc_debug_init(void)
{
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");

    if (!ntdll) return;
    p_dbg_header = (void *)GetProcAddress(ntdll, "__wine_dbg_header");
    p_dbg_output = (void *)GetProcAddress(ntdll, "__wine_dbg_output");
    /* Publish the flags function last: it is what cc_debug_enabled() tests. */
    if (p_dbg_header && p_dbg_output)
        p_get_channel_flags = (void *)GetProcAddress(ntdll, "__wine_dbg_get_channel_flags");
}

BOOL cc_debug_enabled(enum cc_debug_class cls)
{
    if (!p_get_channel_flags) return FALSE;
    return (p_get_channel_flags(&channel) & (1 << cls)) != 0;
}

void cc_debug_log(enum cc_debug_class cls, const char *function, const char *format, ...)
{
    char buffer[1024];
    va_list args;

    if (p_dbg_header(cls, &channel, function) == -1) return;
    va_start(args, format);
    vsnprintf(buffer, sizeof(buffer), format, args);
    va_end(args);
    p_dbg_output(buffer);
}

const char *cc_debugstr_guid(const GUID *guid)
{
    static char buffers[16][40];
    static LONG next;
    char *buffer;

    if (!guid) return "(null)";
    buffer = buffers[(ULONG)InterlockedIncrement(&next) % 16];
    snprintf(buffer, sizeof(buffers[0]), "{%08lx-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x}",
             (unsigned long)guid->Data1, guid->Data2, guid->Data3, guid->Data4[0], guid->Data4[1],
             guid->Data4[2], guid->Data4[3], guid->Data4[4], guid->Data4[5], guid->Data4[6],
             guid->Data4[7]);
    return buffer;
}
