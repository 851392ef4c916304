/* takt/takt.h - umbrella header: pub/sub, events and the executor. */
#ifndef TAKT_TAKT_H
#define TAKT_TAKT_H

#include <takt/common.h>
#include <takt/exec.h>
#include <takt/ipc.h>

#endif
