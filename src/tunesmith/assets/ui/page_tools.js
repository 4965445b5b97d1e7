// Playground (streamed side-by-side chat), Review (blind A/B votes and results), Export.
"use strict";

(() => {
  const { api, el, toast, fmt, status, onLeave, pages, TOKEN } = Tunesmith;

  // ---- Playground ----------------------------------------------------------------------------
  async function stream(model, messages, settings, onText) {
    const response = await fetch("/serve/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${TOKEN}`, "X-Tunesmith-Token": TOKEN },
      body: JSON.stringify({ model, messages, stream: true, ...settings }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || (typeof body.detail === "string" ? body.detail : response.statusText));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const payload = line.slice(5).trim();
        if (payload === "[DONE]") return;
        const chunk = JSON.parse(payload);
        const delta = chunk.choices && chunk.choices[0].delta;
        if (delta && delta.content) onText(delta.content);
      }
    }
  }

  pages.play = async (main) => {
    const models = await api("GET", "/api/playground/models");
    const options = [
      ...models.runs.map((r) => ({ label: `${r.run} (${r.method})`, load: { run: r.run } })),
      ...models.runs.map((r) => ({ label: `base of ${r.run}`, load: { base_of: r.run } })),
    ];
    if (!options.length) { main.append(el("h1", { text: "Playground" }), el("p", { class: "muted", text: "No finished chat run yet: train a causal_lm run first." })); return; }
    const picks = el("div", { class: "toolbar", id: "play-models" }, options.map((o, i) => el("label", {},
      el("input", { type: "checkbox", value: String(i), checked: i === 0 || (o.load.base_of && o.load.base_of === options[0].load.run) }), ` ${o.label}`)));
    const system = el("textarea", { id: "play-system", rows: 2, placeholder: "system prompt (optional)" });
    const temperature = el("input", { type: "text", id: "play-temperature", value: "0" });
    const topP = el("input", { type: "text", id: "play-top-p", value: "1" });
    const maxTokens = el("input", { type: "text", id: "play-max-tokens", value: "64" });
    const message = el("textarea", { id: "play-message", rows: 2, placeholder: "your message" });
    const columns = el("div", { class: "columns", id: "play-columns" });
    let histories = {};
    async function send() {
      const text = message.value.trim();
      if (!text) return;
      message.value = "";
      const chosen = [...picks.querySelectorAll("input:checked")].map((c) => options[+c.value]);
      const settings = { temperature: Number(temperature.value), top_p: Number(topP.value), max_tokens: Number(maxTokens.value) };
      await Promise.all(chosen.map(async (option) => {
        let column = columns.querySelector(`[data-label="${CSS.escape(option.label)}"]`);
        if (!column) { column = el("div", { class: "card", "data-label": option.label }, el("h2", { text: option.label })); columns.append(column); }
        const answer = el("div", { class: "bubble assistant", "data-answer": "", text: "" });
        column.append(el("div", { class: "bubble user", text }), answer);
        try {
          const { id } = await api("POST", "/api/playground/load", option.load);
          const history = histories[option.label] || [];
          const messages = [...(system.value.trim() ? [{ role: "system", content: system.value.trim() }] : []), ...history, { role: "user", content: text }];
          let full = "";
          answer.dataset.streaming = "true";
          await stream(id, messages, settings, (piece) => { full += piece; answer.textContent = full; answer.dataset.chunks = String(+(answer.dataset.chunks || 0) + 1); });
          answer.dataset.streaming = "false";
          histories[option.label] = [...history, { role: "user", content: text }, { role: "assistant", content: full }];
        } catch (error) { answer.classList.add("error"); answer.textContent = error.message; answer.dataset.streaming = "false"; }
      }));
    }
    main.append(el("h1", { text: "Playground" }), picks,
      el("div", { class: "row" }, el("div", { class: "grow" }, system),
        el("label", {}, "temperature ", temperature), el("label", {}, "top_p ", topP), el("label", {}, "max tokens ", maxTokens)),
      el("div", { class: "row", style: "margin: 10px 0" }, el("div", { class: "grow" }, message),
        el("button", { type: "button", class: "primary", id: "play-send", text: "Send", onclick: send }),
        el("button", { type: "button", text: "Reset", onclick: () => { histories = {}; columns.replaceChildren(); } })),
      columns);
  };

  // ---- Review ----------------------------------------------------------------------------------
  function results(report) {
    if (!report) return el("p", { class: "muted", id: "review-results", text: "No votes yet." });
    const w = report.win_rate || {};
    const [a, b] = [report.systems.A, report.systems.B];
    return el("div", { id: "review-results", "data-win-rate": w.value === null || w.value === undefined ? "" : String(w.value) },
      el("p", {}, el("strong", { text: `${b.name} wins ${w.value === null || w.value === undefined ? "–" : (100 * w.value).toFixed(0) + "%"}` }),
        ` of decided votes against ${a.name} (95% interval ${w.ci95 ? w.ci95.map((x) => (100 * x).toFixed(0) + "%").join("–") : "–"}, n = ${fmt(w.n)}).`),
      el("p", { class: "muted", text: `${fmt(report.n_votes)} votes by ${fmt((report.reviewers || []).length)} reviewer(s); ties ${fmt(report.ties)}, both bad ${fmt(report.both_bad)}. ${a.name}: ${fmt(a.wins)} wins; ${b.name}: ${fmt(b.wins)} wins.` }));
  }

  pages.review = async (main, [id]) => {
    if (!id) {
      const { reviews } = await api("GET", "/api/reviews");
      const models = await api("GET", "/api/playground/models");
      const run = el("select", { id: "review-run" }, models.runs.map((r) => el("option", { value: r.run, text: r.run })));
      const against = el("select", { id: "review-against" }, el("option", { value: "base", text: "its base model" }),
        models.runs.map((r) => el("option", { value: r.run, text: r.run })));
      main.append(el("h1", { text: "Review" }),
        el("div", { class: "card" }, el("h2", { text: "New blind review" }),
          el("p", { class: "muted", text: "Reviewers see each held-out prompt with two answers, as Answer 1 and Answer 2; which system is which differs per item and is revealed only in the results." }),
          el("div", { class: "toolbar" }, "answers of ", run, " against ", against,
            el("button", { type: "button", class: "primary", id: "review-create", text: "Create", onclick: async () => {
              try { const r = await api("POST", "/api/reviews", { run: run.value, against: against.value }); location.hash = `#/review/${encodeURIComponent(r.id)}`; } catch (e) { toast(e.message, true); }
            } }))),
        el("h2", { text: "Reviews" }), el("ul", {}, reviews.map((r) => el("li", {}, el("a", { href: `#/review/${encodeURIComponent(r.id)}`, text: `${r.id} (${r.items} prompts)` })))));
      return;
    }
    const review = await api("GET", `/api/reviews/${encodeURIComponent(id)}`);
    const reviewer = el("input", { type: "text", id: "reviewer", value: localStorage.getItem("tunesmith-reviewer") || "" , placeholder: "your name" });
    const box = el("div", { class: "card", id: "review-item" });
    let resultBox = results(null);
    let index = 0;
    async function refresh() { const r = await api("GET", `/api/reviews/${encodeURIComponent(id)}/results`); const next = results(r.report); resultBox.replaceWith(next); resultBox = next; }
    function show() {
      if (index >= review.items.length) { box.replaceChildren(el("p", { class: "ok", id: "review-done", text: "All items voted. Thank you!" })); return; }
      const item = review.items[index];
      const vote = async (choice) => {
        if (!reviewer.value.trim()) { toast("Enter your name first.", true); return; }
        localStorage.setItem("tunesmith-reviewer", reviewer.value.trim());
        try {
          await api("POST", `/api/reviews/${encodeURIComponent(id)}/votes`, { reviewer: reviewer.value.trim(), item_id: item.item_id, choice });
          index += 1; show(); await refresh();
        } catch (e) { toast(e.message, true); }
      };
      box.replaceChildren(el("p", { class: "muted", text: `item ${index + 1} of ${review.items.length}` }),
        el("h2", { text: "Prompt" }), el("div", { class: "answer", text: item.prompt }),
        item.reference ? el("p", { class: "muted", text: `reference: ${item.reference}` }) : null,
        el("div", { class: "columns" }, el("div", {}, el("h2", { text: "Answer 1" }), el("div", { class: "answer", text: item.answer_1 })),
          el("div", {}, el("h2", { text: "Answer 2" }), el("div", { class: "answer", text: item.answer_2 }))),
        el("div", { class: "toolbar" }, [["1", "Answer 1 is better"], ["2", "Answer 2 is better"], ["tie", "Tie"], ["both_bad", "Both bad"]]
          .map(([choice, label]) => el("button", { type: "button", "data-choice": choice, text: label, onclick: () => vote(choice) }))));
    }
    main.append(el("h1", { text: `Review ${review.id}` }), el("div", { class: "toolbar" }, el("label", {}, "reviewer ", reviewer)), box,
      el("h2", { text: "Results" }), resultBox);
    show();
    await refresh();
  };

  // ---- Export ----------------------------------------------------------------------------------
  function gate(report) {
    if (!report) return null;
    return el("div", {}, (report.checks || []).map((c) => el("div", { class: c.passed ? "ok" : "error", "data-check": c.name,
      text: `${c.name}: ${"skipped" in c ? "skipped (" + c.skipped + ")" : "max_abs_diff" in c ? `max |diff| ${fmt(c.max_abs_diff, 6)} (allowed ${fmt(c.tolerance, 6)}, ${c.probes} probes)` : "drop" in c ? `${c.metric} ${fmt(c.before)} -> ${fmt(c.after)}, drop ${fmt(c.drop)} (allowed ${fmt(c.max_drop)})` : `${fmt(100 * c.same_answers, 0)}% answers equal (need ${fmt(100 * c.required, 0)}%)`} ${c.passed ? "passed" : "FAILED"}` })),
      report.metrics ? el("table", {}, el("tr", {}, ["model", "metrics", "ms/example", "MB"].map((h) => el("th", { text: h }))),
        Object.entries(report.metrics).map(([name, scores]) => el("tr", {}, el("td", { text: name }),
          el("td", { text: Object.entries(scores).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") }),
          el("td", { text: fmt((report.latency_ms_per_example || {})[name]) }), el("td", { text: fmt((report.size_mb || {})[name]) })))) : null,
      report.warning ? el("p", { class: "muted", text: `warning: ${report.warning}` }) : null,
      el("p", { class: "muted", text: `written to ${report.out} in ${fmt(report.wall_s, 1)} s` }));
  }

  pages.export = async (main, _, query) => {
    const { runs } = await api("GET", "/api/runs");
    const done = runs.filter((r) => r.status === "completed");
    const run = el("select", { id: "export-run" }, done.map((r) => el("option", { value: r.name, text: `${r.name} (${r.task}, ${r.method})` })));
    if (query.get("run")) run.value = query.get("run");
    const list = el("div", { id: "export-list" });
    let timer = null;
    async function refresh() {
      clearTimeout(timer);
      if (!run.value) return;
      const d = await api("GET", `/api/runs/${encodeURIComponent(run.value)}`);
      list.replaceChildren(...d.exports.map((x) => el("div", { class: "card", "data-export": x.format },
        el("h2", {}, `${x.format} `, status(x.state === "exited" ? (x.report ? "completed" : "failed") : x.state)),
        gate(x.report), !x.report && x.log_tail ? el("pre", { text: x.log_tail }) : null)));
      if (d.exports.some((x) => ["queued", "running"].includes(x.state))) timer = setTimeout(refresh, 1000);
    }
    onLeave(() => clearTimeout(timer));
    run.addEventListener("change", refresh);
    // Pruning's options: sparsity, which units, recovery steps, the allowed metric drop.
    const sparsity = el("input", { id: "prune-sparsity", type: "number", min: "0.01", max: "0.99", step: "0.05", value: "0.25" });
    const structure = el("select", { id: "prune-structure" }, ["ffn", "heads", "both"].map((v) => el("option", { value: v, text: v })));
    const recover = el("input", { id: "prune-recover", type: "number", min: "0", step: "50", value: "0" });
    const maxDrop = el("input", { id: "prune-max-drop", type: "number", min: "0", step: "0.01", value: "0.02" });
    const body = (to) => to !== "pruned" ? { to } : { to, sparsity: Number(sparsity.value), structure: structure.value,
      recover_steps: Number(recover.value), max_drop: Number(maxDrop.value) };
    const buttons = ["merged", "onnx", "int8", "gguf", "pruned"].map((to) => el("button", { type: "button", "data-export-to": to, text: to, onclick: async () => {
      try { await api("POST", `/api/runs/${encodeURIComponent(run.value)}/export`, body(to)); toast(`${to} export queued`); await refresh(); } catch (e) { toast(e.message, true); }
    } }));
    main.append(el("h1", { text: "Export" }),
      el("p", { class: "muted", text: "Each export re-measures the model against the run's own outputs (its gate) and refuses when they differ." }),
      el("div", { class: "toolbar" }, "run ", run, " export to ", buttons),
      el("div", { class: "toolbar muted" }, "pruned: sparsity ", sparsity, " units ", structure, " recovery steps ", recover,
        " max drop ", maxDrop), list);
    await refresh();
  };
})();
