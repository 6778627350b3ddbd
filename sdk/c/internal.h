// What the world parts of the library share (not for plugins).
#ifndef WASMOS_INTERNAL_H
#define WASMOS_INTERNAL_H

#include <stdlib.h>
#include <string.h>

#include "wit.h"
#include "wasmos.h"

// A NUL-terminated malloc'ed copy of bytes.
char *wasmos__cstr(const uint8_t *ptr, size_t len);
#define WASMOS__CSTR(s) wasmos__cstr((s).ptr, (s).len)

// NUL-terminated copies of key/value pairs; free with wasmos__pairs_free.
wasmos_pairs wasmos__pairs(const wit_key_value_t *kv, size_t len);
void wasmos__pairs_free(wasmos_pairs *pairs);

// Moves a malloc'ed C string into a WIT string (taking ownership).
void wasmos__give(wit_string_t *out, char *s);

#endif
