#!/usr/bin/env python3
"""Turn the JSON records of scripts/pktgen.sh (flowgate-gen output) into report.md on stdout
and the gnuplot data files next to them (OUT/*.dat).

Usage: pktgen-report.py OUT_DIR
"""
import json
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name)
    recs = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                recs.append(json.loads(line))
    return recs


def mpps(x):
    return "-" if x is None else f"{x / 1e6:.3f}"


def rate(r, key):
    v = r.get(key)
    return None if not v else v.get("offered_pps")


def limited(r, key):
    """A mark for a rate the generator could not offer in full (the DUT may do more)."""
    v = r.get(key)
    return " (gen-limited)" if v and v.get("generator_limited") else ""


def us(ns):
    return "-" if ns is None else f"{ns / 1000:.1f}"


def find(obj, key):
    """The first value under `key` anywhere in a JSON document."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            f = find(v, key)
            if f is not None:
                return f
    elif isinstance(obj, list):
        for v in obj:
            f = find(v, key)
            if f is not None:
                return f
    return None


def dut_drops(counters):
    """flowgate's drops by reason and NIC imissed per port, from a flowctl stats difference."""
    if not counters:
        return "-", "-"
    drops = find(counters, "drops")
    parts = []
    if isinstance(drops, list):
        parts = [f"{k} {v}" for k, v in drops if isinstance(v, (int, float)) and v]
    elif isinstance(drops, dict):
        parts = [f"{k} {v}" for k, v in drops.items() if isinstance(v, (int, float)) and v]
    ports = find(counters, "ports") or []
    missed = []
    for p in ports if isinstance(ports, list) else []:
        nic = p.get("nic") or {}
        missed.append(f"{p.get('name', '?')} {nic.get('imissed', 0)}")
    return (", ".join(parts) or "0"), (", ".join(missed) or "-")


def size_key(s):
    return (1, 0) if s == "imix" else (0, int(s))


meta = open(os.path.join(out, "meta.md")).read() if os.path.exists(os.path.join(out, "meta.md")) else ""
print("# flowgate throughput lab (scripts/pktgen.sh)\n")
print(meta)

# ---- memif: NDR/PDR per frame size ----------------------------------------------------------
memif = load("memif.jsonl")
results = [r for r in memif if r["record"] == "result"]
if results:
    duts = []
    for r in results:
        if r["dut"] not in duts:
            duts.append(r["dut"])
    sizes = sorted({r["size"] for r in results}, key=size_key)
    by = {(r["dut"], r["size"]): r for r in results}
    print("## NDR and PDR per frame size (memif, one DUT core)\n")
    print("Mpps = frames/s offered at the highest rate with 0 loss (NDR) and <= "
          f"{results[0]['pdr_loss'] * 100:g}% loss (PDR); top = the generator's own rate "
          "(a DUT at the top is generator-bound).\n")
    head = "| size | mean frame B |"
    for d in duts:
        head += f" {d} NDR Mpps | {d} PDR Mpps | {d} NDR Gb/s (L1) | {d} top Mpps |"
    if len(duts) >= 2:
        head += f" NDR {duts[0]}/{duts[1]} |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    dat = open(os.path.join(out, "throughput.dat"), "w")
    dat.write("# size " + " ".join(f"{d}_ndr {d}_pdr" for d in duts) + "\n")
    for s in sizes:
        row = f"| {s} |"
        first = next((by[(d, s)] for d in duts if (d, s) in by), None)
        row += f" {first['mean_frame']:.1f} |" if first else " - |"
        cols = []
        for d in duts:
            r = by.get((d, s))
            if not r:
                row += " - | - | - | - |"
                cols += ["0", "0"]
                continue
            ndr, pdr = rate(r, "ndr"), rate(r, "pdr")
            gbps = (r["ndr"] or {}).get("l1_mbps")
            row += f" {mpps(ndr)}{limited(r, 'ndr')} | {mpps(pdr)}{limited(r, 'pdr')} | {'-' if gbps is None else f'{gbps / 1000:.2f}'} | {mpps(r['top_pps'])} |"
            cols += [f"{(ndr or 0) / 1e6:.4f}", f"{(pdr or 0) / 1e6:.4f}"]
        if len(duts) >= 2:
            a, b = by.get((duts[0], s)), by.get((duts[1], s))
            na, nb = (a and rate(a, "ndr")), (b and rate(b, "ndr"))
            row += f" {na / nb:.2f} |" if na and nb else " - |"
        print(row)
        dat.write(f"{s} " + " ".join(cols) + "\n")
    dat.close()

    print("\n## Latency at fractions of the NDR (memif)\n")
    print("| DUT | size | % of NDR | offered Mpps | loss % | min us | mean us | p50 us | p90 us | p99 us | p99.9 us | max us |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for l in r.get("latency", []):
            lat = l["latency"]
            print(f"| {r['dut']} | {r['size']} | {l['fraction'] * 100:g} | {mpps(l['offered_pps'])} | "
                  f"{l['loss_ratio'] * 100:.3f} | {us(lat.get('min_ns'))} | {us(lat.get('mean_ns'))} | "
                  f"{us(lat.get('p50_ns'))} | {us(lat.get('p90_ns'))} | {us(lat.get('p99_ns'))} | "
                  f"{us(lat.get('p999_ns'))} | {us(lat.get('max_ns'))} |")
            if r["size"] == sizes[0] and lat.get("cdf"):
                name = f"cdf_{r['dut']}_{int(l['fraction'] * 100)}.dat"
                with open(os.path.join(out, name), "w") as f:
                    for ns, frac in lat["cdf"]:
                        f.write(f"{ns / 1000:.4f} {frac:.6f}\n")

    print("\n## Every trial (memif)\n")
    print("flowgate's counters are the difference of `flowctl --json stats` around the trial: "
          "drops by reason (non-zero only) and NIC `imissed` per port.\n")
    print("| DUT | size | phase | target Mpps | offered Mpps | received | offered | loss % | TX refused | late | flowgate drops | imissed |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for t in memif:
        if t["record"] != "trial":
            continue
        drops, missed = dut_drops(t.get("dut_counters"))
        print(f"| {t['dut']} | {t['size']} | {t['phase']} | {mpps(t['target_pps'] or None)} | "
              f"{mpps(t['offered_pps'])} | {t['received']} | {t['offered']} | {t['loss_ratio'] * 100:.3f} | "
              f"{t['tx_refused']} | {t['late']} | {drops} | {missed} |")

# ---- rule count -----------------------------------------------------------------------------
rules = [r for r in load("rules.jsonl") if r["record"] == "result"]
if rules:
    print("\n## flowgate NDR against rule count (memif, 64 bytes)\n")
    print("| rules | NDR Mpps | PDR Mpps | generator top Mpps | p50 us at 50% NDR | p99 us at 50% NDR |")
    print("|---:|---:|---:|---:|---:|---:|")
    with open(os.path.join(out, "rules.dat"), "w") as dat:
        for r in rules:
            n = int(r["dut"].rsplit("-", 1)[1])
            lat = (r.get("latency") or [{}])[0].get("latency", {})
            print(f"| {n} | {mpps(rate(r, 'ndr'))}{limited(r, 'ndr')} | {mpps(rate(r, 'pdr'))}{limited(r, 'pdr')} | {mpps(r['top_pps'])} | "
                  f"{us(lat.get('p50_ns'))} | {us(lat.get('p99_ns'))} |")
            dat.write(f"{n} {(rate(r, 'ndr') or 0) / 1e6:.4f} {(rate(r, 'pdr') or 0) / 1e6:.4f}\n")

# ---- kernel comparison ----------------------------------------------------------------------
kernel = load("kernel.jsonl")
kres = [r for r in kernel if r["record"] == "result"]
if kres:
    top = {t["dut"]: t for t in kernel if t["record"] == "trial" and t["phase"] == "top"}
    print("\n## Kernel comparison: nftables router vs flowgate on net_af_packet (veth, 64 bytes)\n")
    print("As fast as the generator goes (the `top` trial): offered and forwarded Mpps and loss; "
          "then the NDR/PDR search. Ratios are flowgate / nftables, from the same run.\n")
    counts = sorted({int(r["dut"].rsplit("-", 1)[1]) for r in kres})
    by = {r["dut"]: r for r in kres}
    print("| rules | DUT | offered Mpps | forwarded Mpps | loss % | NDR Mpps | PDR Mpps |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    with open(os.path.join(out, "kernel.dat"), "w") as dat:
        dat.write("# rules nft_linear nft_sets flowgate (forwarded Mpps at the top rate)\n")
        for n in counts:
            fwd = {}
            for kind in ["nft-linear", "nft-sets", "flowgate-afpacket"]:
                name = f"{kind}-{n}"
                r, t = by.get(name), top.get(name)
                if not r:
                    continue
                fwd[kind] = t["received_pps"] if t else None
                loss = "-" if not t else f"{t['loss_ratio'] * 100:.2f}"
                print(f"| {n} | {kind} | {mpps(t and t['offered_pps'])} | {mpps(fwd[kind])} | "
                      f"{loss} | {mpps(rate(r, 'ndr'))} | {mpps(rate(r, 'pdr'))} |")
            dat.write(f"{n} " + " ".join(f"{(fwd.get(k) or 0) / 1e6:.4f}"
                                         for k in ["nft-linear", "nft-sets", "flowgate-afpacket"]) + "\n")
    print("\n| rules | forwarded flowgate/nft linear | flowgate/nft sets | NDR flowgate/nft linear | NDR flowgate/nft sets |")
    print("|---:|---:|---:|---:|---:|")
    for n in counts:
        def ratio(a, b):
            return f"{a / b:.2f}" if a and b else "-"
        f, l, s = (top.get(f"{k}-{n}") for k in ["flowgate-afpacket", "nft-linear", "nft-sets"])
        fr, lr, sr = (by.get(f"{k}-{n}") for k in ["flowgate-afpacket", "nft-linear", "nft-sets"])
        g = lambda t: t and t["received_pps"]
        print(f"| {n} | {ratio(g(f), g(l))} | {ratio(g(f), g(s))} | "
              f"{ratio(fr and rate(fr, 'ndr'), lr and rate(lr, 'ndr'))} | "
              f"{ratio(fr and rate(fr, 'ndr'), sr and rate(sr, 'ndr'))} |")
