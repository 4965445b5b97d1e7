// Runs (the list), one run (live charts, guard events, Stop/Resume, summary, files) and Compare.
"use strict";

(() => {
  const { api, el, toast, fmt, when, duration, status, readUrl, onLeave, pages } = Tunesmith;
  const ACTIVE = ["queued", "running"];

  pages.runs = async (main) => {
    const body = el("tbody", { id: "runs-body" });
    const compare = el("button", { type: "button", id: "compare-selected", text: "Compare selected", onclick: () => {
      const names = [...body.querySelectorAll("input:checked")].map((c) => c.value);
      location.hash = `#/compare?runs=${names.map(encodeURIComponent).join(",")}`;
    } });
    main.append(el("h1", { text: "Runs" }), el("div", { class: "toolbar" }, compare,
      el("a", { href: "#/new", text: "+ new run" })),
      el("table", {}, el("thead", {}, el("tr", {}, ["", "run", "status", "task", "method", "metric (after)", "before", "started", "duration"]
        .map((h) => el("th", { text: h })))), body));
    let timer = null;
    async function refresh() {
      const { runs } = await api("GET", "/api/runs");
      const picked = new Set([...body.querySelectorAll("input:checked")].map((c) => c.value));
      body.replaceChildren(...runs.map((r) => el("tr", { "data-run": r.name },
        el("td", {}, el("input", { type: "checkbox", value: r.name, checked: picked.has(r.name) })),
        el("td", {}, el("a", { href: `#/run/${encodeURIComponent(r.name)}`, text: r.name })),
        el("td", {}, status(r.status)), el("td", { text: r.task || "–" }), el("td", { text: r.method || "–" }),
        el("td", { text: r.metric ? `${r.metric} ${fmt(r.value)}` : "–" }), el("td", { text: fmt(r.before) }),
        el("td", { text: when(r.started) }), el("td", { text: duration(r.duration_s) }))));
      if (!runs.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No runs yet: start one on New run." })));
      if (runs.some((r) => ACTIVE.includes(r.status))) timer = setTimeout(refresh, 2000);
    }
    onLeave(() => clearTimeout(timer));
    await refresh();
  };

  function evalSeries(rows) {
    const names = new Set();
    rows.forEach((r) => Object.entries(r).forEach(([k, v]) => { if (typeof v === "number" && !["step", "epoch"].includes(k)) names.add(k); }));
    return [...names].map((name) => ({ name, points: rows.filter((r) => typeof r[name] === "number").map((r) => [r.step, r[name]]) }));
  }

  function metricsTable(before, after) {
    const names = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])].filter((k) => typeof (after || {})[k] === "number" || typeof (before || {})[k] === "number");
    if (!names.length) return el("p", { class: "muted", text: "No evaluation yet." });
    return el("table", { id: "metrics-table" }, el("tr", {}, el("th", { text: "metric" }), el("th", { text: "before" }), el("th", { text: "after" })),
      names.map((n) => el("tr", {}, el("td", { text: n }), el("td", { text: fmt((before || {})[n]) }), el("td", { text: fmt((after || {})[n]) }))));
  }

  pages.run = async (main, [name]) => {
    const charts = { loss: Tunesmith.chart("loss"), lr: Tunesmith.chart("learning rate"), grad: Tunesmith.chart("gradient norm"), eval: Tunesmith.chart("evaluation") };
    const data = { metrics: [], eval: [], events: [] };
    const head = el("div", { class: "toolbar" });
    const events = el("tbody", { id: "guard-events" });
    const details = el("div");
    const redraw = () => {
      charts.loss.set([{ name: "train loss", points: data.metrics.filter((r) => typeof r.loss === "number").map((r) => [r.step, r.loss]) }]);
      charts.lr.set([{ name: "lr", points: data.metrics.filter((r) => typeof r.lr === "number").map((r) => [r.step, r.lr]) }]);
      charts.grad.set([{ name: "grad norm", points: data.metrics.filter((r) => typeof r.grad_norm === "number").map((r) => [r.step, r.grad_norm]) }]);
      charts.eval.set(evalSeries(data.eval));
      events.replaceChildren(...data.events.map((e) => el("tr", {}, el("td", { text: fmt(e.step) }), el("td", { text: e.event }),
        el("td", { text: JSON.stringify(Object.fromEntries(Object.entries(e).filter(([k]) => !["step", "event"].includes(k)))) }))));
      if (!data.events.length) events.append(el("tr", {}, el("td", { colspan: 3, class: "muted", text: "No guard events." })));
    };
    function header(row) {
      head.replaceChildren(el("h1", { style: "margin: 0", text: row.name }), status(row.status),
        el("span", { class: "muted", text: `${row.task || ""} · ${row.method || ""}` }),
        el("button", { type: "button", id: "stop-run", text: "Stop", disabled: !ACTIVE.includes(row.status), onclick: async () => {
          const r = await api("POST", `/api/runs/${encodeURIComponent(name)}/stop`); toast(`stop: ${r.result}`);
        } }),
        el("button", { type: "button", id: "resume-run", text: "Resume", disabled: ACTIVE.includes(row.status) || row.status === "completed", onclick: async () => {
          try { await api("POST", `/api/runs/${encodeURIComponent(name)}/resume`); toast("resuming"); pages.run(main.replaceChildren() || main, [name]); } catch (e) { toast(e.message, true); }
        } }),
        el("a", { href: `#/export?run=${encodeURIComponent(name)}`, text: "export" }));
      head.dataset.status = row.status;
    }
    async function loadDetail() {
      const d = await api("GET", `/api/runs/${encodeURIComponent(name)}`);
      header(d);
      const s = d.summary || {};
      const t = s.train || {};
      details.replaceChildren(
        el("div", { class: "row" },
          el("div", { class: "card grow" }, el("h2", { text: "Metrics" }), metricsTable(s.eval_before, s.eval_after),
            s.error ? el("p", { class: "error", text: s.error }) : null,
            t.steps ? el("p", { class: "muted", text: `${fmt(t.steps)} steps in ${duration(t.wall_s)}; ${fmt(t.samples_per_s, 2)} samples/s, ${fmt(t.tokens_per_s, 0)} tokens/s; peak RSS ${fmt(t.peak_rss_mb, 0)} MB` }) : null),
          el("div", { class: "card grow" }, el("h2", { text: "Files" }),
            el("ul", {}, d.files.map((f) => el("li", {}, el("a", { href: readUrl(`/api/runs/${encodeURIComponent(name)}/files/${f.split("/").map(encodeURIComponent).join("/")}`), target: "_blank", text: f })))))),
        d.log_tail ? el("details", { class: "section" }, el("summary", { text: "output" }), el("pre", { text: d.log_tail })) : null,
        d.config ? el("details", { class: "section" }, el("summary", { text: "config.yaml" }), el("pre", { class: "light", text: d.config })) : null);
      return d;
    }
    main.append(head, el("div", { class: "charts" }, Object.values(charts).map((c) => c.node)),
      el("h2", { text: "Guard events" }), el("table", {}, el("tr", {}, el("th", { text: "step" }), el("th", { text: "event" }), el("th", { text: "details" })), events), details);
    redraw();
    await loadDetail();
    const source = new EventSource(readUrl(`/api/runs/${encodeURIComponent(name)}/live`));
    for (const kind of ["metrics", "eval", "events"]) {
      source.addEventListener(kind, (e) => { data[kind].push(...JSON.parse(e.data)); redraw(); });
    }
    source.addEventListener("reset", (e) => { data[JSON.parse(e.data)] = []; redraw(); });
    let last = null;
    source.addEventListener("status", (e) => {
      const row = JSON.parse(e.data);
      header(row);
      if (last && last !== row.status) loadDetail();
      last = row.status;
    });
    source.addEventListener("end", () => { source.close(); loadDetail(); });
    onLeave(() => source.close());
  };

  pages.compare = async (main, _, query) => {
    const picked = (query.get("runs") || "").split(",").filter(Boolean);
    const { runs } = await api("GET", "/api/runs");
    const boxes = el("div", { class: "toolbar" }, runs.map((r) => el("label", {},
      el("input", { type: "checkbox", value: r.name, checked: picked.includes(r.name) }), ` ${r.name}`)),
      el("button", { type: "button", class: "primary", text: "Compare", onclick: () => {
        const names = [...boxes.querySelectorAll("input:checked")].map((c) => c.value);
        location.hash = `#/compare?runs=${names.map(encodeURIComponent).join(",")}`;
      } }));
    main.append(el("h1", { text: "Compare" }), boxes);
    if (!picked.length) { main.append(el("p", { class: "muted", text: "Pick two or more runs." })); return; }
    const result = await api("GET", `/api/compare?runs=${picked.map(encodeURIComponent).join(",")}`);
    const metricNames = [...new Set(result.runs.flatMap((r) => Object.keys(r.eval_after).filter((k) => typeof r.eval_after[k] === "number")))];
    const table = el("table", { id: "compare-table" },
      el("tr", {}, ["run", "status", "method", "trainable params", "steps", "train time", "tokens/s", ...metricNames].map((h) => el("th", { text: h }))),
      result.runs.map((r) => el("tr", { "data-run": r.name }, el("td", { text: r.name }), el("td", {}, status(r.status)), el("td", { text: r.method || "–" }),
        el("td", { text: fmt(r.trainable_params) }), el("td", { text: fmt(r.train.steps) }), el("td", { text: duration(r.train.wall_s) }),
        el("td", { text: fmt(r.train.tokens_per_s, 0) }), metricNames.map((m) => el("td", { text: fmt(r.eval_after[m]) })))));
    const loss = Tunesmith.chart("train loss");
    loss.set(result.runs.map((r) => ({ name: r.name, points: r.loss })));
    const headline = result.runs[0].metric;
    const evalChart = Tunesmith.chart(`eval ${headline || ""}`);
    evalChart.set(result.runs.map((r) => ({ name: r.name, points: r.eval.filter((e) => typeof e[r.metric] === "number").map((e) => [e.step, e[r.metric]]) })));
    main.append(table, el("div", { class: "charts", style: "margin-top: 12px" }, loss.node, evalChart.node));
  };
})();
