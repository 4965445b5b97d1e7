// Tunesmith UI core: the API helper, element builder, router and small formatters.
// No framework and nothing from a CDN: the UI works offline. Text from the server is always
// put in with textContent, never as HTML, so a run name or an answer cannot inject markup.
"use strict";

const Tunesmith = (() => {
  const params = new URLSearchParams(location.search);
  const TOKEN = document.body.dataset.token || params.get("token") || sessionStorage.getItem("tunesmith-token") || "";
  if (TOKEN) sessionStorage.setItem("tunesmith-token", TOKEN);
  const pages = {};
  let cleanup = [];

  async function api(method, path, body, raw) {
    const headers = { "X-Tunesmith-Token": TOKEN };
    let payload;
    if (raw !== undefined) payload = raw;
    else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    const response = await fetch(path, { method, headers, body: payload });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = data.detail;
      const error = new Error(typeof detail === "string" ? detail : (detail && detail.errors ? "The recipe has problems (see the fields)." : `${response.status} ${response.statusText}`));
      error.status = response.status;
      error.detail = detail;
      throw error;
    }
    return data;
  }

  // el("div", {class: "x", text: "hi", onclick: fn, "data-k": 1}, child, ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "value") node.value = value;
      else if (key === "checked") node.checked = !!value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function toast(message, bad) {
    const box = el("div", { class: bad ? "bad" : "", text: message });
    document.getElementById("toast").append(box);
    setTimeout(() => box.remove(), bad ? 8000 : 3000);
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en");
    return value.toFixed(digits === undefined ? 4 : digits);
  }

  function when(seconds) {
    if (!seconds) return "–";
    return new Date(seconds * 1000).toLocaleString("en-GB", { hour12: false });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 120) return `${seconds.toFixed(1)} s`;
    return seconds < 7200 ? `${(seconds / 60).toFixed(1)} min` : `${(seconds / 3600).toFixed(1)} h`;
  }

  function status(value) {
    return el("span", { class: `status ${value || ""}`, "data-status": value, text: value || "unknown" });
  }

  // A URL for reading (links, EventSource): carries the token when the page came with one.
  function readUrl(path) {
    if (document.body.dataset.token || !TOKEN) return path;
    return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
  }

  function onLeave(fn) { cleanup.push(fn); }

  async function route() {
    cleanup.forEach((fn) => fn());
    cleanup = [];
    const hash = location.hash.replace(/^#\/?/, "") || "runs";
    const [path, query] = hash.split("?");
    const [name, ...rest] = path.split("/");
    const page = pages[name] || pages.runs;
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === name));
    const main = document.getElementById("main");
    main.replaceChildren();
    document.body.dataset.page = "";
    try {
      await page(main, rest.map(decodeURIComponent), new URLSearchParams(query || ""));
    } catch (error) {
      main.append(el("p", { class: "error", text: error.message }));
    }
    document.body.dataset.page = name;
  }

  function start() {
    window.addEventListener("hashchange", route);
    route();
  }

  return { api, el, toast, fmt, when, duration, status, readUrl, onLeave, pages, start, TOKEN };
})();
