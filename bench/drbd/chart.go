package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

var configColor = map[string]string{
	"plain":             "#9e9e9e",
	"drbd-A":            "#f4a259",
	"drbd-C":            "#bc4b51",
	"mreplfs-nojournal": "#b8d8ba",
	"mreplfs-async":     "#5b8e7d",
	"mreplfs-sync":      "#3d5a80",
}

// configShort names the configurations in the legend.
var configShort = map[string]string{"plain": "plain ext4", "drbd-A": "DRBD protocol A", "drbd-C": "DRBD protocol C",
	"mreplfs-nojournal": "mreplfs, no journal (FUSE only)", "mreplfs-async": "mreplfs async", "mreplfs-sync": "mreplfs sync"}

// chart draws two grouped bar panels as SVG: throughput as a multiple of
// plain ext4 (median of per-round ratios, whiskers: range), and bytes on
// the replication link per payload byte.
func chart(byEnv map[string][][]summary, m reportMeta) string {
	const W, rowH = 980, 390
	H := 70 + rowH*len(m.Envs)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	title := fmt.Sprintf("mreplfs vs DRBD 8.4 — %d round(s), medians", m.Rounds)
	if m.Smoke {
		title += " — SMOKE RUN, not a measurement"
	}
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" text-anchor="middle">%s</text>`+"\n", W/2, html.EscapeString(title))
	var all [][]summary
	var y0 int
	panel := func(x0 int, heading string, val func(summary) (v, lo, hi float64), ref float64, refLabel string, skip func(string) bool) {
		const pw, ph = 440, 280
		top := y0 + 60
		maxV := ref
		for _, ss := range all {
			for _, s := range ss {
				if skip(s.Config) {
					continue
				}
				_, _, hi := val(s)
				v, _, _ := val(s)
				maxV = math.Max(maxV, math.Max(v, hi))
			}
		}
		maxV = niceCeil(maxV * 1.08)
		y := func(v float64) float64 { return float64(top+ph) - v/maxV*ph }
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" text-anchor="middle">%s</text>`+"\n", x0+pw/2, y0+48, html.EscapeString(heading))
		for i := 0; i <= 5; i++ {
			v := maxV * float64(i) / 5
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", x0, x0+pw, y(v), y(v))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y(v)+4, trimFloat(v))
		}
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="black" stroke-dasharray="4 3"/>`+"\n", x0, x0+pw, y(ref), y(ref))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11">%s</text>`+"\n", x0+pw, y(ref)-4, html.EscapeString(refLabel))
		groups := len(all)
		if groups == 0 {
			return
		}
		gw := float64(pw) / float64(groups)
		for gi, ss := range all {
			var shown []summary
			for _, s := range ss {
				if !skip(s.Config) {
					shown = append(shown, s)
				}
			}
			if len(shown) == 0 {
				continue
			}
			bw := (gw - 20) / float64(len(shown))
			gx := float64(x0) + gw*float64(gi) + 10
			for i, s := range shown {
				v, lo, hi := val(s)
				x := gx + bw*float64(i)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %.2f</title></rect>`+"\n",
					x+1, y(v), bw-2, float64(top+ph)-y(v), configColor[s.Config], html.EscapeString(configLabel[s.Config]), v)
				if hi > lo {
					cx := x + bw/2
					fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", cx, cx, y(lo), y(hi))
					fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", cx-3, cx+3, y(hi), y(hi))
					fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", cx-3, cx+3, y(lo), y(lo))
				}
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>`+"\n", x+bw/2, y(v)-3, trimFloat(v))
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+(gw-20)/2, top+ph+16, html.EscapeString(ss[0].Workload))
		}
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", x0, x0+pw, top+ph, top+ph)
	}
	for i, env := range m.Envs {
		all, y0 = byEnv[env], 30+rowH*i
		where := map[string]string{"uml": "two UML guests", "host": "host namespaces, no UML (no DRBD)"}[env]
		panel(60, where+": throughput × plain (per-round ratio; whiskers: range)", func(s summary) (float64, float64, float64) {
			return s.Ratio, s.RatioMin, s.RatioMax
		}, 1, "plain = 1", func(string) bool { return false })
		panel(560, where+": link bytes per payload byte", func(s summary) (float64, float64, float64) {
			return s.Wire, s.Wire, s.Wire
		}, 1.1, "goal ≤ 1.1", func(c string) bool { return c == "plain" || c == "mreplfs-nojournal" })
	}
	// legend
	x := 60
	for _, c := range m.Configs {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`, x, H-28, configColor[c])
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x+16, H-18, html.EscapeString(configShort[c]))
		x += 30 + 7*len(configShort[c])
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}
