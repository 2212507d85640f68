// A streaming reader for flat XML manifests, built on libxml2's SAX2 push parser.
//
// The header exposes no libxml2 or ICU types on purpose: Debian's libxml2 headers pull in the
// system ICU, which clashes with Foundation's own ICU module when both reach one Swift module.
//
// Shape read: a root element (whose attributes are defaults), whose children are records
// (normally <invoice>), whose children are fields (<invoice_id>, <phone>, ...). Text inside a
// field, including text of any deeper elements, is concatenated.
//
// Security: a DOCTYPE (internal or external subset), any entity declaration and any reference to
// a non-predefined entity stop the parse with an error. The network is never used.

#ifndef CXMLREADER_H
#define CXMLREADER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// One name/value pair: a field of a record, or an attribute of the root element.
/// The bytes are UTF-8 and are valid only during the callback that received them.
typedef struct {
    const char *name;
    size_t name_length;
    const char *value;
    size_t value_length;
    long line;
} dx_xml_field;

typedef enum {
    /// The root element started; fields are its attributes, element is its name.
    DX_XML_ROOT = 0,
    /// A child of the root ended; fields are its children in document order.
    DX_XML_RECORD = 1,
} dx_xml_event_kind;

typedef struct {
    dx_xml_event_kind kind;
    const char *element;
    size_t element_length;
    /// The line on which the element's start tag ends (the start tag's line for one-line tags).
    long line;
    const dx_xml_field *fields;
    size_t field_count;
} dx_xml_event;

/// Called for each event. Return 0 to go on, anything else to stop reading (no error is set).
typedef int (*dx_xml_callback)(const dx_xml_event *event, void *context);

/// Result of a parse. `message` is NUL-terminated, empty when ok is 1.
typedef struct {
    int ok;
    long line;
    char message[512];
} dx_xml_result;

/// Streams the file at `path` in chunks of `chunk_size` bytes (0: 64 KiB).
dx_xml_result dx_xml_parse_file(const char *path, size_t chunk_size, dx_xml_callback callback, void *context);

/// Parses a document held in memory, fed to the parser in chunks of `chunk_size` bytes.
dx_xml_result dx_xml_parse_memory(const char *bytes, size_t length, size_t chunk_size, dx_xml_callback callback,
                                  void *context);

/// Tests only: route libxml2's allocations through counters (per thread), so that a test can see
/// that an import frees everything it allocated. Returns 1 when installed.
int dx_xml_count_allocations(void);
/// libxml2 allocations made and not yet freed on this thread since counting began.
long dx_xml_live_allocations(void);

#ifdef __cplusplus
}
#endif

#endif
