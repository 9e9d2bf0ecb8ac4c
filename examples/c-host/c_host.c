/*
 * c-host: a small real gateway in C99 over the channel plugin C ABI
 * (plugin-abi/include/channel_plugin.h, spec/host-protocol.md).
 *
 *   c-host <config.json> <state-dir> <delivered.jsonl> [library]
 *
 * The library is the last argument or $CHP_LIBRARY (e.g. plugins/libimessage.so). The config
 * is the gateway config as plain JSON ({"channels":{"imessage":{...}}}). The host starts the
 * plugin asking for batches, prints every routed message as one JSON line on stdout, appends
 * each delivery to <delivered.jsonl> and fsyncs it (once per delivery or batch) before it
 * acknowledges, and answers each message with an echo agent: a `send` of "echo: <text>" whose
 * idempotency key is derived from the messageId, so a redelivered message is never answered
 * twice. Plugin logs go to stderr. SIGINT/SIGTERM posts `stop`; the host drains until
 * `plugin.closed`, frees the instance and exits 0.
 *
 * Build: cc -std=c99 -Wall -Werror -I plugin-abi/include c_host.c -o c-host -ldl
 *
 * JSON: the plugin's messages are compact JSON objects, and this host needs only a few
 * fields, so it uses a tiny scanner instead of a parser: it finds a key among an object's
 * top-level members and returns the raw text of its value. Limits: keys are compared as raw
 * text (a key written with escapes is not found); values are never decoded, they are copied
 * into the JSON the host writes as they came (a string token stays a valid string token).
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel_plugin.h"

/* The library's functions, resolved with dlsym (the library is never dlclosed). */
static struct {
    uint32_t (*abi_version)(void);
    chp_instance *(*new_)(const char *);
    char *(*last_error)(void);
    int32_t (*post)(chp_instance *, const char *);
    char *(*next_message)(chp_instance *, int32_t);
    int32_t (*wakeup_fd)(chp_instance *);
    void (*free_)(chp_instance *);
    void (*string_free)(char *);
} chp;

static int signal_pipe[2] = {-1, -1};
static long next_id = 1;
static int start_failed = 0;

/* A slice of a JSON text: [p, p + n). */
typedef struct {
    const char *p;
    size_t n;
} span;

static int load(const char *path) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "c-host: loading %s: %s\n", path, dlerror());
        return -1;
    }
    struct { const char *name; void *slot; size_t size; } syms[] = {
        {"chp_abi_version", &chp.abi_version, sizeof chp.abi_version},
        {"chp_new", &chp.new_, sizeof chp.new_},
        {"chp_last_error", &chp.last_error, sizeof chp.last_error},
        {"chp_post", &chp.post, sizeof chp.post},
        {"chp_next_message", &chp.next_message, sizeof chp.next_message},
        {"chp_wakeup_fd", &chp.wakeup_fd, sizeof chp.wakeup_fd},
        {"chp_free", &chp.free_, sizeof chp.free_},
        {"chp_string_free", &chp.string_free, sizeof chp.string_free},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *f = dlsym(lib, syms[i].name);
        if (f == NULL) {
            fprintf(stderr, "c-host: %s does not export %s\n", path, syms[i].name);
            return -1;
        }
        /* ISO C has no cast from void * to a function pointer; POSIX guarantees the bytes. */
        memcpy(syms[i].slot, &f, syms[i].size);
    }
    return 0;
}

/* ---- the JSON scanner ---- */

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Past one JSON value starting at p (no validation: garbage ends at the next delimiter). */
static const char *skip_value(const char *p) {
    int depth = 0;
    do {
        if (*p == '"') {
            for (p++; *p != '\0' && *p != '"'; p++)
                if (*p == '\\' && p[1] != '\0') p++;
            if (*p == '"') p++;
        } else if (*p == '{' || *p == '[') {
            depth++, p++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0) return p; /* the end of the enclosing container */
            depth--, p++;
        } else if (depth == 0) {
            while (*p != '\0' && *p != ',' && *p != '}' && *p != ']' && *p != ' ') p++;
        } else if (*p != '\0') {
            p++;
        }
    } while (depth > 0 && *p != '\0');
    return p;
}

/* The raw value of `key` among the top-level members of the object `obj`; n == 0: absent. */
static span get(span obj, const char *key) {
    span none = {NULL, 0};
    size_t klen = strlen(key);
    const char *p = obj.p == NULL ? NULL : skip_ws(obj.p);
    if (p == NULL || *p != '{') return none;
    p = skip_ws(p + 1);
    while (*p == '"') {
        const char *name = p + 1, *end = skip_value(p);
        p = skip_ws(end);
        if (*p != ':') return none;
        const char *value = skip_ws(p + 1);
        p = skip_value(value);
        if ((size_t)(end - name) == klen + 1 && strncmp(name, key, klen) == 0) {
            span found = {value, (size_t)(p - value)};
            return found;
        }
        p = skip_ws(p);
        if (*p != ',') return none;
        p = skip_ws(p + 1);
    }
    return none;
}

static int is(span s, const char *literal) {
    return s.n == strlen(literal) && strncmp(s.p, literal, s.n) == 0;
}

/* ---- output ---- */

/* Formats a message and posts it; a full queue (-3) is retried after a short wait. */
static void post(chp_instance *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *msg = n < 0 ? NULL : malloc((size_t)n + 1);
    if (msg == NULL) {
        fprintf(stderr, "c-host: out of memory formatting a message\n");
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int32_t rc;
    while ((rc = chp.post(h, msg)) == -3) poll(NULL, 0, 10);
    if (rc != 0) fprintf(stderr, "c-host: chp_post returned %d for %s\n", (int)rc, msg);
    free(msg);
}

/* The echo agent's reply. The text and messageId tokens are copied raw with a prefix put
 * after their opening quote ("hi" -> "echo: hi"), which keeps them valid string tokens. */
static void post_send(chp_instance *h, span event) {
    span text = get(event, "text"), id = get(event, "messageId"), to = get(event, "to");
    span account = get(event, "accountId");
    if (text.n < 2 || id.n < 2 || to.n == 0 || account.n == 0 || *text.p != '"' || *id.p != '"') {
        fprintf(stderr, "c-host: a message without text/messageId/to: not answered\n");
        return;
    }
    post(h,
         "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"send\",\"params\":{\"accountId\":%.*s,"
         "\"to\":%.*s,\"text\":\"echo: %.*s,\"idempotencyKey\":\"echo:%.*s}}",
         next_id++, (int)account.n, account.p, (int)to.n, to.p, (int)text.n - 1, text.p + 1,
         (int)id.n - 1, id.p + 1);
}

/* Writes the message events of a delivery to `to`, one line each; other types are skipped. */
static int write_events(FILE *to, span event) {
    span type = get(event, "type");
    if (is(type, "\"batch\"")) {
        span events = get(event, "events");
        const char *p = events.n > 0 && *events.p == '[' ? skip_ws(events.p + 1) : "";
        while (*p == '{') {
            const char *end = skip_value(p);
            span one = {p, (size_t)(end - p)};
            if (write_events(to, one) != 0) return -1;
            p = skip_ws(end);
            if (*p == ',') p = skip_ws(p + 1);
        }
        return 0;
    }
    if (!is(type, "\"message\"")) return 0;
    return fprintf(to, "%.*s\n", (int)event.n, event.p) < 0 ? -1 : 0;
}

static void echo_events(chp_instance *h, span event) {
    if (is(get(event, "type"), "\"message\"")) {
        post_send(h, event);
        return;
    }
    span events = get(event, "events");
    const char *p = events.n > 0 && *events.p == '[' ? skip_ws(events.p + 1) : "";
    while (*p == '{') {
        const char *end = skip_value(p);
        span one = {p, (size_t)(end - p)};
        echo_events(h, one);
        p = skip_ws(end);
        if (*p == ',') p = skip_ws(p + 1);
    }
}

/* A delivery: durable first (write + one fsync), then the acknowledgement, then the replies.
 * A failed write refuses it, and the plugin delivers the same events again later. */
static void deliver(chp_instance *h, FILE *out, span id, span event) {
    int failed = write_events(out, event) != 0 || fflush(out) != 0 || fsync(fileno(out)) != 0;
    if (failed) {
        fprintf(stderr, "c-host: writing the delivery: %s: refused\n", strerror(errno));
        post(h, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":{\"code\":-32000,\"message\":"
                "\"the host could not store it\"}}", (int)id.n, id.p);
        return;
    }
    write_events(stdout, event);
    fflush(stdout);
    post(h, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":{}}", (int)id.n, id.p);
    echo_events(h, event);
}

/* One plugin message. Returns 1 after `plugin.closed`, -1 when `start` failed, else 0. */
static int handle(chp_instance *h, FILE *out, const char *text) {
    span msg = {text, strlen(text)};
    span method = get(msg, "method"), id = get(msg, "id"), params = get(msg, "params");
    if (is(method, "\"log\"")) {
        fprintf(stderr, "log: %.*s\n", (int)params.n, params.p);
    } else if (is(method, "\"plugin.closed\"")) {
        fprintf(stderr, "c-host: plugin.closed\n");
        return 1;
    } else if (id.n == 0) {
        fprintf(stderr, "c-host: ignored: %s\n", text); /* a notification this host does not know */
    } else if (is(method, "\"deliver\"")) {
        deliver(h, out, id, params);
    } else if (method.n > 1) {
        /* `host.request` (config.write, ...) or anything newer: this host implements none. */
        span name = is(method, "\"host.request\"") ? get(params, "method") : method;
        if (name.n < 2 || *name.p != '"') name = method;
        post(h, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":{\"code\":-32601,\"message\":"
                "\"this host does not implement %.*s\"}}", (int)id.n, id.p, (int)name.n - 2,
                name.p + 1);
    } else if (get(msg, "error").n > 0) {
        fprintf(stderr, "c-host: request %.*s failed: %s\n", (int)id.n, id.p, text);
        if (is(id, "1")) return -1; /* id 1 is `start` */
    } else if (is(id, "1")) {
        fprintf(stderr, "c-host: started: %s\n", text);
    }
    return 0;
}

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    if (write(signal_pipe[1], "s", 1) < 0) { /* the pipe is full: a stop is already due */ }
    errno = saved;
}

/* Reads a whole file into a NUL-terminated buffer, or NULL (said on stderr). */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)size + 1)) != NULL &&
        fread(buf, 1, (size_t)size, f) == (size_t)size) {
        buf[size] = '\0';
    } else {
        fprintf(stderr, "c-host: reading %s: %s\n", path, strerror(errno));
        free(buf);
        buf = NULL;
    }
    if (f != NULL) fclose(f);
    return buf;
}

/* `s` as the body of a JSON string (quotes, backslashes and control characters escaped). */
static char *escape(const char *s) {
    char *out = malloc(strlen(s) * 6 + 1), *o = out;
    for (; out != NULL && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') *o++ = '\\', *o++ = (char)c;
        else if (c < 0x20) o += sprintf(o, "\\u%04x", c);
        else *o++ = (char)c;
    }
    if (out != NULL) *o = '\0';
    return out;
}

/* Waits on the wakeup fd and the signal pipe; drains the queue; stops once on a signal. */
static int run(chp_instance *h, FILE *out) {
    struct pollfd fds[2] = {{chp.wakeup_fd(h), POLLIN, 0}, {signal_pipe[0], POLLIN, 0}};
    int stopping = 0;
    char scratch[256];
    for (;;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR) {
            perror("c-host: poll");
            return 1;
        }
        if ((fds[1].revents & POLLIN) && !stopping) {
            stopping = 1;
            post(h, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"stop\",\"params\":{}}", next_id++);
        }
        while (read(fds[0].fd, scratch, sizeof scratch) > 0) { /* discard the wakeup bytes */ }
        char *m;
        while ((m = chp.next_message(h, 0)) != NULL) {
            int r = handle(h, out, m);
            chp.string_free(m);
            if (r == 1) return start_failed;
            if (r < 0 && !stopping) {
                start_failed = stopping = 1;
                post(h, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"stop\",\"params\":{}}",
                     next_id++);
            }
        }
    }
}

int main(int argc, char **argv) {
    const char *library = argc > 4 ? argv[4] : getenv("CHP_LIBRARY");
    if (argc < 4 || library == NULL) {
        fprintf(stderr, "usage: c-host <config.json> <state-dir> <delivered.jsonl> [library]"
                        " (or set CHP_LIBRARY)\n");
        return 2;
    }
    if (load(library) != 0) return 1;
    if ((chp.abi_version() >> 16) != CHP_ABI_VERSION_MAJOR) {
        fprintf(stderr, "c-host: %s has C ABI %u.%u, this host speaks %d.x\n", library,
                (unsigned)(chp.abi_version() >> 16), (unsigned)(chp.abi_version() & 0xffff),
                CHP_ABI_VERSION_MAJOR);
        return 1;
    }
    char *config = read_file(argv[1]), *state_dir = escape(argv[2]);
    FILE *out = fopen(argv[3], "a");
    if (config == NULL || state_dir == NULL || out == NULL) {
        if (out == NULL) fprintf(stderr, "c-host: opening %s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    if (pipe(signal_pipe) != 0 || fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK) != 0) {
        perror("c-host: pipe");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    chp_instance *h = chp.new_(NULL);
    if (h == NULL) {
        char *e = chp.last_error();
        fprintf(stderr, "c-host: chp_new failed: %s\n", e != NULL ? e : "(no reason)");
        chp.string_free(e);
        return 1;
    }
    /* The config is embedded as it is: it must be one JSON value (not JSON5). */
    post(h, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"start\",\"params\":{\"config\":%s,"
            "\"stateDir\":\"%s\",\"logLevel\":\"info\",\"host\":{\"features\":"
            "[\"deliver.batch\"]}}}", next_id++, config, state_dir);
    free(config);
    free(state_dir);
    int rc = run(h, out);
    chp.free_(h);
    fclose(out);
    return rc;
}
