# gnuplot script of scripts/pktgen.sh: run in the output directory, after pktgen-report.py
# has written the *.dat files. Each plot is drawn only when its data exists.
set terminal pngcairo size 900,540 font "sans,10" noenhanced
set grid ytics
set key top right

# NDR/PDR against frame size: flowgate vs testpmd io (throughput.dat: size fg_ndr fg_pdr tp_ndr tp_pdr)
if (system("test -s throughput.dat && echo 1") eq "1") {
    set output "throughput.png"
    set title "NDR and PDR per frame size over memif (one DUT core)"
    set ylabel "Mpps"
    set xlabel "frame size (bytes, FCS included)"
    set style data histogram
    set style histogram clustered gap 1
    set style fill solid 0.8 border -1
    set boxwidth 0.9
    set yrange [0:*]
    ncols = int(system("awk '!/^#/ { print NF; exit }' throughput.dat"))
    names = system("head -1 throughput.dat | cut -c3- | cut -d' ' -f2-")
    plot for [i=2:ncols] "throughput.dat" using i:xtic(1) title word(names, i-1)
    set style data lines
    set yrange [*:*]
}

# latency CDF at fractions of the NDR (cdf_DUT_PCT.dat: us share)
cdfs = system("ls cdf_*.dat 2>/dev/null")
if (strlen(cdfs) > 0) {
    set output "latency_cdf.png"
    set title "Latency CDF at 10/50/90% of the NDR (smallest frame size)"
    set xlabel "latency (us, log scale)"
    set ylabel "share of frames"
    set logscale x
    set yrange [0:1]
    set key bottom right
    plot for [f in cdfs] f using 1:2 with steps lw 2 title f[5:strlen(f)-4]
    unset logscale x
    set yrange [*:*]
    set key top right
}

# NDR against rule count (rules.dat: rules ndr pdr)
if (system("test -s rules.dat && echo 1") eq "1") {
    set output "rules.png"
    set title "flowgate NDR and PDR against rule count (ClassBench, 64 bytes, memif)"
    set xlabel "rules (log scale)"
    set ylabel "Mpps"
    set logscale x
    set yrange [0:*]
    plot "rules.dat" using 1:2 with linespoints lw 2 pt 7 title "NDR", \
         "rules.dat" using 1:3 with linespoints lw 2 pt 5 title "PDR"
    unset logscale x
    set yrange [*:*]
}

# kernel comparison (kernel.dat: rules nft_linear nft_sets flowgate; forwarded Mpps)
if (system("test -s kernel.dat && echo 1") eq "1") {
    set output "kernel.png"
    set title "Forwarded Mpps over veth at the generator's rate: nftables router vs flowgate (af_packet)"
    set xlabel "rules"
    set ylabel "Mpps forwarded"
    set style data histogram
    set style histogram clustered gap 1
    set style fill solid 0.8 border -1
    set yrange [0:*]
    plot "kernel.dat" using 2:xtic(1) title "nftables linear", \
         "" using 3 title "nftables sets/vmaps", \
         "" using 4 title "flowgate net_af_packet"
}
