/*
 * cocancel's one debug module.
 *
 * Messages go through Wine's own debug output (ntdll's __wine_dbg_* exports,
 * looked up at run time), so WINEDEBUG=+cocancel, warn+cocancel etc. behave as
 * for any Wine channel.  On Windows, or without those exports, nothing is printed.
 */

#ifndef COCANCEL_DEBUG_H
#define COCANCEL_DEBUG_H

#include <windef.h>

enum cc_debug_class
{
    CC_DBG_FIXME = 0,
    CC_DBG_ERR   = 1,
    CC_DBG_WARN  = 2,
    CC_DBG_TRACE = 3,
};

void cc_debug_init(void);
BOOL cc_debug_enabled(enum cc_debug_class cls);
void cc_debug_log(enum cc_debug_class cls, const char *function, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
const char *cc_debugstr_guid(const GUID *guid);

#define CC_DEBUG_LOG(cls, ...) \
    do { if (cc_debug_enabled(cls)) cc_debug_log(cls, __func__, __VA_ARGS__); } while (0)

#define TRACE(...) CC_DEBUG_LOG(CC_DBG_TRACE, __VA_ARGS__)
#define WARN(...)  CC_DEBUG_LOG(CC_DBG_WARN, __VA_ARGS__)
#define FIXME(...) CC_DEBUG_LOG(CC_DBG_FIXME, __VA_ARGS__)
#define ERR(...)   CC_DEBUG_LOG(CC_DBG_ERR, __VA_ARGS__)

#endif /* COCANCEL_DEBUG_H */
