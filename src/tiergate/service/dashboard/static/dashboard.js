// tiergate admin dashboard: polls /admin/api/overview and /admin/api/series and redraws in place.
// The formatters match formats.py (the server renders the first view with them).
"use strict";
(() => {
  const body = document.body;
  const interval = Math.max(1000, Number(body.dataset.interval) || 5000);
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
  const PALETTE = ["#2b6cb0", "#2f855a", "#c05621", "#805ad5", "#d53f8c", "#319795", "#b7791f", "#4a5568",
                   "#e53e3e", "#38a169"];
  const RUNNING = ["queued", "running", "pending"];

  const F = {
    text: (v) => String(v),
    bool: (v) => (v ? "yes" : "no"),
    int: (v) => Math.round(v).toLocaleString("en-US"),
    pct: (v) => (v * 100).toFixed(v >= 0.001 || v === 0 ? 1 : 2) + "%",
    thr: (v) => v.toFixed(3),
    bytes: (v) => {
      let u = 0;
      while (Math.abs(v) >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
      return (u === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + UNITS[u];
    },
    secs: (v) => (v < 1 ? (v * 1000).toFixed(1) + " ms" : v.toFixed(2) + " s"),
    dur: (v) => {
      for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "min"]]) {
        if (v >= size) return (v / size).toFixed(0) + " " + unit;
      }
      return v.toFixed(0) + " s";
    },
    age: (v) => F.dur(Math.max(0, Date.now() / 1000 - v)) + " ago",
    cost: (v) => v.toLocaleString("en-US", { minimumFractionDigits: 4, maximumFractionDigits: 4 }),
    num: (v) => (typeof v === "number" ? Number(v.toPrecision(3)).toLocaleString("en-US") : String(v)),
  };
  const fmt = (v, kind) => (v === null || v === undefined || v === "" ? "—" : (F[kind] || F.num)(v));
  const get = (o, path) => path.split(".").reduce((x, k) => (x && typeof x === "object" ? x[k] : undefined), o);

  async function api(url, options) {
    const res = await fetch(url, { credentials: "same-origin", cache: "no-store", ...options });
    if (res.status === 401) { window.location.assign("/admin/login"); throw new Error("logged out"); }
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
    return data;
  }

  function post(url, payload) {
    return api(url, { method: "POST", headers: { "Content-Type": "application/json", "X-Tiergate-CSRF": csrf },
                      body: JSON.stringify(payload || {}) });
  }

  // ---------------------------------------------------------------- numbers, reasons, tables
  function renderValues(o) {
    for (const el of document.querySelectorAll("[data-k]")) {
      const v = get(o, el.dataset.k);
      el.textContent = fmt(v, el.dataset.fmt);
      if (el.classList.contains("empty")) el.hidden = !v;
    }
    for (const el of document.querySelectorAll("[data-reason]")) {
      const part = o[el.dataset.reason] || {};
      el.hidden = !!part.available;
      el.textContent = part.reason || "";
    }
  }

  function cell(row, col) {
    const td = document.createElement("td");
    td.className = col.fmt;
    const v = row[col.key];
    if (col.fmt === "cancel") {
      if (RUNNING.includes(row.state)) {
        const b = document.createElement("button");
        b.className = "cancel"; b.dataset.job = row.id; b.textContent = "Cancel";
        td.append(b);
      }
    } else if (col.fmt === "bar" && v !== null && v !== undefined) {
      const pct = Math.round(Math.max(0, Math.min(1, v)) * 100);
      const p = document.createElement("progress");
      p.max = 100; p.value = pct;
      td.append(p, " " + pct + "%");
    } else {
      td.textContent = fmt(v, col.fmt);
    }
    if (col.key === "false_hit_rate" && v !== null && row.false_hit_budget !== null && v > row.false_hit_budget) {
      td.classList.add("over");
      td.title = "over budget";
    }
    return td;
  }

  function renderTables(o) {
    for (const table of document.querySelectorAll("table[data-rows]")) {
      const cols = [...table.querySelectorAll("thead th")].map((th) => ({ key: th.dataset.col, fmt: th.dataset.fmt }));
      const rows = get(o, table.dataset.rows) || [];
      const tbody = document.createElement("tbody");
      for (const row of rows) {
        const tr = document.createElement("tr");
        for (const col of cols) tr.append(cell(row, col));
        tbody.append(tr);
      }
      table.tBodies[0].replaceWith(tbody);
      const empty = document.querySelector(`[data-empty-rows="${table.dataset.rows}"]`);
      if (empty) empty.hidden = rows.length > 0;
    }
  }

  // ---------------------------------------------------------------- charts (uPlot)
  const charts = new Map();

  function expand(spec, keys) {
    const out = [];
    const patterns = spec.split(",");
    const wild = patterns.filter((p) => p.includes("*")).length;
    for (const p of patterns) {
      if (!p.includes("*")) { if (keys.includes(p)) out.push([p, p.split(".").pop()]); continue; }
      const re = new RegExp("^" + p.replace(/\./g, "\\.").replace("*", "([^.]+)") + "$");
      for (const k of keys) {
        const m = re.exec(k);
        if (m) out.push([k, wild > 1 ? m[1] + " " + p.split(".").pop() : m[1]]);
      }
    }
    return out.map(([k, label]) => [k, label === "hit_rate" ? "all" : label.replace(/_s$/, "")]);
  }

  function makeChart(el, picked, fmtKind, data) {
    const width = Math.max(260, el.clientWidth);
    const opts = {
      width, height: 170,
      scales: { x: { time: true } },
      series: [{}, ...picked.map(([, label], i) => ({
        label, stroke: PALETTE[i % PALETTE.length], width: 1.6, points: { show: false },
        value: (u, v) => fmt(v, fmtKind),
      }))],
      axes: [{ stroke: "#6b7385", grid: { stroke: "#eef0f4" } },
             { stroke: "#6b7385", grid: { stroke: "#eef0f4" }, size: 78,
               values: (u, vals) => vals.map((v) => fmt(v, fmtKind)) }],
      legend: { live: true },
    };
    el.textContent = "";
    return new uPlot(opts, data, el); // eslint-disable-line no-undef
  }

  function renderCharts(series) {
    const keys = Object.keys(series.series);
    for (const el of document.querySelectorAll("[data-chart]")) {
      const picked = expand(el.dataset.chart, keys);
      const data = [series.t, ...picked.map(([k]) => series.series[k])];
      const sig = picked.map(([k]) => k).join(",");
      const has = picked.some(([k]) => series.series[k].some((v) => v !== null));
      const known = charts.get(el.id);
      if (!has) {
        if (known) { known.u.destroy(); charts.delete(el.id); }
        if (!el.querySelector(".nodata")) {
          el.textContent = "";
          const p = document.createElement("div");
          p.className = "nodata";
          p.textContent = series.t.length ? "Nothing recorded yet" : "Waiting for the first sample";
          el.append(p);
        }
        continue;
      }
      if (known && known.sig === sig) { known.u.setData(data); continue; }
      if (known) known.u.destroy();
      charts.set(el.id, { sig, u: makeChart(el, picked, el.dataset.fmt, data) });
    }
  }

  const resize = new ResizeObserver(() => {
    for (const [id, c] of charts) {
      const el = document.getElementById(id);
      if (el && Math.abs(el.clientWidth - c.u.width) > 4) c.u.setSize({ width: Math.max(260, el.clientWidth), height: 170 });
    }
  });
  for (const el of document.querySelectorAll("[data-chart]")) resize.observe(el);

  // ---------------------------------------------------------------- polling
  const status = document.getElementById("status");
  const updated = document.getElementById("updated");
  let lastOk = Date.now();

  async function tick() {
    try {
      const [o, s] = await Promise.all([api("/admin/api/overview"), api("/admin/api/series")]);
      renderValues(o);
      renderTables(o);
      if (typeof uPlot !== "undefined") renderCharts(s);
      lastOk = Date.now();
      status.dataset.state = "ok";
      body.dataset.loaded = String(Number(body.dataset.loaded || 0) + 1);
    } catch (err) {
      status.dataset.state = "stale";
    }
    updated.textContent = F.dur((Date.now() - lastOk) / 1000) + " ago";
  }

  // ---------------------------------------------------------------- actions
  const form = document.getElementById("invalidate");
  const out = document.getElementById("invalidate-result");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    const payload = { all: fd.get("all") === "on" };
    for (const k of ["tenant", "category", "model"]) if (fd.get(k)) payload[k] = String(fd.get(k));
    out.className = "";
    out.textContent = "Invalidating…";
    try {
      const r = await post("/admin/api/actions/invalidate", payload);
      out.className = "ok";
      out.textContent = `Removed ${r.invalidated.toLocaleString("en-US")} entr${r.invalidated === 1 ? "y" : "ies"}.`;
      await tick();
    } catch (err) {
      out.className = "fail";
      out.textContent = err.message;
    }
  });

  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.cancel");
    if (!b) return;
    b.disabled = true;
    try { await post(`/admin/api/actions/jobs/${encodeURIComponent(b.dataset.job)}/cancel`); await tick(); }
    catch (err) { b.disabled = false; b.title = err.message; }
  });

  tick();
  setInterval(tick, interval);
})();
