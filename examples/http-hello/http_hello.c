/*
 * http-hello: a small HTTP component in C (the wasi:http/proxy world, WASI 0.2), for tests and
 * benchmarks. Built as a preview 1 reactor and wrapped with the proxy adapter; the wasi:http
 * calls go through the wit-bindgen C bindings in bindings/.
 *
 * Routes:
 *   /            "hello from wasm\n"
 *   /count       how many requests this instance has handled ("1\n" with a fresh instance each)
 *   /echo        the request body, streamed back as it arrives
 *   /trailers    the request body back, with the request's trailers and `x-wasm: trailer` as the
 *                response's trailers
 *   /print       writes a line on stdout, one on stderr and an unterminated one on stdout
 *   /sleep       prints "sleeping", waits 1.5 s without spinning, answers "slept\n"
 *   /spin        prints "spinning", then loops for ever
 *   /trap        traps
 *   /alloc       allocates until its memory runs out
 *   /noresponse  returns without answering
 *   /fetch?url=U a GET of U (http or https): 200 and its body, or 502 and the error
 *   /scheme      the scheme the request came with ("http\n" or "https\n")
 *   anything else 404
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_hello.h"

static int handled;
/* What /alloc allocated, chained, so that none of it is optimised away. */
static void *volatile hoard;

static void write_all(wasi_io_streams_borrow_output_stream_t out, const uint8_t *p, size_t n) {
    while (n > 0) {
        /* blocking-write-and-flush takes at most 4096 bytes at a time. */
        size_t chunk = n > 4096 ? 4096 : n;
        http_hello_list_u8_t l = {(uint8_t *)p, chunk};
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(out, &l, &err)) {
            return;
        }
        p += chunk;
        n -= chunk;
    }
}

/* Sends the response head with `headers`; returns its body, whose stream the caller writes then
 * finishes. */
static wasi_http_types_own_outgoing_body_t start_response_with(
    wasi_http_types_own_response_outparam_t out, int status, wasi_http_types_own_fields_t headers) {
    wasi_http_types_own_outgoing_response_t resp =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t r = wasi_http_types_borrow_outgoing_response(resp);
    wasi_http_types_method_outgoing_response_set_status_code(r, (uint16_t)status);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_method_outgoing_response_body(r, &body);
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = resp;
    wasi_http_types_static_response_outparam_set(out, &result);
    return body;
}

static wasi_http_types_own_outgoing_body_t start_response(
    wasi_http_types_own_response_outparam_t out, int status) {
    return start_response_with(out, status, wasi_http_types_constructor_fields());
}

static void finish(wasi_http_types_own_outgoing_body_t body) {
    wasi_http_types_error_code_t err;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &err);
}

static void respond(wasi_http_types_own_response_outparam_t out, int status, const void *data,
                    size_t len) {
    wasi_http_types_own_outgoing_body_t body = start_response(out, status);
    wasi_http_types_own_output_stream_t os;
    if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                   &os)) {
        write_all(wasi_io_streams_borrow_output_stream(os), data, len);
        wasi_io_streams_output_stream_drop_own(os);
    }
    finish(body);
}

static void respond_text(wasi_http_types_own_response_outparam_t out, int status,
                         const char *text) {
    respond(out, status, text, strlen(text));
}

/* Copies everything from `in` to `out` as it arrives. */
static size_t copy_stream(wasi_io_streams_borrow_input_stream_t in,
                          wasi_io_streams_borrow_output_stream_t out, uint8_t **keep,
                          size_t *kept) {
    size_t total = 0;
    for (;;) {
        http_hello_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(in, 65536, &chunk, &err)) {
            break;
        }
        if (keep != NULL) {
            *keep = realloc(*keep, *kept + chunk.len);
            memcpy(*keep + *kept, chunk.ptr, chunk.len);
            *kept += chunk.len;
        } else {
            write_all(out, chunk.ptr, chunk.len);
        }
        total += chunk.len;
        http_hello_list_u8_free(&chunk);
    }
    return total;
}

static void echo(wasi_http_types_own_incoming_request_t req,
                 wasi_http_types_own_response_outparam_t out) {
    wasi_http_types_own_incoming_body_t in_body;
    if (!wasi_http_types_method_incoming_request_consume(
            wasi_http_types_borrow_incoming_request(req), &in_body)) {
        respond_text(out, 500, "no request body\n");
        return;
    }
    wasi_http_types_own_input_stream_t in;
    wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(in_body), &in);
    wasi_http_types_own_outgoing_body_t body = start_response(out, 200);
    wasi_http_types_own_output_stream_t os;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &os);
    copy_stream(wasi_io_streams_borrow_input_stream(in), wasi_io_streams_borrow_output_stream(os),
                NULL, NULL);
    wasi_io_streams_input_stream_drop_own(in);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(in_body));
    wasi_io_streams_output_stream_drop_own(os);
    finish(body);
}

/* Answers with the request's body, then the request's trailers plus `x-wasm: trailer`. */
static void trailers(wasi_http_types_own_incoming_request_t req,
                     wasi_http_types_own_response_outparam_t out) {
    wasi_http_types_own_incoming_body_t in_body;
    if (!wasi_http_types_method_incoming_request_consume(
            wasi_http_types_borrow_incoming_request(req), &in_body)) {
        respond_text(out, 500, "no request body\n");
        return;
    }
    wasi_http_types_own_input_stream_t in;
    wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(in_body), &in);
    uint8_t *data = NULL;
    size_t len = 0;
    copy_stream(wasi_io_streams_borrow_input_stream(in), (wasi_io_streams_borrow_output_stream_t){0},
                &data, &len);
    wasi_io_streams_input_stream_drop_own(in);
    wasi_http_types_own_future_trailers_t future =
        wasi_http_types_static_incoming_body_finish(in_body);
    wasi_http_types_borrow_future_trailers_t f = wasi_http_types_borrow_future_trailers(future);
    wasi_http_types_result_result_option_own_trailers_error_code_void_t got;
    while (!wasi_http_types_method_future_trailers_get(f, &got)) {
        wasi_io_poll_own_pollable_t p = wasi_http_types_method_future_trailers_subscribe(f);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(p));
        wasi_io_poll_pollable_drop_own(p);
    }
    wasi_http_types_future_trailers_drop_own(future);
    /* What arrived is immutable: the response gets a copy with one more field. */
    wasi_http_types_own_fields_t sent;
    if (!got.is_err && !got.val.ok.is_err && got.val.ok.val.ok.is_some) {
        wasi_http_types_own_fields_t received = got.val.ok.val.ok.val;
        sent = wasi_http_types_method_fields_clone(wasi_http_types_borrow_fields(received));
        wasi_http_types_fields_drop_own(received);
    } else {
        sent = wasi_http_types_constructor_fields();
    }
    http_hello_string_t name;
    http_hello_string_set(&name, "x-wasm");
    wasi_http_types_field_value_t value = {(uint8_t *)"trailer", 7};
    wasi_http_types_header_error_t herr;
    wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(sent), &name, &value, &herr);
    /* HTTP/1.1 sends only the trailers the head declares (`trailer: a, b`). */
    http_hello_list_tuple2_field_name_field_value_t entries;
    wasi_http_types_method_fields_entries(wasi_http_types_borrow_fields(sent), &entries);
    size_t declared_len = 0;
    for (size_t i = 0; i < entries.len; i++) {
        declared_len += entries.ptr[i].f0.len + 2;
    }
    uint8_t *declared = malloc(declared_len + 1);
    size_t at = 0;
    for (size_t i = 0; i < entries.len; i++) {
        if (at > 0) {
            declared[at++] = ',';
            declared[at++] = ' ';
        }
        memcpy(declared + at, entries.ptr[i].f0.ptr, entries.ptr[i].f0.len);
        at += entries.ptr[i].f0.len;
    }
    http_hello_list_tuple2_field_name_field_value_free(&entries);
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    http_hello_string_set(&name, "trailer");
    wasi_http_types_field_value_t declared_value = {declared, at};
    wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name,
                                         &declared_value, &herr);
    free(declared);
    wasi_http_types_own_outgoing_body_t body = start_response_with(out, 200, headers);
    wasi_http_types_own_output_stream_t os;
    if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                   &os)) {
        write_all(wasi_io_streams_borrow_output_stream(os), data, len);
        wasi_io_streams_output_stream_drop_own(os);
    }
    free(data);
    wasi_http_types_error_code_t err;
    wasi_http_types_static_outgoing_body_finish(body, &sent, &err);
}

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The value of `name` in a query string, percent-decoded, or NULL. */
static char *query_value(const char *query, const char *name) {
    size_t nlen = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            char *v = malloc(len - nlen);
            size_t o = 0;
            for (size_t i = nlen + 1; i < len; i++) {
                if (p[i] == '%' && i + 2 < len + 1 && hex(p[i + 1]) >= 0 && hex(p[i + 2]) >= 0) {
                    v[o++] = (char)(hex(p[i + 1]) * 16 + hex(p[i + 2]));
                    i += 2;
                } else {
                    v[o++] = p[i] == '+' ? ' ' : p[i];
                }
            }
            v[o] = 0;
            return v;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

static void fail_fetch(wasi_http_types_own_response_outparam_t out,
                       const wasi_http_types_error_code_t *code) {
    char msg[96];
    if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED) {
        snprintf(msg, sizeof msg, "outgoing request failed: HTTP-request-denied\n");
    } else {
        snprintf(msg, sizeof msg, "outgoing request failed: error code %d\n", code->tag);
    }
    respond_text(out, 502, msg);
}

static void fetch(const char *query, wasi_http_types_own_response_outparam_t out) {
    char *url = query_value(query, "url");
    if (url == NULL) {
        respond_text(out, 400, "fetch needs ?url=\n");
        return;
    }
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
    const char *rest = url;
    if (strncmp(url, "https://", 8) == 0) {
        scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
        rest = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        rest = url + 7;
    } else {
        respond_text(out, 400, "fetch takes http:// or https:// URLs\n");
        free(url);
        return;
    }
    const char *slash = strchr(rest, '/');
    char *authority = strndup(rest, slash ? (size_t)(slash - rest) : strlen(rest));
    wasi_http_types_own_outgoing_request_t req =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(req);
    http_hello_string_t s;
    http_hello_string_set(&s, authority);
    wasi_http_types_method_outgoing_request_set_authority(r, &s);
    http_hello_string_set(&s, slash ? slash : "/");
    wasi_http_types_method_outgoing_request_set_path_with_query(r, &s);
    wasi_http_types_method_outgoing_request_set_scheme(r, &scheme);
    wasi_http_outgoing_handler_own_future_incoming_response_t future;
    wasi_http_outgoing_handler_error_code_t err;
    bool sent = wasi_http_outgoing_handler_handle(req, NULL, &future, &err);
    free(authority);
    free(url);
    if (!sent) {
        fail_fetch(out, &err);
        return;
    }
    wasi_http_types_borrow_future_incoming_response_t f =
        wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    while (!wasi_http_types_method_future_incoming_response_get(f, &got)) {
        wasi_io_poll_own_pollable_t p = wasi_http_types_method_future_incoming_response_subscribe(f);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(p));
        wasi_io_poll_pollable_drop_own(p);
    }
    wasi_http_types_future_incoming_response_drop_own(future);
    if (got.is_err || got.val.ok.is_err) {
        wasi_http_types_error_code_t none = {.tag = 255};
        fail_fetch(out, got.is_err ? &none : &got.val.ok.val.err);
        return;
    }
    wasi_http_types_own_incoming_response_t resp = got.val.ok.val.ok;
    wasi_http_types_own_incoming_body_t in_body;
    wasi_http_types_method_incoming_response_consume(
        wasi_http_types_borrow_incoming_response(resp), &in_body);
    wasi_http_types_own_input_stream_t in;
    wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(in_body), &in);
    uint8_t *data = NULL;
    size_t len = 0;
    copy_stream(wasi_io_streams_borrow_input_stream(in), (wasi_io_streams_borrow_output_stream_t){0},
                &data, &len);
    wasi_io_streams_input_stream_drop_own(in);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(in_body));
    wasi_http_types_incoming_response_drop_own(resp);
    respond(out, 200, data, len);
    free(data);
}

static void say(const char *line) {
    write(1, line, strlen(line));
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t out) {
    handled++;
    http_hello_string_t target = {0};
    wasi_http_types_method_incoming_request_path_with_query(
        wasi_http_types_borrow_incoming_request(request), &target);
    char *path = strndup((const char *)target.ptr, target.len);
    http_hello_string_free(&target);
    char *query = strchr(path, '?');
    if (query != NULL) {
        *query++ = 0;
    }
    if (strcmp(path, "/") == 0) {
        respond_text(out, 200, "hello from wasm\n");
    } else if (strcmp(path, "/count") == 0) {
        char text[16];
        snprintf(text, sizeof text, "%d\n", handled);
        respond_text(out, 200, text);
    } else if (strcmp(path, "/echo") == 0) {
        echo(request, out);
    } else if (strcmp(path, "/trailers") == 0) {
        trailers(request, out);
    } else if (strcmp(path, "/print") == 0) {
        say("a line on stdout\n");
        write(2, "a line on stderr\n", 17);
        say("no newline at the end");
        respond_text(out, 200, "printed\n");
    } else if (strcmp(path, "/sleep") == 0) {
        say("sleeping\n");
        wasi_io_poll_own_pollable_t p = wasi_clocks_monotonic_clock_subscribe_duration(1500000000ull);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(p));
        wasi_io_poll_pollable_drop_own(p);
        respond_text(out, 200, "slept\n");
    } else if (strcmp(path, "/spin") == 0) {
        say("spinning\n");
        for (volatile unsigned long i = 0;; i++) {
        }
    } else if (strcmp(path, "/trap") == 0) {
        __builtin_trap();
    } else if (strcmp(path, "/alloc") == 0) {
        for (;;) {
            void **p = malloc(1 << 20);
            if (p == NULL) {
                break;
            }
            memset(p, 1, 1 << 20);
            /* Kept: the compiler may not drop an allocation that escapes. */
            *p = hoard;
            hoard = p;
        }
        respond_text(out, 200, "allocated everything\n");
    } else if (strcmp(path, "/noresponse") == 0) {
        /* The outparam is never set. */
    } else if (strcmp(path, "/fetch") == 0) {
        fetch(query, out);
    } else if (strcmp(path, "/scheme") == 0) {
        wasi_http_types_scheme_t scheme;
        const char *name = "none\n";
        if (wasi_http_types_method_incoming_request_scheme(
                wasi_http_types_borrow_incoming_request(request), &scheme)) {
            name = scheme.tag == WASI_HTTP_TYPES_SCHEME_HTTPS  ? "https\n"
                   : scheme.tag == WASI_HTTP_TYPES_SCHEME_HTTP ? "http\n"
                                                               : "other\n";
            wasi_http_types_scheme_free(&scheme);
        }
        respond_text(out, 200, name);
    } else {
        respond_text(out, 404, "not found\n");
    }
    free(path);
    wasi_http_types_incoming_request_drop_own(request);
}
