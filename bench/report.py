#!/usr/bin/env python3
"""Turns the raw figures of one bench/run.sh run into JSON and a markdown table.

    report.py RESULTS_TSV OUT_JSON OUT_MD

RESULTS_TSV holds one "dotted.key<TAB>value" a line, written by run.sh as it measures.
Keys: meta.*, A.*, B.*, C.* (baselines A, B, C), memory.*, embedded.* and nats.* (switchyard
with that spool), match.* (criterion). Targets are checked here, against the durable (embedded)
spool; the memory spool is checked against the same thresholds for reference; the nats spool's
figures are its capacity on this machine, without a verdict.
"""

import json
import sys

MB = 1024 * 1024
# The spool columns, in table order.
SPOOLS = ("memory", "embedded", "nats")


def load(path):
    flat = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or "\t" not in line:
                continue
            key, value = line.split("\t", 1)
            if key.endswith(".warn"):
                flat.setdefault(key, [])
                flat[key].append(value)
                continue
            try:
                number = float(value)
                flat[key] = int(number) if number.is_integer() else number
            except ValueError:
                flat[key] = value
    return flat


def nest(flat):
    tree = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return tree


def num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def rate(x):
    return f"{x:,.0f}" if num(x) else "—"


def ms(us):
    return f"{us / 1000:.2f} ms" if num(us) else "—"


def mb(kb):
    return f"{kb / 1024:.1f} MB" if num(kb) else "—"


def ratio(value, base):
    if num(value) and num(base) and base > 0:
        return value / base
    return None


class Report:
    def __init__(self, flat):
        self.f = flat
        self.targets = []  # (figure, target, memory verdict, embedded verdict)
        self.rows = []

    def get(self, key):
        return self.f.get(key)

    def skipped(self, spool):
        return self.f.get(f"{spool}.skipped")

    def cell(self, spool, key, fmt, base=None, base_name=""):
        reason = self.skipped(spool)
        if reason:
            return "skipped"
        value = self.get(f"{spool}.{key}")
        note = self.get(f"{spool}.{key.rsplit('.', 1)[0]}.note")
        if not num(value):
            return "— (see notes)" if note else "—"
        text = fmt(value)
        r = ratio(value, base)
        if r is not None:
            text += f" ({r:.2f}× {base_name})"
        return text

    def verdict(self, spool, ok):
        if self.skipped(spool):
            return "n/a (skipped)"
        if ok is None:
            return "n/a (not measured)"
        return "PASS" if ok else "MISS"

    def result(self, check):
        emb = self.verdict("embedded", check("embedded"))
        mem = self.verdict("memory", check("memory"))
        return f"embedded {emb}; memory {mem} (ref.)"

    def row(self, figure, baseline, key, fmt, base=None, base_name="", target="", check=None):
        cells = [self.cell(s, key, fmt, base, base_name) for s in SPOOLS]
        result = self.result(check) if check else ""
        self.rows.append([figure, baseline, *cells, target, result])
        if check:
            self.targets.append(
                {
                    "figure": figure,
                    "target": target,
                    "embedded": self.verdict("embedded", check("embedded")),
                    "memory": self.verdict("memory", check("memory")),
                }
            )

    def build(self):
        g = self.get
        for mode, label in (("binary", "binary mode"), ("structured", "structured mode")):
            base = g(f"A.ingest.{mode}.rate")

            def check(spool, mode=mode, base=base):
                r = ratio(g(f"{spool}.ingest.{mode}.rate"), base)
                return None if r is None else r >= 0.70

            self.row(
                f"Ingest, 1 event/request, {label} (events/s)",
                f"A: {rate(base)}",
                f"ingest.{mode}.rate",
                rate,
                base,
                "A",
                "≥ 0.70× A",
                check,
            )
        plain = g("memory.ingest.binary.rate")
        tls = g("memory.ingest.binary_tls.rate")
        r = ratio(tls, plain)
        if num(tls):
            cell = rate(tls) + (f" ({r:.2f}× plain)" if r is not None else "")
        else:
            cell = "— (see notes)" if g("memory.ingest.binary_tls.note") else "—"
        self.rows.append(["Ingest over TLS, 1 event/request, binary mode (events/s)",
                          f"plain (memory): {rate(plain)}", cell, "not measured",
                          "not measured", "", ""])
        base = g("A.ingest.batch.rate")

        def batch_check(spool):
            r = ratio(g(f"{spool}.ingest.batch.rate"), base)
            return None if r is None else r >= 0.90

        figure = "Ingest, batches of 100 (events/s = req/s × 100)"
        self.row(figure, f"A: {rate(base)}", "ingest.batch.rate", rate, base, "A",
                 "≥ 0.90× A's batches", batch_check)
        for column, spool in enumerate(SPOOLS, start=2):
            r = ratio(g(f"{spool}.ingest.batch.rate"), g(f"{spool}.ingest.binary.rate"))
            if r is not None and not self.skipped(spool):
                self.rows[-1][column] += f", {r:.1f}× single"

        def lat(prefix):
            def fmt_cell(spool):
                if spool != "A" and self.skipped(spool):
                    return "skipped"
                p50 = g(f"{spool}.{prefix}.p50_us")
                p99 = g(f"{spool}.{prefix}.p99_us")
                note = g(f"{spool}.{prefix}.note")
                if not num(p99):
                    return "— (see notes)" if note else "—"
                at = g(f"{spool}.{prefix}.rate")
                suffix = f" @ {rate(at)} req/s" if num(at) else ""
                return f"p50 {ms(p50)}, p99 {ms(p99)}{suffix}"

            return fmt_cell

        cell = lat("latency.max")
        self.rows.append(["Ack latency at max rate, binary (wrk)", "A: " + cell("A"),
                          *(cell(s) for s in SPOOLS), "", ""])
        cell = lat("latency.half")

        def half_check(spool):
            p99 = g(f"{spool}.latency.half.p99_us")
            return None if not num(p99) else p99 <= 2000

        tool = g("meta.latency_tool") or "none"
        self.rows.append([f"Ack latency at half the max rate, binary ({tool})", "A: " + cell("A"),
                          *(cell(s) for s in SPOOLS), "p99 ≤ 2 ms", self.result(half_check)])
        self.targets.append({"figure": "Ack p99 at half the max rate", "target": "≤ 2 ms",
                             "embedded": self.verdict("embedded", half_check("embedded")),
                             "memory": self.verdict("memory", half_check("memory"))})
        base = g("B.e2e.rate")

        def e2e_check(spool):
            r = ratio(g(f"{spool}.e2e.rate"), base)
            return None if r is None else r >= 0.70

        self.row("End to end, delivered to a local HTTP sink (events/s)", f"B: {rate(base)}",
                 "e2e.rate", rate, base, "B", "≥ 0.70× B", e2e_check)
        self.e2e_costs()
        self.durable_baselines()
        self.paired()
        self.baseline_c()
        self.isolation()
        self.history()
        self.retention()
        self.transform()

        def rss_idle_check(spool):
            kb = g(f"{spool}.rss_idle_kb")
            return None if not num(kb) else kb <= 30 * 1024

        self.row("RSS idle after start", f"A: {mb(g('A.rss_idle_kb'))}, B: {mb(g('B.rss_idle_kb'))}",
                 "rss_idle_kb", mb, target="≤ 30 MB", check=rss_idle_check)
        backlog = g("meta.backlog")
        full = num(backlog) and backlog >= 1_000_000

        def rss_backlog_check(spool):
            kb = g(f"{spool}.backlog.rss_kb")
            return None if not num(kb) else kb <= 64 * 1024

        target = "≤ 64 MB at 1M" + ("" if full else f" (measured at {rate(backlog)})")
        self.row(f"RSS with {rate(backlog)} events backlogged behind a stalled sink, 1 s "
                 "after the last batch (10 s later)", "",
                 "backlog.rss_kb", mb, target=target, check=rss_backlog_check)
        for column, spool in enumerate(SPOOLS, start=2):
            settled = g(f"{spool}.backlog.rss_settled_kb")
            if num(settled) and not self.skipped(spool):
                self.rows[-1][column] += f" ({mb(settled)})"
        self.row("Store bytes per queued event (spool directory growth / events)", "",
                 "backlog.store_bytes_per_event", lambda b: f"{b:,.0f} B")

    def e2e_costs(self):
        """What the end-to-end figure cost the server: events/s it acknowledged while it
        delivered, and its user and system CPU time per delivered event (reported)."""
        g = self.get

        def costs(who):
            accepted = g(f"{who}.e2e.accepted")
            user = g(f"{who}.e2e.user_us_per_event")
            system = g(f"{who}.e2e.sys_us_per_event")
            if not (num(accepted) and num(user) and num(system)):
                return "skipped" if self.skipped(who) else "—"
            return f"{rate(accepted)} acked; {user:.1f} + {system:.1f} µs"

        self.rows.append(["End to end: acknowledged events/s; server CPU per delivered event "
                          "(user + system)", "B: " + costs("B"),
                          *(costs(s) for s in SPOOLS), "reported", ""])

    def durable_baselines(self):
        """End to end to a file sink against baseline B-file (target ≥ 0.65×, embedded spool
        only) and D-file, and baseline D, a bare durable forwarder, against B (reported)."""
        g = self.get
        figure = "End to end, delivered to a `file` sink (events/s)"
        target = "≥ 0.65× B-file"
        base = g("Bfile.e2e.rate")
        value = g("embedded.file.e2e.rate")
        r = ratio(value, base)
        if self.skipped("embedded"):
            cell = "skipped"
        elif r is None:
            cell = "—"
        else:
            cell = f"{rate(value)} ({r:.2f}× B-file"
            d_file = ratio(value, g("Dfile.e2e.rate"))
            cell += ")" if d_file is None else f", {d_file:.2f}× D-file)"
        baseline = f"B-file: {rate(base)}"
        if num(g("Dfile.e2e.rate")):
            d_ratio = ratio(g("Dfile.e2e.rate"), base)
            baseline += f"; D-file: {rate(g('Dfile.e2e.rate'))}"
            baseline += "" if d_ratio is None else f" ({d_ratio:.2f}× B-file)"
        self.embedded_row(figure, baseline, cell, target, r, 0.65)
        d = g("D.e2e.rate")
        if not num(d):
            return
        d_ratio = ratio(d, g("B.e2e.rate"))
        baseline = f"D: {rate(d)}" + ("" if d_ratio is None else f" ({d_ratio:.2f}× B)")
        user, system = g("D.e2e.user_us_per_event"), g("D.e2e.sys_us_per_event")
        if num(user) and num(system):
            baseline += f"; {user:.1f} + {system:.1f} µs"

        def against(spool):
            if self.skipped(spool):
                return "skipped"
            r = ratio(g(f"{spool}.e2e.rate"), d)
            return "—" if r is None else f"{r:.2f}× D"

        self.rows.append(["Bare durable forwarder (baseline D): end to end (events/s); CPU "
                          "per delivered event", baseline, against("memory"),
                          against("embedded"), "", "reported", ""])

    def baseline_c(self):
        """Baseline C, a bare JetStream queue (measured only with a NATS server): its own
        figures against A and B, and the nats spool's against it (reported)."""
        g = self.get
        ingest, e2e = g("C.ingest.binary.rate"), g("C.e2e.rate")
        if not (num(ingest) and num(e2e)):
            return

        def against(value, base, name):
            r = ratio(value, base)
            return rate(value) + ("" if r is None else f" ({r:.2f}× {name})")

        baseline = (f"C: {against(ingest, g('A.ingest.binary.rate'), 'A')}; "
                    f"{against(e2e, g('B.e2e.rate'), 'B')}")
        if self.skipped("nats"):
            nats = "skipped"
        else:
            cells = [ratio(g(f"nats.{key}"), base)
                     for key, base in (("ingest.binary.rate", ingest), ("e2e.rate", e2e))]
            nats = "; ".join("—" if r is None else f"{r:.2f}× C" for r in cells)
        self.rows.append(["Bare JetStream queue (baseline C): ingest, 1 event/request, "
                          "binary; end to end (events/s)", baseline, "", "", nats,
                          "reported", ""])

    def paired(self):
        """The end-to-end figures again from alternating rounds (bench/e2e_ab.sh): B, D and
        the embedded spool a minute apart, each ratio the median of the rounds' own ratios."""
        g = self.get
        rounds = g("paired.rounds")
        if not num(rounds):
            return
        for suffix, sink, least in (("", "a local HTTP sink", 0.70), ("file", "a `file` sink", 0.65)):
            b_name = "B-file" if suffix else "B"
            d_name = "D-file" if suffix else "D"
            b, d = g(f"paired.B{suffix}.rate"), g(f"paired.D{suffix}.rate")
            sy = f"paired.sy0{suffix}"
            r = g(f"{sy}.vs_b")
            baseline = f"{b_name}: {rate(b)}; {d_name}: {rate(d)}"
            if num(g(f"paired.D{suffix}.vs_b")):
                baseline += f" ({g(f'paired.D{suffix}.vs_b'):.2f}× {b_name})"
            if self.skipped("embedded"):
                cell = "skipped"
            elif not num(r):
                cell = "—"
            else:
                cell = (f"{rate(g(f'{sy}.rate'))} ({r:.2f}× {b_name}, rounds "
                        f"{g(f'{sy}.vs_b_min'):.2f}–{g(f'{sy}.vs_b_max'):.2f}; "
                        f"{g(f'{sy}.vs_d'):.2f}× {d_name})")
            figure = (f"End to end to {sink}, {rounds:.0f} alternating rounds (events/s; "
                      f"median of the rounds' ratios)")
            self.embedded_row(figure, baseline, cell, f"≥ {least:.2f}× {b_name}",
                              r if num(r) else None, least)

    def isolation(self):
        """The counting sink's delivered rate beside a dead and a 5 s sink, against it alone
        (embedded spool only, both measured in this run)."""
        g = self.get
        figure = "Isolation: healthy sink beside a dead and a 5 s sink (events/s)"
        target = "≥ 0.90× alone"
        alone = g("embedded.isolation.alone.rate")
        mixed = g("embedded.isolation.mixed.rate")
        r = ratio(mixed, alone)
        if self.skipped("embedded"):
            cell = "skipped"
        elif r is None:
            cell = "— (see notes)" if g("embedded.isolation.note") else "—"
        else:
            cell = f"{rate(mixed)} beside them ({r:.2f}× alone)"
        self.embedded_row(figure, f"alone (embedded): {rate(alone)}", cell, target, r, 0.90)

    def embedded_row(self, figure, baseline, cell, target, r, least):
        """A figure measured on the embedded spool only, whose ratio `r` to its baseline
        must be at least `least`."""
        emb = self.verdict("embedded", None if r is None else r >= least)
        self.rows.append([figure, baseline, "not measured", cell, "not measured", target,
                          f"embedded {emb}"])
        self.targets.append({"figure": figure, "target": target, "embedded": emb,
                             "memory": "n/a (not measured)",
                             "ratio": None if r is None else round(r, 3)})

    def history(self):
        """The end-to-end rate with delivery history on against off."""
        self.pair("history", "End to end with delivery history on (events/s)", "off", 0.90)

    def retention(self):
        """The end-to-end rate with delivered events retained for replay against off
        (reported, no target)."""
        self.pair("retention", "End to end with spool.retain_delivered (events/s)", "off", None)

    def transform(self):
        """The end-to-end rate with a reshaping `transform` against no program (reported, no
        target)."""
        self.pair("transform", "End to end with a transform program (events/s)",
                  "no program", None)

    def pair(self, key, figure, off_name, least):
        """A configuration against another, both measured in this run on the embedded spool:
        `embedded.KEY.{on,off}`; `least` is the ratio on/off the target asks for, if any."""
        g = self.get
        target = f"≥ {least:.2f}× {off_name}" if least else "reported"
        on = g(f"embedded.{key}.on.rate")
        off = g(f"embedded.{key}.off.rate")
        r = ratio(on, off)
        if self.skipped("embedded"):
            cell = "skipped"
        elif r is None:
            cell = "— (see notes)" if g(f"embedded.{key}.note") else "—"
        else:
            cell = f"{rate(on)} ({r:.2f}× {off_name})"
            cpu_on = g(f"embedded.{key}.on.cpu_us_per_event")
            cpu_off = g(f"embedded.{key}.off.cpu_us_per_event")
            if num(cpu_on) and num(cpu_off):
                cell += f"; CPU {cpu_on:.1f} µs/event, {cpu_off:.1f} {off_name}"
        ok = None if r is None or least is None else r >= least
        emb = self.verdict("embedded", ok) if least else "reported"
        self.rows.append([figure, f"{off_name} (embedded): {rate(off)}", "not measured", cell,
                          "not measured", target, f"embedded {emb}"])
        self.targets.append({"figure": figure, "target": target, "embedded": emb,
                             "memory": "n/a (not measured)",
                             "ratio": None if r is None else round(r, 3)})

    def markdown(self):
        g = self.get
        out = []
        mode = g("meta.mode")
        out.append(f"# switchyard benchmark — {mode} mode")
        out.append("")
        out.append("| machine | |")
        out.append("|---|---|")
        for key, label in (
            ("meta.date", "date"),
            ("meta.nproc", "nproc"),
            ("meta.cpu_model", "CPU"),
            ("meta.kernel", "kernel"),
            ("meta.load_start", "load average at start"),
            ("meta.load_end", "load average at end"),
            ("meta.pinning", "pinning"),
            ("meta.runs", "runs per figure (median)"),
            ("meta.duration", "seconds per run"),
            ("meta.connections", "connections"),
            ("meta.load_tool", "load generator"),
            ("meta.latency_tool", "fixed-rate latency tool"),
            ("meta.commit", "commit"),
        ):
            out.append(f"| {label} | {g(key)} |")
        out.append("")
        out.append("| Figure | Baseline | switchyard, memory spool | switchyard, embedded spool "
                   "| switchyard, nats spool | Target | Result |")
        out.append("|---|---|---|---|---|---|---|")
        for row in self.rows:
            out.append("| " + " | ".join(str(c) for c in row) + " |")
        out.append("")
        out.append("Route matching, 10,000 routes, one core (criterion). `data_*`: the same table "
                   "with its 4 catch-all routes filtering on `data.priority` instead of `subject`, "
                   "so every event's JSON data is parsed once:")
        out.append("")
        out.append("| event | events/s | Target | Result |")
        out.append("|---|---|---|---|")
        names = [k.split(".")[1] for k in self.f if k.startswith("match.")
                 and k.endswith(".events_per_s")]
        for name in names:
            eps = g(f"match.{name}.events_per_s")
            target = result = ""
            if name == "mixed":
                target = "≥ 1,000,000"
                result = "PASS" if num(eps) and eps >= 1_000_000 else "MISS"
                self.targets.append({"figure": "Route matching, mixed events, 10k routes",
                                     "target": target, "embedded": result, "memory": result})
            out.append(f"| {name} | {rate(eps)} | {target} | {result} |")
        if not names:
            out.append(f"| — | {g('match.note') or 'not measured'} | | |")
        out.append("")
        out.append("Transformations, one core (criterion): a delivery's per-event work to a "
                   "structured-mode sink with no `transform`, a renaming and a reshaping program:")
        out.append("")
        out.append("| program | events/s | vs none |")
        out.append("|---|---|---|")
        none = g("transform.none.events_per_s")
        programs = [k.split(".")[1] for k in self.f if k.startswith("transform.")
                    and k.endswith(".events_per_s")]
        for name in programs:
            eps = g(f"transform.{name}.events_per_s")
            ratio = f"{eps / none:.2f}×" if num(eps) and num(none) and none else ""
            out.append(f"| {name} | {rate(eps)} | {ratio} |")
        if not programs:
            out.append(f"| — | {g('transform.note') or 'not measured'} | |")
        out.append("")
        notes = []
        for spool in SPOOLS:
            if self.skipped(spool):
                notes.append(f"- {spool} spool skipped: {self.skipped(spool)}")
        by_note = {}
        for key, value in self.f.items():
            if key.endswith(".note") and not key.startswith(("match.", "transform.")):
                who, _, what = key[:-5].partition(".")
                by_note.setdefault((what, value), []).append(who)
        for (what, value), who in by_note.items():
            notes.append(f"- {what.replace('.', ' ')} ({', '.join(who)}): {value}")
        for key, values in sorted((k, v) for k, v in self.f.items() if k.endswith(".warn")):
            for v in values:
                notes.append(f"- warning ({key[:-5]}): {v}")
        alone_acc = g("embedded.isolation.alone.accepted")
        mixed_acc = g("embedded.isolation.mixed.accepted")
        if num(alone_acc) and num(mixed_acc):
            notes.append(
                "- isolation: one route fans every event out to a dead sink (connection "
                "refused), a sink answering after 5 s (both retry every 1 s, concurrency 16, "
                "circuit breaker after 5 failures for 30 s) "
                "and the counting sink (concurrency 64); events acknowledged/s "
                f"{rate(alone_acc)} alone, {rate(mixed_acc)} with the fan-out; the 5 s sink "
                f"received {rate(g('embedded.isolation.mixed.slow_requests'))} requests"
            )
        if notes:
            out.append("Notes:")
            out.append("")
            out.extend(notes)
            out.append("")
        out.append(
            "Ratios compare figures taken in this run: ingest against baseline A (bare axum, "
            "JSON parsed into `serde_json::Value`, same payload), end to end against baseline B "
            "(bare forwarder, same hyper-util pooled client). Ingest figures route every event "
            "to an http sink that has stalled (concurrency 1, no answer), so they count accepting "
            "and storing only, as baseline A counts accepting and parsing only. Targets are "
            "stated for the durable (embedded) spool; the memory spool is checked against the "
            "same thresholds for reference. The nats spool keeps its queue in the local NATS "
            "JetStream server (file storage), which runs unpinned and shares the machine: its "
            "column is the capacity of one instance here, without a verdict."
        )
        if mode == "quick":
            out.append("")
            out.append("Quick mode: one short run per figure and a small backlog; a check that the "
                       "benchmark runs, not a measurement.")
        return "\n".join(out) + "\n"


def main():
    flat = load(sys.argv[1])
    report = Report(flat)
    report.build()
    md = report.markdown()
    tree = nest({k: v for k, v in flat.items()})
    tree["targets"] = report.targets
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(tree, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(sys.argv[3], "w", encoding="utf-8") as f:
        f.write(md)


if __name__ == "__main__":
    main()
