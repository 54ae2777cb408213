/*
 * flowgate-dpdk-sys C shim: out-of-line copies of DPDK `static inline`
 * functions and macros so Rust can call them. Each is a one-line forward;
 * compiled with the pkg-config cflags minus -march/-mtune.
 */
#define _GNU_SOURCE /* fopencookie */
#include "shim.h"
#include <stdio.h>
#include <rte_log.h>
#include <rte_prefetch.h>

int fg_errno(void) { return rte_errno; }
void fg_set_errno(int err) { rte_errno = err; }

unsigned fg_lcore_id(void) { return rte_lcore_id(); }
uint64_t fg_get_tsc_cycles(void) { return rte_get_tsc_cycles(); }
uint64_t fg_rdtsc(void) { return rte_rdtsc(); }

uint16_t fg_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                         struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
    return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t fg_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                         struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
    return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *fg_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int fg_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}
void fg_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void fg_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count) { rte_pktmbuf_free_bulk(mbufs, count); }

void *fg_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
uint16_t fg_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
void fg_pktmbuf_set_data_len(struct rte_mbuf *m, uint16_t len) { m->data_len = len; }
uint32_t fg_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
void fg_pktmbuf_set_pkt_len(struct rte_mbuf *m, uint32_t len) { m->pkt_len = len; }
uint16_t fg_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint16_t fg_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t fg_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t fg_pktmbuf_port(const struct rte_mbuf *m) { return m->port; }
uint32_t fg_pktmbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }
char *fg_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
char *fg_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *fg_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
int fg_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
void fg_pktmbuf_reset(struct rte_mbuf *m) { rte_pktmbuf_reset(m); }
uint16_t fg_mbuf_refcnt_read(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }
void fg_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value) { rte_mbuf_refcnt_update(m, value); }
void fg_prefetch0(const void *p) { rte_prefetch0(p); }

struct rte_ring *fg_ring_create_mp_sc(const char *name, unsigned count, int socket_id)
{
    return rte_ring_create(name, count, socket_id, RING_F_SC_DEQ);
}
void fg_ring_free(struct rte_ring *r) { rte_ring_free(r); }
unsigned fg_ring_mp_enqueue_burst(struct rte_ring *r, struct rte_mbuf **objs, unsigned n)
{
    return rte_ring_mp_enqueue_burst(r, (void * const *)objs, n, NULL);
}
unsigned fg_ring_sc_dequeue_burst(struct rte_ring *r, struct rte_mbuf **objs, unsigned n)
{
    return rte_ring_sc_dequeue_burst(r, (void **)objs, n, NULL);
}
unsigned fg_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

/* DPDK's log into the application's: a stdio stream whose writes go to `sink` with the level
 * of the message being written (rte_vlog sets it, formats into the stream, then flushes). */
static fg_log_sink_t fg_log_sink;

static ssize_t fg_log_cookie_write(void *cookie, const char *buf, size_t size)
{
    (void)cookie;
    fg_log_sink_t sink = fg_log_sink;
    if (sink != NULL)
        sink((uint32_t)rte_log_cur_msg_loglevel(), buf, size);
    return (ssize_t)size;
}

int fg_log_route(fg_log_sink_t sink)
{
    static FILE *stream;
    cookie_io_functions_t io = { .read = NULL, .write = fg_log_cookie_write, .seek = NULL, .close = NULL };
    fg_log_sink = sink;
    if (stream == NULL) {
        stream = fopencookie(NULL, "w", io);
        if (stream == NULL)
            return -1;
    }
    return rte_openlog_stream(stream);
}
