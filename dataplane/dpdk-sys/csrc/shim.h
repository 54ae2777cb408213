/*
 * flowgate-dpdk-sys wrapper header.
 *
 * bindgen runs on this file. It pulls in the DPDK headers the dataplane
 * uses and declares the `fg_*` shim functions (csrc/shim.c) that give Rust a
 * linkable symbol for DPDK's `static inline` fast-path functions and macros.
 */
#ifndef FLOWGATE_DPDK_SHIM_H
#define FLOWGATE_DPDK_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_ethdev.h>
#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_ring.h>
#include <rte_log.h>

/*
 * Function-like macros (RTE_BIT64 etc.) are invisible to bindgen; re-export
 * the values we need as enumerators so bindgen sees evaluated constants.
 */
enum fg_rss_hf {
    FG_ETH_RSS_IP = RTE_ETH_RSS_IP,
    FG_ETH_RSS_TCP = RTE_ETH_RSS_TCP,
    FG_ETH_RSS_UDP = RTE_ETH_RSS_UDP,
};

enum fg_consts {
    FG_PKTMBUF_HEADROOM = RTE_PKTMBUF_HEADROOM,
    FG_MBUF_DEFAULT_BUF_SIZE = RTE_MBUF_DEFAULT_BUF_SIZE,
    FG_MAX_LCORE = RTE_MAX_LCORE,
    FG_ETHER_ADDR_LEN = RTE_ETHER_ADDR_LEN,
    FG_ETH_LINK_UP = RTE_ETH_LINK_UP,
    FG_LCORE_ID_ANY = (int)LCORE_ID_ANY,
};

/* rte_errno (a per-lcore TLS variable behind a macro) */
int fg_errno(void);
void fg_set_errno(int err);

/* lcore / time */
unsigned fg_lcore_id(void);
uint64_t fg_get_tsc_cycles(void);
uint64_t fg_rdtsc(void);

/* ethdev fast path */
uint16_t fg_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                         struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t fg_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                         struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

/* mbuf alloc / free */
struct rte_mbuf *fg_pktmbuf_alloc(struct rte_mempool *mp);
int fg_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                          unsigned count);
void fg_pktmbuf_free(struct rte_mbuf *m);
void fg_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);

/* mbuf data access */
void *fg_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t fg_pktmbuf_data_len(const struct rte_mbuf *m);
void fg_pktmbuf_set_data_len(struct rte_mbuf *m, uint16_t len);
uint32_t fg_pktmbuf_pkt_len(const struct rte_mbuf *m);
void fg_pktmbuf_set_pkt_len(struct rte_mbuf *m, uint32_t len);
uint16_t fg_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint16_t fg_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t fg_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t fg_pktmbuf_port(const struct rte_mbuf *m);
uint32_t fg_pktmbuf_rss_hash(const struct rte_mbuf *m);
char *fg_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
char *fg_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *fg_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int fg_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
void fg_pktmbuf_reset(struct rte_mbuf *m);
uint16_t fg_mbuf_refcnt_read(const struct rte_mbuf *m);
void fg_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value);
void fg_prefetch0(const void *p);

/* rings of mbufs between workers: many producers, one consumer */
struct rte_ring *fg_ring_create_mp_sc(const char *name, unsigned count, int socket_id);
void fg_ring_free(struct rte_ring *r);
unsigned fg_ring_mp_enqueue_burst(struct rte_ring *r, struct rte_mbuf **objs, unsigned n);
unsigned fg_ring_sc_dequeue_burst(struct rte_ring *r, struct rte_mbuf **objs, unsigned n);
unsigned fg_ring_count(const struct rte_ring *r);

/* DPDK's log: every message, with its level (RTE_LOG_EMERG 1 .. RTE_LOG_DEBUG 8), goes to
 * `sink` (one call per flush of the stream, normally one message). */
typedef void (*fg_log_sink_t)(uint32_t level, const char *buf, size_t len);
int fg_log_route(fg_log_sink_t sink);

#endif
