/*
 * Reference for flowgate's IPv4 LPM benchmark: DPDK's rte_lpm (DIR-24-8) on the same prefixes
 * and lookup addresses as `cargo run --release -p flowgate-dataplane --example lpm_bench`.
 *
 *   rte_lpm_bench PREFIXES ADDRS ROUNDS [EAL args...]
 *
 * PREFIXES: lines "a.b.c.d/len nh"; ADDRS: lines with one host-order address as a decimal u32.
 * Prints one RESULT line per lookup flavour (rte_lpm_lookup, rte_lpm_lookup_bulk by 32,
 * rte_lpm_lookupx4), best of ROUNDS, with the same checksum as the Rust side: the sum of
 * (next hop + 1) over all lookups, misses counting 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_lpm.h>

#define BATCH 32

struct route {
	uint32_t ip;
	uint8_t depth;
	uint32_t nh;
};

static void die(const char *what)
{
	fprintf(stderr, "rte_lpm_bench: %s\n", what);
	exit(1);
}

static struct route *read_routes(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot open prefixes file");
	size_t cap = 1 << 20, len = 0;
	struct route *r = malloc(cap * sizeof(*r));
	char addr[64];
	unsigned depth, nh;
	while (fscanf(f, "%63[0-9.]/%u %u\n", addr, &depth, &nh) == 3) {
		struct in_addr a;
		if (inet_pton(AF_INET, addr, &a) != 1 || depth > 32)
			die("bad prefix line");
		if (len == cap)
			r = realloc(r, (cap *= 2) * sizeof(*r));
		r[len].ip = ntohl(a.s_addr);
		r[len].depth = (uint8_t)depth;
		r[len].nh = nh;
		len++;
	}
	fclose(f);
	*n = len;
	return r;
}

static uint32_t *read_addrs(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot open addresses file");
	size_t cap = 1 << 20, len = 0;
	uint32_t *a = malloc(cap * sizeof(*a));
	unsigned long v;
	while (fscanf(f, "%lu\n", &v) == 1) {
		if (len == cap)
			a = realloc(a, (cap *= 2) * sizeof(*a));
		a[len++] = (uint32_t)v;
	}
	fclose(f);
	*n = len;
	return a;
}

static void report(const char *name, double build_ms, double mem_mib, size_t n,
		   uint64_t best_cycles, uint64_t hz, uint64_t checksum)
{
	double secs = (double)best_cycles / (double)hz;
	printf("RESULT impl=\"%s\" build_ms=%.1f memory_mib=%.1f mlps=%.1f ns=%.2f "
	       "cycles=%.1f checksum=%" PRIu64 "\n",
	       name, build_ms, mem_mib, (double)n / secs / 1e6, secs / (double)n * 1e9,
	       (double)best_cycles / (double)n, checksum);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: rte_lpm_bench PREFIXES ADDRS ROUNDS [EAL args...]");
	const char *pfile = argv[1], *afile = argv[2];
	int rounds = atoi(argv[3]);
	if (rounds < 1)
		rounds = 1;
	/* EAL sees argv[0] followed by the EAL args. */
	argv[3] = argv[0];
	if (rte_eal_init(argc - 3, argv + 3) < 0)
		die("rte_eal_init failed");

	size_t nr, na;
	struct route *r = read_routes(pfile, &nr);
	uint32_t *addrs = read_addrs(afile, &na);

	/* One tbl8 group per prefix longer than /24 is an upper bound of what is needed. */
	uint32_t long_prefixes = 0;
	for (size_t i = 0; i < nr; i++)
		long_prefixes += r[i].depth > 24;
	struct rte_lpm_config cfg = {
		.max_rules = (uint32_t)nr + 16,
		.number_tbl8s = long_prefixes + 256,
		.flags = 0,
	};
	uint64_t hz = rte_get_tsc_hz();
	uint64_t t0 = rte_rdtsc();
	struct rte_lpm *lpm = rte_lpm_create("bench", SOCKET_ID_ANY, &cfg);
	if (!lpm)
		die("rte_lpm_create failed");
	for (size_t i = 0; i < nr; i++) {
		/* rte_lpm takes depths 1..=32: no default route (the Rust side's synthetic tables
		 * have none). */
		int rc = rte_lpm_add(lpm, r[i].ip, r[i].depth, r[i].nh);
		if (rc < 0) {
			fprintf(stderr, "rte_lpm_add line %zu depth %u: %s\n", i + 1, r[i].depth,
				strerror(-rc));
			exit(1);
		}
	}
	double build_ms = (double)(rte_rdtsc() - t0) / (double)hz * 1e3;
	/* tbl24 + tbl8 groups + rules table, as rte_lpm_create sizes them. */
	double mem = (double)RTE_LPM_TBL24_NUM_ENTRIES * sizeof(struct rte_lpm_tbl_entry) +
		     (double)cfg.number_tbl8s * RTE_LPM_TBL8_GROUP_NUM_ENTRIES *
			     sizeof(struct rte_lpm_tbl_entry) +
		     (double)cfg.max_rules * 8 /* struct rte_lpm_rule: ip, next_hop (private) */;

	uint64_t best, sum = 0;

	best = UINT64_MAX;
	for (int k = 0; k < rounds; k++) {
		uint64_t s = 0, c = rte_rdtsc();
		for (size_t i = 0; i < na; i++) {
			uint32_t nh;
			if (rte_lpm_lookup(lpm, addrs[i], &nh) == 0)
				s += (uint64_t)nh + 1;
		}
		c = rte_rdtsc() - c;
		if (c < best)
			best = c;
		sum = s;
	}
	report("rte_lpm lookup", build_ms, mem / (1 << 20), na, best, hz, sum);

	size_t nb = na / BATCH * BATCH;
	best = UINT64_MAX;
	for (int k = 0; k < rounds; k++) {
		uint64_t s = 0, c = rte_rdtsc();
		uint32_t hops[BATCH];
		for (size_t i = 0; i < nb; i += BATCH) {
			rte_lpm_lookup_bulk(lpm, addrs + i, hops, BATCH);
			for (int j = 0; j < BATCH; j++)
				if (hops[j] & RTE_LPM_LOOKUP_SUCCESS)
					s += (uint64_t)(hops[j] & 0x00ffffff) + 1;
		}
		c = rte_rdtsc() - c;
		if (c < best)
			best = c;
		sum = s;
	}
	report("rte_lpm lookup_bulk(32)", build_ms, mem / (1 << 20), nb, best, hz, sum);

	size_t n4 = na / 4 * 4;
	best = UINT64_MAX;
	for (int k = 0; k < rounds; k++) {
		uint64_t s = 0, c = rte_rdtsc();
		uint32_t hops[4];
		for (size_t i = 0; i < n4; i += 4) {
			xmm_t ip = _mm_loadu_si128((const __m128i *)(addrs + i));
			rte_lpm_lookupx4(lpm, ip, hops, UINT32_MAX);
			for (int j = 0; j < 4; j++)
				if (hops[j] != UINT32_MAX)
					s += (uint64_t)hops[j] + 1;
		}
		c = rte_rdtsc() - c;
		if (c < best)
			best = c;
		sum = s;
	}
	report("rte_lpm lookupx4", build_ms, mem / (1 << 20), n4, best, hz, sum);

	rte_lpm_free(lpm);
	free(r);
	free(addrs);
	rte_eal_cleanup();
	return 0;
}
