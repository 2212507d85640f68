#include "CXMLReader.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlmemory.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// MARK: - Growable byte buffer

typedef struct {
    char *bytes;
    size_t length;
    size_t capacity;
} dx_buffer;

static int dx_buffer_append(dx_buffer *b, const char *bytes, size_t length) {
    if (b->length + length + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->length + length + 1) capacity *= 2;
        char *grown = realloc(b->bytes, capacity);
        if (!grown) return 0;
        b->bytes = grown;
        b->capacity = capacity;
    }
    memcpy(b->bytes + b->length, bytes, length);
    b->length += length;
    b->bytes[b->length] = 0;
    return 1;
}

// MARK: - Parse state

typedef struct {
    size_t name_offset, name_length, value_offset, value_length;
    long line;
} dx_span;

typedef struct {
    xmlParserCtxtPtr ctxt;
    dx_xml_callback callback;
    void *context;
    int depth;
    int stopped_by_callback;
    int failed;
    long error_line;
    char message[512];

    // The record being read: element name, its line, and its fields' bytes in `text`.
    dx_buffer text;
    dx_span *spans;
    size_t span_count, span_capacity;
    size_t record_name_offset, record_name_length;
    long record_line;
    int in_field;
    dx_xml_field *fields;
    size_t field_capacity;
} dx_state;

static long dx_line(dx_state *s) {
    return (s->ctxt && s->ctxt->input) ? (long)s->ctxt->input->line : 0;
}

static void dx_fail(dx_state *s, long line, const char *message) {
    if (!s->failed) {
        s->failed = 1;
        s->error_line = line;
        snprintf(s->message, sizeof s->message, "%s", message);
    }
    xmlStopParser(s->ctxt);
}

static int dx_reserve_fields(dx_state *s, size_t count) {
    if (count <= s->field_capacity) return 1;
    size_t capacity = s->field_capacity ? s->field_capacity * 2 : 32;
    while (capacity < count) capacity *= 2;
    dx_xml_field *grown = realloc(s->fields, capacity * sizeof *grown);
    if (!grown) return 0;
    s->fields = grown;
    s->field_capacity = capacity;
    return 1;
}

static int dx_push_span(dx_state *s, dx_span span) {
    if (s->span_count == s->span_capacity) {
        size_t capacity = s->span_capacity ? s->span_capacity * 2 : 32;
        dx_span *grown = realloc(s->spans, capacity * sizeof *grown);
        if (!grown) return 0;
        s->spans = grown;
        s->span_capacity = capacity;
    }
    s->spans[s->span_count++] = span;
    return 1;
}

static void dx_emit(dx_state *s, dx_xml_event_kind kind) {
    if (!dx_reserve_fields(s, s->span_count)) {
        dx_fail(s, dx_line(s), "out of memory");
        return;
    }
    for (size_t i = 0; i < s->span_count; i++) {
        dx_span *span = &s->spans[i];
        s->fields[i].name = s->text.bytes + span->name_offset;
        s->fields[i].name_length = span->name_length;
        s->fields[i].value = s->text.bytes + span->value_offset;
        s->fields[i].value_length = span->value_length;
        s->fields[i].line = span->line;
    }
    dx_xml_event event = {
        .kind = kind,
        .element = s->text.bytes ? s->text.bytes + s->record_name_offset : "",
        .element_length = s->record_name_length,
        .line = s->record_line,
        .fields = s->fields,
        .field_count = s->span_count,
    };
    if (s->callback(&event, s->context) != 0) {
        s->stopped_by_callback = 1;
        xmlStopParser(s->ctxt);
    }
}

static int dx_encoding_accepted(const char *name) {
    static const char *accepted[] = {"UTF-8", "UTF8", "UTF-16", "UTF-16LE", "UTF-16BE", "ISO-8859-1", "ISO_8859-1",
                                     "ISO-LATIN-1", "LATIN1", "US-ASCII", "ASCII"};
    for (size_t i = 0; i < sizeof accepted / sizeof *accepted; i++) {
        if (strcasecmp(name, accepted[i]) == 0) return 1;
    }
    return 0;
}

// MARK: - SAX callbacks (ctx is the parser context; our state is in its _private)

static dx_state *dx_from(void *ctx) { return (dx_state *)((xmlParserCtxtPtr)ctx)->_private; }

static void dx_start_element(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *URI,
                             int nb_namespaces, const xmlChar **namespaces, int nb_attributes, int nb_defaulted,
                             const xmlChar **attributes) {
    (void)prefix; (void)URI; (void)nb_namespaces; (void)namespaces; (void)nb_defaulted;
    dx_state *s = dx_from(ctx);
    s->depth++;
    size_t name_length = strlen((const char *)localname);
    if (s->depth == 1) {
        // Only UTF-8 (and its ASCII subset), UTF-16 and ISO-8859-1 are accepted: anything else
        // (windows-1252, Shift_JIS, ...) is refused before a record is read.
        const char *declared = (const char *)s->ctxt->encoding;
        if (declared && !dx_encoding_accepted(declared)) {
            char message[300];
            snprintf(message, sizeof message,
                     "the declared encoding '%.100s' is not accepted: save the manifest as UTF-8 (UTF-16 and ISO-8859-1 are "
                     "also read)", declared);
            // Said on line 1, where the declaration is (an XML declaration can only come first).
            dx_fail(s, 1, message);
            return;
        }
        // The root: report its attributes (values are given as [begin, end) pointers).
        s->text.length = 0;
        s->span_count = 0;
        s->record_name_offset = 0;
        s->record_name_length = name_length;
        s->record_line = dx_line(s);
        if (!dx_buffer_append(&s->text, (const char *)localname, name_length + 1)) goto oom;
        for (int i = 0; i < nb_attributes; i++) {
            const char *name = (const char *)attributes[i * 5];
            const char *begin = (const char *)attributes[i * 5 + 3];
            const char *end = (const char *)attributes[i * 5 + 4];
            dx_span span = {.name_offset = s->text.length, .name_length = strlen(name), .line = s->record_line};
            if (!dx_buffer_append(&s->text, name, span.name_length + 1)) goto oom;
            span.value_offset = s->text.length;
            span.value_length = (size_t)(end - begin);
            if (!dx_buffer_append(&s->text, begin, span.value_length)) goto oom;
            if (!dx_buffer_append(&s->text, "", 1)) goto oom;
            if (!dx_push_span(s, span)) goto oom;
        }
        dx_emit(s, DX_XML_ROOT);
    } else if (s->depth == 2) {
        // A record starts: keep its name, forget the previous record's bytes.
        s->text.length = 0;
        s->span_count = 0;
        s->in_field = 0;
        s->record_name_offset = 0;
        s->record_name_length = name_length;
        s->record_line = dx_line(s);
        if (!dx_buffer_append(&s->text, (const char *)localname, name_length + 1)) goto oom;
    } else if (s->depth == 3) {
        // A field starts: its value is the text that follows until the field ends.
        dx_span span = {.name_offset = s->text.length, .name_length = name_length, .line = dx_line(s)};
        if (!dx_buffer_append(&s->text, (const char *)localname, name_length + 1)) goto oom;
        span.value_offset = s->text.length;
        span.value_length = 0;
        if (!dx_push_span(s, span)) goto oom;
        s->in_field = 1;
    } else {
        // An element inside a field (`<amount>1<x/>00</amount>`, an <invoice> inside another):
        // its text would be run into the field's, or a whole invoice lost inside one. A field
        // holds text only: the file is refused at that line.
        char message[400];
        const char *field = s->span_count > 0 ? s->text.bytes + s->spans[s->span_count - 1].name_offset : "?";
        snprintf(message, sizeof message,
                 "element <%.100s> inside the field <%.100s>: a field holds text only (is an <invoice> or a tag misplaced?)",
                 (const char *)localname, field);
        dx_fail(s, dx_line(s), message);
        return;
    }
    return;
oom:
    dx_fail(s, dx_line(s), "out of memory");
}

static void dx_end_element(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *URI) {
    (void)localname; (void)prefix; (void)URI;
    dx_state *s = dx_from(ctx);
    if (s->depth == 3 && s->in_field) {
        dx_span *span = &s->spans[s->span_count - 1];
        span->value_length = s->text.length - span->value_offset;
        if (!dx_buffer_append(&s->text, "", 1)) dx_fail(s, dx_line(s), "out of memory");
        s->in_field = 0;
    } else if (s->depth == 2) {
        dx_emit(s, DX_XML_RECORD);
    }
    s->depth--;
}

static void dx_characters(void *ctx, const xmlChar *ch, int len) {
    dx_state *s = dx_from(ctx);
    if (s->depth >= 3 && s->in_field) {
        if (!dx_buffer_append(&s->text, (const char *)ch, (size_t)len)) dx_fail(s, dx_line(s), "out of memory");
    }
}

static void dx_internal_subset(void *ctx, const xmlChar *name, const xmlChar *ExternalID, const xmlChar *SystemID) {
    (void)name; (void)ExternalID; (void)SystemID;
    dx_state *s = dx_from(ctx);
    dx_fail(s, dx_line(s), "a DOCTYPE (DTD) is not allowed in a manifest: remove the <!DOCTYPE ...> declaration");
}

static void dx_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *publicId, const xmlChar *systemId,
                           xmlChar *content) {
    (void)type; (void)publicId; (void)systemId; (void)content;
    dx_state *s = dx_from(ctx);
    char message[300];
    snprintf(message, sizeof message, "entity declarations are not allowed in a manifest (entity '%.200s')",
             (const char *)name);
    dx_fail(s, dx_line(s), message);
}

static xmlEntityPtr dx_get_entity(void *ctx, const xmlChar *name) {
    // Predefined entities (&amp; &lt; &gt; &quot; &apos;) are resolved by the parser before this
    // is asked; anything else is a custom entity, which a manifest may not use.
    dx_state *s = dx_from(ctx);
    char message[300];
    snprintf(message, sizeof message, "entity '&%.200s;' is not allowed in a manifest (only &amp; &lt; &gt; &quot; &apos;)",
             (const char *)name);
    dx_fail(s, dx_line(s), message);
    return NULL;
}

static xmlParserInputPtr dx_resolve_entity(void *ctx, const xmlChar *publicId, const xmlChar *systemId) {
    (void)publicId; (void)systemId;
    dx_state *s = dx_from(ctx);
    dx_fail(s, dx_line(s), "external entities are not allowed in a manifest");
    return NULL;
}

static void dx_structured_error(void *ctx, xmlErrorPtr error) {
    // libxml2 hands a SAX2 handler's serror the parser context (our state is its _private).
    if (!ctx) return;
    dx_state *s = dx_from(ctx);
    if (!error || error->level < XML_ERR_ERROR) return;  // warnings do not stop a manifest
    char message[480];
    snprintf(message, sizeof message, "%s", error->message ? error->message : "malformed XML");
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' ')) message[--n] = 0;
    dx_fail(s, error->line, message);
}

// MARK: - Driving the parser

static void dx_silent(void *ctx, const char *message, ...) { (void)ctx; (void)message; }

static int dx_begin(dx_state *s, const char *first, int first_length, dx_xml_callback callback, void *context) {
    memset(s, 0, sizeof *s);
    s->callback = callback;
    s->context = context;
    xmlSAXHandler sax;
    memset(&sax, 0, sizeof sax);
    xmlSAXVersion(&sax, 2);
    sax.startElementNs = dx_start_element;
    sax.endElementNs = dx_end_element;
    sax.characters = dx_characters;
    sax.cdataBlock = dx_characters;
    sax.ignorableWhitespace = NULL;
    sax.internalSubset = dx_internal_subset;
    sax.externalSubset = dx_internal_subset;
    sax.entityDecl = dx_entity_decl;
    sax.getEntity = dx_get_entity;
    sax.getParameterEntity = dx_get_entity;
    sax.resolveEntity = dx_resolve_entity;
    sax.reference = NULL;
    sax.processingInstruction = NULL;
    sax.comment = NULL;
    sax.serror = dx_structured_error;
    sax.error = NULL;
    sax.warning = NULL;
    sax.fatalError = NULL;
    s->ctxt = xmlCreatePushParserCtxt(&sax, NULL, first, first_length, NULL);
    if (!s->ctxt) return 0;
    s->ctxt->_private = s;
    // Errors reach dx_structured_error through the handler; nothing is printed to stderr.
    xmlSetGenericErrorFunc(NULL, dx_silent);
    xmlCtxtUseOptions(s->ctxt, XML_PARSE_NONET);
    s->ctxt->replaceEntities = 0;
    s->ctxt->loadsubset = 0;
    s->ctxt->validate = 0;
    return 1;
}

static dx_xml_result dx_finish(dx_state *s) {
    dx_xml_result result = {.ok = 1, .line = 0, .message = {0}};
    if (s->failed && !s->stopped_by_callback) {
        result.ok = 0;
        result.line = s->error_line;
        snprintf(result.message, sizeof result.message, "%s", s->message);
    } else if (!s->stopped_by_callback && s->ctxt && !s->ctxt->wellFormed) {
        result.ok = 0;
        result.line = dx_line(s);
        snprintf(result.message, sizeof result.message, "malformed XML");
    }
    if (s->ctxt) {
        // SAX2's default startDocument builds a document node even though our handlers build no
        // tree: it is ours to free (found by the fuzzer: about 5 KB leaked per import).
        if (s->ctxt->myDoc) {
            xmlFreeDoc(s->ctxt->myDoc);
            s->ctxt->myDoc = NULL;
        }
        xmlFreeParserCtxt(s->ctxt);
    }
    free(s->text.bytes);
    free(s->spans);
    free(s->fields);
    return result;
}

static int dx_should_stop(dx_state *s) { return s->failed || s->stopped_by_callback; }

/// After each chunk: libxml2 may halt on an error (an encoding error, say) while `wellFormed`
/// stays set and no error reaches our handler. A non-zero return, or a parser that stopped
/// without being asked, is a failure with libxml2's own message and line: records after the
/// halt would otherwise be lost without a word.
static void dx_check_chunk(dx_state *s, int rc) {
    if (dx_should_stop(s)) return;
    if (rc == 0 && !s->ctxt->disableSAX) return;
    xmlErrorPtr error = xmlCtxtGetLastError(s->ctxt);
    char message[480];
    if (error && error->message) {
        snprintf(message, sizeof message, "%s", error->message);
        size_t n = strlen(message);
        while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' ')) message[--n] = 0;
    } else {
        snprintf(message, sizeof message, "the XML parser stopped (libxml2 error %d)", rc);
    }
    dx_fail(s, error && error->line > 0 ? error->line : dx_line(s), message);
}

dx_xml_result dx_xml_parse_memory(const char *bytes, size_t length, size_t chunk_size, dx_xml_callback callback,
                                  void *context) {
    if (chunk_size == 0) chunk_size = 65536;
    dx_state s;
    if (!dx_begin(&s, NULL, 0, callback, context)) {
        dx_xml_result r = {.ok = 0, .line = 0};
        snprintf(r.message, sizeof r.message, "could not start the XML parser");
        return r;
    }
    size_t offset = 0;
    while (offset < length && !dx_should_stop(&s)) {
        size_t n = length - offset < chunk_size ? length - offset : chunk_size;
        dx_check_chunk(&s, xmlParseChunk(s.ctxt, bytes + offset, (int)n, 0));
        offset += n;
    }
    if (!dx_should_stop(&s)) dx_check_chunk(&s, xmlParseChunk(s.ctxt, NULL, 0, 1));
    if (!dx_should_stop(&s) && length == 0) dx_fail(&s, 1, "the file is empty");
    return dx_finish(&s);
}

dx_xml_result dx_xml_parse_file(const char *path, size_t chunk_size, dx_xml_callback callback, void *context) {
    if (chunk_size == 0) chunk_size = 65536;
    FILE *file = fopen(path, "rb");
    if (!file) {
        dx_xml_result r = {.ok = 0, .line = 0};
        snprintf(r.message, sizeof r.message, "cannot open the file");
        return r;
    }
    char *chunk = malloc(chunk_size);
    dx_state s;
    if (!chunk || !dx_begin(&s, NULL, 0, callback, context)) {
        free(chunk);
        fclose(file);
        dx_xml_result r = {.ok = 0, .line = 0};
        snprintf(r.message, sizeof r.message, "could not start the XML parser");
        return r;
    }
    size_t total = 0, n;
    while (!dx_should_stop(&s) && (n = fread(chunk, 1, chunk_size, file)) > 0) {
        total += n;
        dx_check_chunk(&s, xmlParseChunk(s.ctxt, chunk, (int)n, 0));
    }
    if (!dx_should_stop(&s)) {
        if (ferror(file)) dx_fail(&s, dx_line(&s), "error while reading the file");
        else dx_check_chunk(&s, xmlParseChunk(s.ctxt, NULL, 0, 1));
    }
    if (!dx_should_stop(&s) && total == 0) dx_fail(&s, 1, "the file is empty");
    free(chunk);
    fclose(file);
    return dx_finish(&s);
}

// MARK: - Allocation counting (tests)

static _Thread_local long dx_live = 0;
static void *dx_count_malloc(size_t n) { void *p = malloc(n); if (p) dx_live++; return p; }
static void *dx_count_realloc(void *p, size_t n) { void *q = realloc(p, n); if (q && !p) dx_live++; return q; }
static void dx_count_free(void *p) { if (p) dx_live--; free(p); }
static char *dx_count_strdup(const char *str) { char *p = strdup(str); if (p) dx_live++; return p; }

int dx_xml_count_allocations(void) {
    return xmlMemSetup(dx_count_free, dx_count_malloc, dx_count_realloc, dx_count_strdup) == 0;
}

long dx_xml_live_allocations(void) { return dx_live; }
