// New run (a form generated from the recipe schema) and Data (upload, inspect).
"use strict";

(() => {
  const { api, el, toast, fmt, pages, onLeave } = Tunesmith;
  let schemaCache = null;
  const DRAFT = "tunesmith-draft";
  const OPEN = new Set(["run", "model", "data", "data.train.0", "train"]);

  async function schema() {
    if (!schemaCache) schemaCache = await api("GET", "/api/schema");
    return schemaCache;
  }

  function input(field, value) {
    const key = field.key;
    let control;
    if (field.widget === "checkbox") {
      control = el("input", { type: "checkbox", "data-key": key, "data-default": String(!!field.default), checked: value === undefined ? !!field.default : value });
    } else if (field.widget === "select") {
      const choices = field.nullable || field.default === null ? [""].concat(field.choices) : field.choices;
      control = el("select", { "data-key": key, "data-default": field.default === null ? "" : String(field.default) },
        choices.map((c) => el("option", { value: c, text: c === "" ? "(default: none)" : c })));
      control.value = value !== undefined ? value : (field.default === null ? "" : String(field.default));
    } else {
      const placeholder = field.required ? "required" : (field.default === null ? "" : `default: ${JSON.stringify(field.default)}`);
      control = el("input", { type: "text", "data-key": key, placeholder, value: value === undefined ? "" : value, autocomplete: "off" });
    }
    return el("div", { class: "field", "data-field": key },
      el("label", { text: field.name, title: key }), control,
      el("div", { class: "help", text: field.description }),
      el("div", { class: "error", "data-error-for": key }));
  }

  function indexed(field, i) { return { ...field, key: field.key.replace(/\.0\./, `.${i}.`) }; }

  function sectionNode(section, values, methods) {
    const title = section.key || "run";
    const body = el("div");
    const node = el("details", { class: "section", "data-section": title, "data-task": section.task, open: OPEN.has(title) },
      el("summary", { text: title.replace(/\.0$/, "") + (section.repeated ? " (one or more)" : "") }),
      section.description ? el("p", { class: "muted", text: section.description }) : null, body);
    if (section.optional) {
      const key = `${section.key}.enabled`;
      const box = el("input", { type: "checkbox", "data-key": key, checked: !!values[key] });
      const inner = el("div", {}, section.fields.map((f) => input(f, values[f.key])));
      const sync = () => { inner.hidden = !box.checked; };
      box.addEventListener("change", sync);
      body.append(el("label", {}, box, ` use ${section.key}`), inner);
      sync();
    } else if (section.repeated) {
      const list = el("div");
      const prefix = section.key.replace(/\.0$/, "");
      let count = Math.max(section.required ? 1 : 0, ...Object.keys(values).filter((k) => k.startsWith(prefix + "."))
        .map((k) => +k.slice(prefix.length + 1).split(".")[0] + 1));
      const add = (i) => list.append(el("fieldset", { "data-item": i }, el("legend", { class: "muted", text: `${prefix}[${i}]` }),
        section.fields.map((f) => input(indexed(f, i), values[indexed(f, i).key]))));
      for (let i = 0; i < count; i++) add(i);
      body.append(list, el("button", { type: "button", text: `+ add ${prefix} entry`, onclick: () => { add(count++); } }));
    } else {
      body.append(...section.fields.map((f) => input(f, values[f.key])));
    }
    if (!section.key && methods) body.append(methods);
    return node;
  }

  function collect(form) {
    const values = {};
    form.querySelectorAll("[data-key]").forEach((control) => {
      if (control.closest("[hidden]") || control.closest("[data-hidden-task]")) return;
      const key = control.dataset.key;
      if (control.type === "checkbox") {
        if (key.endsWith(".enabled") || String(control.checked) !== control.dataset.default) values[key] = control.checked;
      } else if (control.tagName === "SELECT") {
        if (control.value !== control.dataset.default || key === "task" || key === "method.type") values[key] = control.value;
      } else if (control.value.trim() !== "") values[key] = control.value;
    });
    return values;
  }

  function showErrors(form, errors, box) {
    form.querySelectorAll(".field.invalid").forEach((f) => f.classList.remove("invalid"));
    form.querySelectorAll("[data-error-for]").forEach((e) => { e.textContent = ""; });
    const loose = [];
    for (const { key, message } of errors) {
      const slot = form.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
      if (slot && !slot.closest("[hidden]")) {
        slot.textContent = message;
        slot.closest(".field").classList.add("invalid");
        const details = slot.closest("details");
        if (details) details.open = true;
      } else loose.push(message);
    }
    box.replaceChildren(...loose.map((m) => el("div", { class: "error", text: m })));
    box.dataset.count = String(errors.length);
  }

  pages.new = async (main) => {
    const s = await schema();
    const values = JSON.parse(sessionStorage.getItem(DRAFT) || "{}");
    const form = el("form", { id: "recipe-form", autocomplete: "off", onsubmit: (e) => e.preventDefault() });
    const methodBox = el("div", { id: "method-fields" });
    const methodSelect = el("select", { "data-key": "method.type", id: "method-type" },
      Object.keys(s.methods).map((m) => el("option", { value: m, text: m })));
    methodSelect.value = values["method.type"] || s.default_method;
    const methods = el("fieldset", {}, el("legend", { text: "method" }),
      el("div", { class: "field" }, el("label", { text: "type" }), methodSelect,
        el("div", { class: "help", text: "The fine-tuning method; its own settings follow." })), methodBox);
    const drawMethod = () => {
      const m = s.methods[methodSelect.value];
      methodBox.replaceChildren(...m.fields.map((f) => input(f, values[f.key])));
    };
    methodSelect.addEventListener("change", () => { drawMethod(); schedule(); });
    drawMethod();
    for (const section of s.sections) form.append(sectionNode(section, values, section.key === "" ? methods : null));
    const taskSelect = form.querySelector('[data-key="task"]');
    const syncTask = () => form.querySelectorAll("[data-task]").forEach((node) => {
      const hide = node.dataset.task && node.dataset.task !== taskSelect.value;
      node.hidden = hide;
      if (hide) node.setAttribute("data-hidden-task", ""); else node.removeAttribute("data-hidden-task");
    });
    taskSelect.addEventListener("change", syncTask);
    syncTask();

    const problems = el("div", { id: "form-errors" });
    const preview = el("pre", { id: "yaml-preview", class: "light" });
    const planBox = el("pre", { id: "plan-box", class: "light", text: "Press Plan for the memory and time estimate." });
    const overwrite = el("input", { type: "checkbox", id: "overwrite" });
    let timer = null;
    async function check() {
      const current = collect(form);
      sessionStorage.setItem(DRAFT, JSON.stringify(current));
      const result = await api("POST", "/api/recipe/check", { values: current });
      showErrors(form, result.errors, problems);
      preview.textContent = result.yaml;
      return result.errors.length === 0;
    }
    function schedule() { clearTimeout(timer); timer = setTimeout(() => check().catch((e) => toast(e.message, true)), 350); }
    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
    onLeave(() => clearTimeout(timer));

    async function start() {
      try {
        const result = await api("POST", "/api/runs", { values: collect(form), overwrite: overwrite.checked });
        sessionStorage.removeItem(DRAFT);
        toast(`run ${result.name} queued`);
        location.hash = `#/run/${encodeURIComponent(result.name)}`;
      } catch (error) {
        if (error.detail && error.detail.errors) showErrors(form, error.detail.errors, problems);
        else toast(error.message, true);
      }
    }
    async function plan() {
      planBox.textContent = "planning…";
      try {
        const result = await api("POST", "/api/plan", { values: collect(form) });
        planBox.textContent = result.text + "\n\n" + result.advice;
        planBox.dataset.fits = String(result.plan.fits);
      } catch (error) {
        planBox.textContent = error.message;
        if (error.detail && error.detail.errors) showErrors(form, error.detail.errors, problems);
      }
    }
    function download() {
      const blob = new Blob([preview.textContent], { type: "text/yaml" });
      const link = el("a", { href: URL.createObjectURL(blob), download: `${collect(form).name || "recipe"}.yaml` });
      link.click();
    }
    const upload = el("input", { type: "file", accept: ".yaml,.yml", id: "recipe-upload", onchange: async () => {
      const file = upload.files[0];
      if (!file) return;
      try {
        const result = await api("POST", "/api/recipe/upload", undefined, await file.text());
        sessionStorage.setItem(DRAFT, JSON.stringify(result.values));
        await pages.new(main.replaceChildren() || main);
      } catch (error) { toast(error.message, true); }
    } });

    main.append(el("h1", { text: "New run" }),
      el("div", { class: "row" },
        el("div", { class: "grow" }, form),
        el("div", { class: "grow", style: "position: sticky; top: 60px" },
          el("div", { class: "toolbar" },
            el("button", { type: "button", class: "primary", id: "start-run", text: "Start", onclick: start }),
            el("label", {}, overwrite, " replace a run of the same name"),
            el("button", { type: "button", id: "plan-run", text: "Plan", onclick: plan }),
            el("button", { type: "button", text: "Download YAML", onclick: download }),
            el("label", { class: "muted" }, "Upload YAML ", upload)),
          problems, el("h2", { text: "Recipe" }), preview, el("h2", { text: "Plan" }), planBox)));
    await check();
  };

  // ---- Data ------------------------------------------------------------------------------
  function histogram(values, title) {
    const c = Tunesmith.chart(title);
    if (!values || !values.length) { c.set([]); return c.node; }
    const max = Math.max(...values), bins = 30, width = Math.max(1, Math.ceil((max + 1) / bins));
    const counts = new Array(bins).fill(0);
    values.forEach((v) => { counts[Math.min(bins - 1, Math.floor(v / width))] += 1; });
    c.set([{ name: "rows per length bin", points: counts.map((n, i) => [i * width, n]) }]);
    return c.node;
  }

  function report(r) {
    const v = r.validation || {};
    const rejects = Object.entries(r.rejects_by_reason || {});
    const labels = (r.labels && r.labels.all) || {};
    const total = Object.values(labels).reduce((a, b) => a + b, 0);
    const lengths = (r.lengths && r.lengths.rows) || {};
    return el("div", { id: "inspect-report" },
      el("h2", { text: `${r.file} (${r.shape})` }),
      el("p", { id: "inspect-counts" }, `${fmt(v.rows_read)} rows read: ${fmt(v.valid)} valid, ${fmt(v.rejected)} rejected; `,
        `${fmt((r.duplicates || {}).exact_duplicates ?? 0)} exact and ${fmt((r.duplicates || {}).near_duplicates ?? 0)} near duplicates.`),
      rejects.length ? el("table", { id: "rejects" }, el("tr", {}, el("th", { text: "reason" }), el("th", { text: "rows" }), el("th", { text: "examples (file line: why)" })),
        rejects.map(([reason, info]) => el("tr", {}, el("td", { text: reason }), el("td", { text: fmt(info.count) }),
          el("td", {}, (info.examples || []).map((e) => el("div", { text: e })))))) : el("p", { class: "ok", text: "No rejected rows." }),
      total ? el("div", { id: "labels" }, el("h2", { text: "Label balance" }), Object.entries(labels).map(([label, n]) =>
        el("div", { class: "row" }, el("span", { style: "width: 140px", text: `${label}: ${n}` }),
          el("div", { class: "bar", style: `width: ${Math.round(300 * n / total)}px` })))) : null,
      el("h2", { text: "Lengths" }), el("p", { class: "muted", text: `p50 ${fmt(lengths.p50)}, p99 ${fmt(lengths.p99)}, max ${fmt(lengths.max)} ${lengths.unit || ""}` }),
      histogram(lengths.lengths, `length histogram (${lengths.unit || "words"})`),
      el("button", { type: "button", text: "Use as training data in a new run", onclick: () => {
        const draft = JSON.parse(sessionStorage.getItem(DRAFT) || "{}");
        draft["data.train.0.path"] = r.file;
        sessionStorage.setItem(DRAFT, JSON.stringify(draft));
        location.hash = "#/new";
      } }));
  }

  pages.data = async (main) => {
    const list = el("tbody");
    const out = el("div");
    async function refresh() {
      const { files } = await api("GET", "/api/data");
      list.replaceChildren(...files.map((f) => el("tr", {}, el("td", { text: f.path }), el("td", { text: `${fmt(f.bytes)} B` }),
        el("td", {}, el("button", { type: "button", text: "Inspect", "data-inspect": f.path, onclick: async () => {
          out.replaceChildren(el("p", { text: "reading…" }));
          try { out.replaceChildren(report(await api("POST", "/api/data/inspect", { path: f.path, shape: shape.value }))); } catch (e) { out.replaceChildren(el("p", { class: "error", text: e.message })); }
        } })))));
    }
    const file = el("input", { type: "file", id: "data-upload" });
    const shape = el("select", { id: "data-shape" }, ["", "classification", "chat"].map((s) => el("option", { value: s, text: s || "guess the shape" })));
    const send = el("button", { type: "button", class: "primary", text: "Upload", onclick: async () => {
      if (!file.files[0]) return;
      try { await api("PUT", `/api/data/${encodeURIComponent(file.files[0].name)}`, undefined, file.files[0]); toast("uploaded"); await refresh(); } catch (e) { toast(e.message, true); }
    } });
    main.append(el("h1", { text: "Data" }), el("div", { class: "toolbar" }, file, send, shape),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "file" }), el("th", { text: "size" }), el("th"))), list), out);
    await refresh();
  };
})();
