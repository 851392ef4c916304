/* registry.h - what registry.c, events.c and adopt.c share of the
 * registry's inner workings. The broker's other files use the reg_* calls
 * of broker.h only. Each function is described where it is defined. */
#ifndef TAKT_REGISTRY_H
#define TAKT_REGISTRY_H

#include "broker.h"

/* The acks an open waits for on a connection (A0, registry.c). */
#define ACK_PUB 1
#define ACK_SUB 2

/* Publishing to clients (registry.c): W1, Q0, states. */
void gen_bump(_Atomic uint32_t *gen);
void q0_fence(const struct broker *b);
void publish_state(_Atomic uint32_t *shm_state, uint32_t st);
void topic_mirror(struct broker *b, uint32_t ti);
void pub_mirror(struct broker *b, uint32_t pi);
void sub_mirror(struct broker *b, uint32_t si);
/* A topic and type name a client sent, and a response type: only a
 * service's request topic (@/S/q) may declare one. */
bool names_ok(const char *topic, const char *type, const char *reply);

/* Connections (registry.c). */
void conn_set_state(struct broker *b, uint32_t ci, uint32_t st);
void conn_init_shared(struct broker *b, uint32_t ci, const struct reg_conn *rc);
uint8_t conn_push(struct broker *b, uint32_t ci, uint16_t kind);
const _Atomic uint64_t *pub_active(const struct broker *b, uint32_t pi);
const _Atomic uint64_t *sub_active(const struct broker *b, uint32_t si);
uint64_t end_active(const _Atomic uint64_t *active);
uint32_t depth_slots(uint32_t d);

/* Pool lifetimes (registry.c). */
void pool_map_add(struct broker *b, uint64_t pub_id, uint32_t sub, uint32_t proc);
bool pool_left_add(struct broker *b, uint64_t pub_id, int fd);

/* Listeners (events.c). */
unsigned listener_push(struct broker *b, uint32_t ei, uint32_t j, bool gone, struct client *to, bool owe);
void listeners_mirror(struct broker *b, uint32_t ei);
void listener_drop(struct broker *b, uint32_t ei, uint32_t j);

#endif
