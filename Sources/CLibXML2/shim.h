// libxml2 as a system library: CXMLReader includes its headers; pkg-config (libxml-2.0) supplies the flags.
#include <libxml/parser.h>
