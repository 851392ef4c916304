/* takt/common.h - version and the export macro, shared by every header. */
#ifndef TAKT_COMMON_H
#define TAKT_COMMON_H

#define TAKT_VERSION_MAJOR 0
#define TAKT_VERSION_MINOR 1
#define TAKT_VERSION_PATCH 0
#define TAKT_VERSION_STRING "0.1.0"

#if defined(TAKT_BUILDING_LIBRARY)
#define TAKT_API __attribute__((visibility("default")))
#else
#define TAKT_API
#endif

#endif
