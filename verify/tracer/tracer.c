/* llama-migrate call tracer: linked into a consumer's shim by `migrate build --traced`.
 *
 * The shim is linked with GNU ld's --wrap=SYMBOL for each llama.cpp call below, so the consumer's (and common's)
 * calls land in __wrap_SYMBOL here, which records the call and forwards to __real_SYMBOL (the library's own).
 * The harness binds libllama through the dynamic symbol table and is never traced.
 *
 * Tracing is off unless the environment names a file: LLAMA_MIGRATE_TRACE=PATH. Each call then appends one
 * JSON line before it runs ({"i":N,"ev":"call",...}) and one after it returns ({"i":N,"ev":"ret",...}), each
 * with a single write(2) on an O_APPEND descriptor: the trace survives an abort inside the call (its "call"
 * line is the last one, without a "ret").
 *
 * "off" is the caller's return address minus the load base of the object holding it (this shim, "obj" names
 * it once in the "open" line): `addr2line -e SHIM -i off-1` turns it into the consumer's file:line.
 *
 * Compiled against the llama.cpp tree's own llama.h (llama_context_params differs between releases); the
 * builder defines TRACE_WRAP_<function> for each function the tree declares, and TRACE_HAS_KV_UNIFIED,
 * TRACE_HAS_FLASH_ATTN_TYPE, TRACE_HAS_N_CTX_SEQ for what its llama.h has.
 *
 * Which functions are wrapped is data: the builder writes tracer_wraps.h beside the shim's CMakeLists.txt from
 * verify/data/releases.yaml (`traced`, verify/trace.py tracer_wraps_header), one WRAP_* line per function, each
 * under its TRACE_WRAP_<function>; this file has the wrapper for each kind of call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llama.h"

#define TRACER_VERSION 1
#define HIDDEN __attribute__((visibility("hidden")))

/* the marker `migrate verify --trace` looks for in a library */
__attribute__((used, visibility("default"))) const char llama_migrate_tracer_marker[] = "llama-migrate-tracer/1";

static int g_fd = -1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static uintptr_t g_base = 0; /* load base of this object */
static uintptr_t g_end = 0;  /* end of its last loaded segment: callers in [g_base, g_end) need no dladdr */
static unsigned long g_seq = 0;

typedef struct {
    char * data;
    size_t len;
    size_t cap;
} rec_t;

static void rec_grow(rec_t * r, size_t need) {
    if (r->len + need + 1 <= r->cap) {
        return;
    }
    size_t cap = r->cap ? r->cap : 256;
    while (cap < r->len + need + 1) {
        cap *= 2;
    }
    char * data = (char *) realloc(r->data, cap);
    if (data == NULL) {
        abort();
    }
    r->data = data;
    r->cap = cap;
}

static void rec_printf(rec_t * r, const char * fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_printf(rec_t * r, const char * fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    rec_grow(r, (size_t) n);
    if ((size_t) n < sizeof(small)) {
        memcpy(r->data + r->len, small, (size_t) n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(r->data + r->len, (size_t) n + 1, fmt, ap);
        va_end(ap);
    }
    r->len += (size_t) n;
}

static void rec_json_string(rec_t * r, const char * s) {
    rec_printf(r, "\"");
    for (; s && *s; ++s) {
        unsigned char c = (unsigned char) *s;
        if (c == '"' || c == '\\') {
            rec_printf(r, "\\%c", c);
        } else if (c < 0x20) {
            rec_printf(r, "\\u%04x", c);
        } else {
            rec_printf(r, "%c", c);
        }
    }
    rec_printf(r, "\"");
}

static void write_all(const char * data, size_t len) {
    while (len > 0) {
        ssize_t n = write(g_fd, data, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        data += n;
        len -= (size_t) n;
    }
}

static int find_end(struct dl_phdr_info * info, size_t size, void * data) {
    (void) size;
    (void) data;
    if ((uintptr_t) info->dlpi_addr != g_base) {
        return 0;
    }
    for (int k = 0; k < info->dlpi_phnum; ++k) {
        const ElfW(Phdr) * ph = &info->dlpi_phdr[k];
        if (ph->p_type == PT_LOAD) {
            uintptr_t end = (uintptr_t) info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            if (end > g_end) {
                g_end = end;
            }
        }
    }
    return 1;
}

static void tracer_open(void) {
    const char * path = getenv("LLAMA_MIGRATE_TRACE");
    if (path == NULL || path[0] == '\0') {
        return;
    }
    g_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g_fd < 0) {
        return;
    }
    Dl_info info;
    memset(&info, 0, sizeof(info));
    if (dladdr((void *) &tracer_open, &info) != 0) {
        g_base = (uintptr_t) info.dli_fbase;
        dl_iterate_phdr(find_end, NULL);
    }
    rec_t r = {0};
    rec_printf(&r, "{\"ev\":\"open\",\"tracer\":%d,\"pid\":%ld,\"obj\":", TRACER_VERSION, (long) getpid());
    rec_json_string(&r, info.dli_fname ? info.dli_fname : "");
    rec_printf(&r, "}\n");
    write_all(r.data, r.len);
    free(r.data);
}

static int tracing(void) {
    pthread_once(&g_once, tracer_open);
    return g_fd >= 0;
}

/* a "call" record's head: sequence number, function, caller offset in this object (or another object's name) */
static unsigned long rec_begin(rec_t * r, const char * fn, void * ra) {
    unsigned long i = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    Dl_info info;
    uintptr_t base = g_base;
    const char * other = NULL;
    /* dladdr searches the symbol table (slow for a library this size): only for callers outside this object */
    const int here = (uintptr_t) ra >= g_base && (uintptr_t) ra < g_end;
    if (!here && dladdr(ra, &info) != 0 && (uintptr_t) info.dli_fbase != g_base) {
        base = (uintptr_t) info.dli_fbase;
        other = info.dli_fname;
    }
    rec_printf(r, "{\"i\":%lu,\"ev\":\"call\",\"fn\":\"%s\",\"off\":%lu", i, fn,
               (unsigned long) ((uintptr_t) ra - base));
    if (other != NULL) {
        rec_printf(r, ",\"obj\":");
        rec_json_string(r, other);
    }
    return i;
}

static void rec_end(rec_t * r) {
    rec_printf(r, "}\n");
    write_all(r->data, r->len);
    free(r->data);
    r->data = NULL;
    r->len = r->cap = 0;
}

static void rec_ret_int(unsigned long i, long long value) {
    rec_t r = {0};
    rec_printf(&r, "{\"i\":%lu,\"ev\":\"ret\",\"ret\":%lld", i, value);
    rec_end(&r);
}

static void rec_ret_void(unsigned long i) {
    rec_t r = {0};
    rec_printf(&r, "{\"i\":%lu,\"ev\":\"ret\"", i);
    rec_end(&r);
}

static void rec_ptr(rec_t * r, const char * key, const void * p) {
    rec_printf(r, ",\"%s\":\"%p\"", key, p);
}

/* ---- contexts -------------------------------------------------------------------------------------------- */

static void rec_context_params(rec_t * r, const struct llama_context_params * p) {
    rec_printf(r, ",\"n_ctx\":%u,\"n_batch\":%u,\"n_ubatch\":%u,\"n_seq_max\":%u", p->n_ctx, p->n_batch, p->n_ubatch,
               p->n_seq_max);
#ifdef TRACE_HAS_FLASH_ATTN_TYPE
    rec_printf(r, ",\"flash_attn_type\":%d", (int) p->flash_attn_type);
#else
    rec_printf(r, ",\"flash_attn\":%s", p->flash_attn ? "true" : "false");
#endif
#ifdef TRACE_HAS_KV_UNIFIED
    rec_printf(r, ",\"kv_unified\":%s", p->kv_unified ? "true" : "false");
#endif
}

static void rec_context_ret(unsigned long i, struct llama_context * ctx) {
    rec_t r = {0};
    rec_printf(&r, "{\"i\":%lu,\"ev\":\"ret\"", i);
    rec_ptr(&r, "ctx", ctx);
    if (ctx != NULL) {
        rec_printf(&r, ",\"n_ctx_actual\":%u,\"n_seq_max_actual\":%u", llama_n_ctx(ctx), llama_n_seq_max(ctx));
#ifdef TRACE_HAS_N_CTX_SEQ
        rec_printf(&r, ",\"n_ctx_seq\":%u", llama_n_ctx_seq(ctx));
#endif
    }
    rec_end(&r);
}

#define WRAP_CONTEXT_CREATE(NAME)                                                                          \
    struct llama_context * __real_##NAME(struct llama_model * model, struct llama_context_params params);   \
    HIDDEN struct llama_context * __wrap_##NAME(struct llama_model * model,                                 \
                                                struct llama_context_params params) {                      \
        if (!tracing()) {                                                                                  \
            return __real_##NAME(model, params);                                                           \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, "model", model);                                                                       \
        rec_context_params(&r, &params);                                                                   \
        rec_end(&r);                                                                                       \
        struct llama_context * ctx = __real_##NAME(model, params);                                         \
        rec_context_ret(i, ctx);                                                                           \
        return ctx;                                                                                        \
    }

#define WRAP_FREE(NAME)                                                                                    \
    void __real_##NAME(struct llama_context * ctx);                                                        \
    HIDDEN void __wrap_##NAME(struct llama_context * ctx) {                                                \
        if (!tracing()) {                                                                                  \
            __real_##NAME(ctx);                                                                            \
            return;                                                                                        \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, "ctx", ctx);                                                                           \
        rec_end(&r);                                                                                       \
        __real_##NAME(ctx);                                                                                \
        rec_ret_void(i);                                                                                   \
    }

/* ---- batches --------------------------------------------------------------------------------------------- */

static void rec_batch(rec_t * r, const struct llama_batch * b) {
    const int32_t n = b->n_tokens;
    rec_printf(r, ",\"n\":%d,\"embd\":%s", n, b->embd != NULL ? "true" : "false");
    if (b->token != NULL) {
        rec_printf(r, ",\"tok\":[");
        for (int32_t k = 0; k < n; ++k) {
            rec_printf(r, k ? ",%d" : "%d", b->token[k]);
        }
        rec_printf(r, "]");
    }
    if (b->pos != NULL) {
        rec_printf(r, ",\"pos\":[");
        for (int32_t k = 0; k < n; ++k) {
            rec_printf(r, k ? ",%d" : "%d", b->pos[k]);
        }
        rec_printf(r, "]");
    }
    if (b->seq_id != NULL) {
        rec_printf(r, ",\"seq\":[");
        for (int32_t k = 0; k < n; ++k) {
            const int32_t m = b->n_seq_id != NULL ? b->n_seq_id[k] : 1;
            rec_printf(r, k ? ",[" : "[");
            for (int32_t s = 0; s < m; ++s) {
                rec_printf(r, s ? ",%d" : "%d", b->seq_id[k][s]);
            }
            rec_printf(r, "]");
        }
        rec_printf(r, "]");
    }
    if (b->logits != NULL) {
        rec_printf(r, ",\"out\":[");
        for (int32_t k = 0; k < n; ++k) {
            rec_printf(r, k ? ",%d" : "%d", (int) b->logits[k]);
        }
        rec_printf(r, "]");
    }
}

#define WRAP_BATCH_CALL(NAME)                                                                              \
    int32_t __real_##NAME(struct llama_context * ctx, struct llama_batch batch);                           \
    HIDDEN int32_t __wrap_##NAME(struct llama_context * ctx, struct llama_batch batch) {                   \
        if (!tracing()) {                                                                                  \
            return __real_##NAME(ctx, batch);                                                              \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, "ctx", ctx);                                                                           \
        rec_batch(&r, &batch);                                                                             \
        rec_end(&r);                                                                                       \
        int32_t ret = __real_##NAME(ctx, batch);                                                           \
        rec_ret_int(i, ret);                                                                               \
        return ret;                                                                                        \
    }


/* ---- memory / sequences ---------------------------------------------------------------------------------- */
/* HANDLE: struct llama_context * (llama_kv_self_*, llama_kv_cache_*) or llama_memory_t (llama_memory_*);
   KEY: how the handle is recorded ("ctx" / "mem"). */

#define WRAP_CLEAR(NAME, HANDLE, KEY)                                                                      \
    void __real_##NAME(HANDLE h);                                                                          \
    HIDDEN void __wrap_##NAME(HANDLE h) {                                                                  \
        if (!tracing()) {                                                                                  \
            __real_##NAME(h);                                                                              \
            return;                                                                                        \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, KEY, h);                                                                               \
        rec_end(&r);                                                                                       \
        __real_##NAME(h);                                                                                  \
        rec_ret_void(i);                                                                                   \
    }

#define WRAP_SEQ_RM(NAME, HANDLE, KEY)                                                                     \
    bool __real_##NAME(HANDLE h, llama_seq_id seq, llama_pos p0, llama_pos p1);                            \
    HIDDEN bool __wrap_##NAME(HANDLE h, llama_seq_id seq, llama_pos p0, llama_pos p1) {                    \
        if (!tracing()) {                                                                                  \
            return __real_##NAME(h, seq, p0, p1);                                                          \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, KEY, h);                                                                               \
        rec_printf(&r, ",\"seq\":%d,\"p0\":%d,\"p1\":%d", seq, p0, p1);                                    \
        rec_end(&r);                                                                                       \
        bool ret = __real_##NAME(h, seq, p0, p1);                                                          \
        rec_ret_int(i, ret ? 1 : 0);                                                                       \
        return ret;                                                                                        \
    }

#define WRAP_SEQ_CP(NAME, HANDLE, KEY)                                                                     \
    void __real_##NAME(HANDLE h, llama_seq_id src, llama_seq_id dst, llama_pos p0, llama_pos p1);          \
    HIDDEN void __wrap_##NAME(HANDLE h, llama_seq_id src, llama_seq_id dst, llama_pos p0, llama_pos p1) {  \
        if (!tracing()) {                                                                                  \
            __real_##NAME(h, src, dst, p0, p1);                                                            \
            return;                                                                                        \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, KEY, h);                                                                               \
        rec_printf(&r, ",\"src\":%d,\"dst\":%d,\"p0\":%d,\"p1\":%d", src, dst, p0, p1);                    \
        rec_end(&r);                                                                                       \
        __real_##NAME(h, src, dst, p0, p1);                                                                \
        rec_ret_void(i);                                                                                   \
    }

#define WRAP_SEQ_KEEP(NAME, HANDLE, KEY)                                                                   \
    void __real_##NAME(HANDLE h, llama_seq_id seq);                                                        \
    HIDDEN void __wrap_##NAME(HANDLE h, llama_seq_id seq) {                                                \
        if (!tracing()) {                                                                                  \
            __real_##NAME(h, seq);                                                                         \
            return;                                                                                        \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, KEY, h);                                                                               \
        rec_printf(&r, ",\"seq\":%d", seq);                                                                \
        rec_end(&r);                                                                                       \
        __real_##NAME(h, seq);                                                                             \
        rec_ret_void(i);                                                                                   \
    }

#define WRAP_SEQ_SHIFT(NAME, HANDLE, KEY, TYPE, ARG)                                                       \
    void __real_##NAME(HANDLE h, llama_seq_id seq, llama_pos p0, llama_pos p1, TYPE v);                    \
    HIDDEN void __wrap_##NAME(HANDLE h, llama_seq_id seq, llama_pos p0, llama_pos p1, TYPE v) {            \
        if (!tracing()) {                                                                                  \
            __real_##NAME(h, seq, p0, p1, v);                                                              \
            return;                                                                                        \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, KEY, h);                                                                               \
        rec_printf(&r, ",\"seq\":%d,\"p0\":%d,\"p1\":%d,\"" ARG "\":%d", seq, p0, p1, (int) v);            \
        rec_end(&r);                                                                                       \
        __real_##NAME(h, seq, p0, p1, v);                                                                  \
        rec_ret_void(i);                                                                                   \
    }

/* seq_add shifts positions by a llama_pos delta, seq_div divides them by an int */
#define WRAP_SEQ_ADD(NAME, HANDLE, KEY) WRAP_SEQ_SHIFT(NAME, HANDLE, KEY, llama_pos, "delta")
#define WRAP_SEQ_DIV(NAME, HANDLE, KEY) WRAP_SEQ_SHIFT(NAME, HANDLE, KEY, int, "d")

#define WRAP_SEQ_POS(NAME, HANDLE, KEY)                                                                    \
    llama_pos __real_##NAME(HANDLE h, llama_seq_id seq);                                                   \
    HIDDEN llama_pos __wrap_##NAME(HANDLE h, llama_seq_id seq) {                                           \
        if (!tracing()) {                                                                                  \
            return __real_##NAME(h, seq);                                                                  \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, KEY, h);                                                                               \
        rec_printf(&r, ",\"seq\":%d", seq);                                                                \
        rec_end(&r);                                                                                       \
        llama_pos ret = __real_##NAME(h, seq);                                                             \
        rec_ret_int(i, ret);                                                                               \
        return ret;                                                                                        \
    }

/* b7785: the context's memory module */
#define WRAP_GET_MEMORY(NAME)                                                                              \
    llama_memory_t __real_##NAME(const struct llama_context * ctx);                                        \
    HIDDEN llama_memory_t __wrap_##NAME(const struct llama_context * ctx) {                                \
        if (!tracing()) {                                                                                  \
            return __real_##NAME(ctx);                                                                     \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, "ctx", ctx);                                                                           \
        rec_end(&r);                                                                                       \
        llama_memory_t mem = __real_##NAME(ctx);                                                           \
        rec_t ret = {0};                                                                                   \
        rec_printf(&ret, "{\"i\":%lu,\"ev\":\"ret\"", i);                                                   \
        rec_ptr(&ret, "mem", mem);                                                                         \
        rec_end(&ret);                                                                                     \
        return mem;                                                                                        \
    }

#define WRAP_MEMORY_CLEAR(NAME)                                                                            \
    void __real_##NAME(llama_memory_t mem, bool data);                                                     \
    HIDDEN void __wrap_##NAME(llama_memory_t mem, bool data) {                                             \
        if (!tracing()) {                                                                                  \
            __real_##NAME(mem, data);                                                                      \
            return;                                                                                        \
        }                                                                                                  \
        rec_t r = {0};                                                                                     \
        unsigned long i = rec_begin(&r, #NAME, __builtin_return_address(0));                               \
        rec_ptr(&r, "mem", mem);                                                                           \
        rec_printf(&r, ",\"data\":%s", data ? "true" : "false");                                           \
        rec_end(&r);                                                                                       \
        __real_##NAME(mem, data);                                                                          \
        rec_ret_void(i);                                                                                   \
    }

/* a memory call's handle and how it is recorded, by the handle releases.yaml names: the context (b5421 and before:
   llama_kv_self_*, llama_kv_cache_*) or the context's memory module (b7785: llama_memory_*) */
#define TRACE_HANDLE_context struct llama_context *
#define TRACE_KEY_context "ctx"
#define TRACE_HANDLE_memory llama_memory_t
#define TRACE_KEY_memory "mem"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#include "tracer_wraps.h"

#pragma GCC diagnostic pop
