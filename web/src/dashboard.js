// The SLA manager's pages (issue 18). One script for all of them: <body data-page> says
// which. Everything shown comes from the REST API the page is served by; uPlot draws.
import uPlot from "uplot";

const $main = () => document.getElementById("main");
const REFRESH_MS = 30000;
const BURNDOWN_POINTS = 121; // over the SLO's period, whatever its length
const WINDOWS = { "1h": 15, "3h": 15, "12h": 15, "7d": 300 }; // window -> step (s)
const PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#bcbd22", "#7f7f7f", "#ff7f0e", "#393b79"];
const DETECTOR_COLORS = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b"];

// Exposed for the browser tests and the benchmark: what each chart drew.
const state = { charts: {}, drawn: {}, ready: false, errors: [] };
window.slaDashboard = state;

// ------------------------------------------------------------------ small helpers
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// At most this many requests in flight: the SLA manager has a few Prometheus query slots
// per process (SLA_PROMETHEUS_MAX_CONCURRENT, 8) and answers 503 when they are all taken.
const MAX_IN_FLIGHT = 4;
let inFlight = 0;
const waiting = [];

async function api(path) {
  if (inFlight >= MAX_IN_FLIGHT) await new Promise((resolve) => waiting.push(resolve));
  inFlight += 1;
  try {
    return await fetchJson(path);
  } finally {
    inFlight -= 1;
    const next = waiting.shift();
    if (next) next();
  }
}

async function fetchJson(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) {
    let detail = r.statusText;
    try {
      const body = await r.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_e) { /* not JSON */ }
    const err = new Error(`${r.status} ${detail}`);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

const enc = encodeURIComponent;

function human(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [f, u] of units) if (a >= f) return `${+(v / f).toPrecision(digits)}${u}`;
  return `${+v.toPrecision(digits)}`;
}
const pct = (x, scale = 100) => (x === null || x === undefined ? "–" : `${(x * scale).toFixed(1)} %`);
function utc(t) {
  return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
function dur(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
function seriesName(s) {
  const labels = Object.entries(s.labels || {}).map(([k, v]) => `${k}="${v}"`).join(",");
  return `${s.metric || ""}{${labels}}`;
}
function badge(text, kind) {
  return el("span", { class: `badge badge-${kind}`, text });
}
const STATE_KIND = { ok: "ok", violated: "bad", no_data: "warn" };
const ANOMALY_KIND = { SAFE: "ok", LEARNING: "muted", WARN: "warn", ERROR: "bad" };
const ANOMALY_RANK = { ERROR: 3, WARN: 2, LEARNING: 1, SAFE: 0 };

function showError(where, e) {
  state.errors.push(String(e.message || e));
  where.append(el("p", { class: "error", role: "alert", text: `Could not load: ${e.message || e}` }));
}

function table(head, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows));
}

// ------------------------------------------------------------------ overview
async function overviewData() {
  const [slis, slos] = await Promise.all([api("/slis?limit=1000"), api("/slos?limit=1000")]);
  const sliRows = await Promise.all(slis.map(async (sli) => {
    const n = enc(sli.name);
    const [st, fc, vi] = await Promise.allSettled([
      api(`/slis/${n}/status`),
      api(`/slis/${n}/forecast-violations?horizon=10m`),
      api(`/slis/${n}/violations?window=12h&samples=false`),
    ]);
    const status = st.status === "fulfilled" ? st.value : null;
    const outside12h = vi.status === "fulfilled"
      ? vi.value.series.reduce((t, s) => t + s.time_outside_s, 0) : null;
    const forecast = fc.status === "fulfilled" ? fc.value : null;
    const probs = forecast ? forecast.series.map((s) => s.breach_probability).filter((p) => p !== null) : [];
    const anomalies = {};
    for (const s of status ? status.series : []) {
      for (const [det, a] of Object.entries(s.anomalies || {})) {
        if (!anomalies[det] || ANOMALY_RANK[a.status] > ANOMALY_RANK[anomalies[det].status]) anomalies[det] = a;
      }
    }
    return {
      sli, status, forecast, anomalies, outside12h,
      state: status ? status.state : "error",
      prob: probs.length ? Math.max(...probs) : null,
    };
  }));
  const sloRows = await Promise.all(slos.map(async (slo) => {
    try {
      return { slo, status: await api(`/slos/${enc(slo.name)}`) };
    } catch (e) {
      return { slo, status: null, error: String(e.message) };
    }
  }));
  return { sliRows, sloRows };
}

function sliScore(r) {
  const base = { violated: 3, error: 2.5, no_data: 2, ok: 0 }[r.state] ?? 1;
  const worstAnomaly = Math.max(0, ...Object.values(r.anomalies).map((a) => ANOMALY_RANK[a.status]));
  return base + (r.prob || 0) + (worstAnomaly >= 2 ? worstAnomaly / 4 : 0);
}

function renderOverview(main, data) {
  const sliRows = [...data.sliRows].sort((a, b) => sliScore(b) - sliScore(a) || a.sli.name.localeCompare(b.sli.name));
  const rows = sliRows.map((r) => {
    const st = r.status;
    const range = `${r.sli.min === null ? "" : human(r.sli.min)} … ${r.sli.max === null ? "" : human(r.sli.max)}`;
    const anomalies = Object.entries(r.anomalies).map(([det, a]) =>
      el("span", { class: "anomaly", title: `${det}: ${a.status}, deviation ${a.deviation.toFixed(1)} σ, window ${utc(a.window_start)}` },
        `${det} `, badge(a.status, ANOMALY_KIND[a.status] || "muted")));
    return el("tr", { "data-sli": r.sli.name, "data-state": r.state },
      el("th", { scope: "row" }, el("a", { href: `/ui/slis/${enc(r.sli.name)}`, text: r.sli.name })),
      el("td", {}, badge(r.state.replace("_", " "), STATE_KIND[r.state] || "muted")),
      el("td", { class: "num" }, st ? `${st.inside} / ${st.outside} / ${st.no_data}` : "–"),
      el("td", { class: "num", text: range }),
      el("td", { class: "num", text: r.outside12h === null ? "–" : r.outside12h ? dur(r.outside12h) : "none" }),
      el("td", { class: "num", "data-breach-probability": r.prob ?? "" }, r.prob === null ? "no forecast" : pct(r.prob)),
      el("td", {}, anomalies.length ? anomalies : el("span", { class: "muted", text: "none stored" })),
      el("td", { class: "desc", text: r.sli.description || "" }));
  });
  const sloRows = [...data.sloRows].sort((a, b) =>
    (a.status?.budget.remaining ?? 2) - (b.status?.budget.remaining ?? 2) || a.slo.name.localeCompare(b.slo.name));
  const sloTrs = sloRows.map((r) => {
    const s = r.status;
    const burn = Object.fromEntries((s ? s.burn_rates : []).map((b) => [b.window, b.burn_rate]));
    const fmtBurn = (w) => (burn[w] === null || burn[w] === undefined ? "–" : `${burn[w].toFixed(2)}×`);
    const kind = !s ? "muted" : s.meets_objective === false ? "bad" : (s.budget.remaining ?? 1) < 0.25 ? "warn" : s.meets_objective ? "ok" : "muted";
    const label = !s ? "error" : s.meets_objective === null ? "no data" : s.meets_objective ? "met" : "missed";
    return el("tr", { "data-slo": r.slo.name, "data-state": label },
      el("th", { scope: "row" }, el("a", { href: `/ui/slos/${enc(r.slo.name)}`, text: r.slo.name })),
      el("td", {}, badge(label, kind)),
      el("td", { class: "num", text: `${r.slo.objective} % / ${r.slo.period}` }),
      el("td", { class: "num", text: s && s.compliance !== null ? `${s.compliance.toFixed(3)} %` : "–" }),
      el("td", { class: "num", text: s ? pct(s.budget.remaining) : "–" }),
      el("td", { class: "num", text: fmtBurn("5m") }),
      el("td", { class: "num", text: fmtBurn("1h") }),
      el("td", { class: "num", text: fmtBurn("1d") }),
      el("td", { class: "num", text: s ? (s.exhaustion_s === null ? "not burning" : dur(s.exhaustion_s)) : "–" }));
  });
  main.replaceChildren(
    el("h1", { text: "Overview" }),
    el("p", { class: "muted", id: "updated" },
      `Updated ${utc(Date.now() / 1000)}; refreshes every ${REFRESH_MS / 1000} s. Worst first.`),
    el("h2", { text: "SLIs" }),
    sliRows.length
      ? table(["SLI", "state now", "series in / out / no data", "range", "outside in 12 h", "breach p (10 min)", "latest anomaly", "description"], rows, { id: "slis" })
      : el("p", { class: "muted", text: "No SLIs yet: POST /slis (see /docs)." }),
    el("h2", { text: "SLOs" }),
    sloTrs.length
      ? table(["SLO", "state", "objective / period", "compliance", "budget left", "burn 5m", "burn 1h", "burn 1d", "exhausted in"], sloTrs, { id: "slos" })
      : el("p", { class: "muted", text: "No SLOs yet: POST /slos." }));
}

async function overviewPage(main) {
  const load = async () => {
    try {
      renderOverview(main, await overviewData());
      state.ready = true;
    } catch (e) {
      main.replaceChildren();
      showError(main, e);
    }
  };
  await load();
  setInterval(load, REFRESH_MS);
}

// ------------------------------------------------------------------ SLI page
function mergeTimes(...arrays) {
  const all = new Set();
  for (const a of arrays) for (const t of a) all.add(t);
  return Float64Array.from([...all].sort((a, b) => a - b));
}

function shadeIntervals(u, intervals, step, color) {
  const { ctx } = u;
  const { top, height } = u.bbox;
  ctx.save();
  ctx.fillStyle = color;
  for (const iv of intervals) {
    // An interval stands for its evaluations, one step each: [start, end + step).
    const x0 = u.valToPos(iv.start, "x", true);
    const x1 = u.valToPos(iv.end + step, "x", true);
    ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
  }
  ctx.restore();
}

function chartSize(node, height) {
  return { width: Math.max(320, node.clientWidth || 900), height };
}

function drawSliChart(node, viol, forecast, anomalies) {
  const shown = viol.series.slice(0, PALETTE.length);
  const fcSeries = forecast
    ? forecast.series.filter((s) => s.all_points && s.all_points.length && s.comparable !== false)
    : [];
  const xs = mergeTimes(
    ...shown.map((s) => s.values.map((v) => v[0])),
    ...fcSeries.map((s) => s.all_points.map((p) => p.ts)),
  );
  const index = new Map(Array.from(xs, (t, i) => [t, i]));
  const column = () => new Array(xs.length).fill(null);
  const data = [xs];
  const series = [{}];
  shown.forEach((s, k) => {
    const col = column();
    for (const [t, v] of s.values) col[index.get(t)] = v;
    data.push(col);
    series.push({ label: seriesName(s), stroke: PALETTE[k], width: 1.5, spanGaps: false });
  });
  const bands = [];
  fcSeries.forEach((s) => {
    const cols = { value: column(), lower80: column(), upper80: column(), lower95: column(), upper95: column() };
    for (const p of s.all_points) for (const key of Object.keys(cols)) cols[key][index.get(p.ts)] = p[key];
    const base = data.length;
    const name = seriesName(s);
    data.push(cols.upper95, cols.lower95, cols.upper80, cols.lower80, cols.value);
    series.push(
      { label: `95 % high ${name}`, stroke: "rgba(255,127,14,0.4)", width: 1, forecast: "upper95" },
      { label: `95 % low ${name}`, stroke: "rgba(255,127,14,0.4)", width: 1, forecast: "lower95" },
      { label: `80 % high ${name}`, stroke: "rgba(255,127,14,0.7)", width: 1, forecast: "upper80" },
      { label: `80 % low ${name}`, stroke: "rgba(255,127,14,0.7)", width: 1, forecast: "lower80" },
      { label: `forecast ${name}`, stroke: "#ff7f0e", width: 2, dash: [6, 4], forecast: "value" },
    );
    bands.push({ series: [base, base + 1], fill: "rgba(255,127,14,0.12)" });
    bands.push({ series: [base + 2, base + 3], fill: "rgba(255,127,14,0.22)" });
  });
  for (const [bound, color] of [["min", "#d62728"], ["max", "#d62728"]]) {
    if (viol[bound] === null) continue;
    data.push(new Array(xs.length).fill(viol[bound]));
    series.push({ label: bound, stroke: color, width: 1, dash: [3, 3], points: { show: false } });
  }
  const intervals = shown.flatMap((s) => s.intervals);
  const detectors = [...new Set(anomalies.map((a) => a.detector))].sort();
  const marks = anomalies.filter((a) => a.status === "WARN" || a.status === "ERROR");
  const opts = {
    ...chartSize(node, 360),
    series,
    bands,
    scales: { x: { time: true } },
    axes: [{}, { values: (_u, ticks) => ticks.map((t) => human(t)), size: 60 }],
    legend: { show: false }, // the page writes its own, shorter one
    cursor: { focus: { prox: 16 } },
    hooks: {
      drawClear: [(u) => shadeIntervals(u, intervals, viol.step_s, "rgba(214,39,40,0.16)")],
      draw: [(u) => {
        const { ctx } = u;
        const { top } = u.bbox;
        ctx.save();
        for (const a of marks) {
          const x = u.valToPos((a.window_start + a.window_end) / 2, "x", true);
          ctx.fillStyle = DETECTOR_COLORS[detectors.indexOf(a.detector) % DETECTOR_COLORS.length];
          const r = a.status === "ERROR" ? 6 : 4;
          ctx.beginPath();
          ctx.moveTo(x - r, top);
          ctx.lineTo(x + r, top);
          ctx.lineTo(x, top + 2 * r);
          ctx.fill();
        }
        ctx.restore();
      }],
    },
  };
  node.replaceChildren();
  const u = new uPlot(opts, data, node);
  state.charts.sli = u;
  state.drawn.sli = {
    series: series.slice(1).map((s) => s.label),
    shaded: intervals.map((iv) => [iv.start, iv.end]),
    anomalies: marks.map((a) => [a.detector, a.status, a.window_start]),
    forecastPoints: fcSeries.reduce((n, s) => n + s.all_points.length, 0),
    start: viol.start,
    end: viol.end,
    step: viol.step_s,
  };
  node.dataset.shaded = JSON.stringify(state.drawn.sli.shaded);
  node.dataset.series = String(state.drawn.sli.series.length);
  return { u, detectors };
}

// A ranked feature's values (the API's `values`, bucket means) drawn small: the anomalous
// intervals shaded red, the reference grey.
const SPARK = { width: 220, height: 44 };
const FEATURE_POINTS = 80; // per ranked feature: one bucket is about 5 min of a 7 h fetch
function featureSpark(r, body) {
  const node = el("div", { class: "spark", role: "img", "aria-label": `${r.series} over the reference and the violation` });
  const pts = r.values || [];
  if (!pts.length) return node;
  const xs = Float64Array.from(pts.map((p) => p[0]));
  const ys = pts.map((p) => p[1]);
  const half = (body.values_step || body.step) / 2;
  const shade = (u, [a, b], color) => {
    const x0 = u.valToPos(a, "x", true);
    const x1 = u.valToPos(b, "x", true);
    u.ctx.fillStyle = color;
    u.ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
  };
  new uPlot({
    ...SPARK,
    legend: { show: false },
    cursor: { show: false },
    axes: [{ show: false }, { show: false }],
    scales: { x: { time: true, range: [xs[0] - half, xs[xs.length - 1] + 2 * half] } },
    series: [{}, { stroke: r.direction === "above" ? "#c0262d" : "#175cd3", width: 1.25, spanGaps: true, points: { show: false } }],
    hooks: {
      drawClear: [(u) => {
        u.ctx.save();
        shade(u, body.reference, "rgba(152,162,179,0.18)");
        for (const iv of body.anomalous) shade(u, iv, "rgba(214,39,40,0.22)");
        u.ctx.restore();
      }],
    },
  }, [xs, ys], node);
  return node;
}

function explanationView(body) {
  const preds = body.explanation.length
    ? el("ol", { class: "predicates" }, body.explanation.map((p) => el("li", {}, el("code", { text: p }))))
    : el("p", { class: "muted", text: "No predicate separates the violation from the reference." });
  const shownRanked = body.ranked.slice(0, 8);
  const top = shownRanked.map((r) => {
    const lo = Math.min(r.anomalous.min, r.reference.min);
    const hi = Math.max(r.anomalous.max, r.reference.max);
    const span = hi - lo || 1;
    const bar = (v, cls) => el("span", {
      class: `rng ${cls}`,
      style: `left:${(100 * (v.min - lo)) / span}%;width:${Math.max(1, (100 * (v.max - v.min)) / span)}%`,
    });
    return el("tr", { "data-series": r.series, "data-points": (r.values || []).length },
      el("td", {}, el("code", { text: r.series })),
      el("td", { class: "num", text: r.distance.toFixed(3) }),
      el("td", { text: r.direction }),
      el("td", { class: "num", text: `${human(r.reference.min)} … ${human(r.reference.max)}` }),
      el("td", { class: "num", text: `${human(r.anomalous.min)} … ${human(r.anomalous.max)}` }),
      el("td", { class: "rngcell", title: "grey: reference range, red: during the violation" },
        el("span", { class: "rngbox" }, bar(r.reference, "ref"), bar(r.anomalous, "anom"))),
      el("td", { class: "sparkcell" }, featureSpark(r, body)));
  });
  state.drawn.features = shownRanked.map((r) => ({ series: r.series, points: (r.values || []).length }));
  const dropped = body.false_positive_series.map((r) => el("li", {}, el("code", { text: r.series }), ` (distance ${r.distance.toFixed(2)})`));
  return el("div", { id: "explanation", "data-predicates": body.explanation.length, "data-ranked": top.length },
    el("h3", { text: "Explanation" }),
    el("p", { class: "muted", text: `${body.candidates} candidate series, reference ${utc(body.reference[0])} – ${utc(body.reference[1])}, step ${body.step} s. Read the predicates joined by AND:` }),
    preds,
    top.length
      ? table(["top features", "distance", "direction", "reference", "violation", "ranges", `values (grey: reference, red: violation; ${dur(body.values_step)} means)`], top, { class: "ranked" })
      : el("p", { class: "muted", text: "No series of the candidates changed apart from the reference." }),
    body.false_positives
      ? el("details", {}, el("summary", { text: `${body.false_positives} series left out: they change as much between parts of the reference (first ${dropped.length})` }),
        el("ul", {}, dropped))
      : null);
}

async function sliPage(main) {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  const n = enc(name);
  const params = new URLSearchParams(location.search);
  let win = WINDOWS[params.get("window")] ? params.get("window") : "12h";
  // ?end=<unix s>: a fixed end (a past incident, the benchmark); default now.
  const end = /^\d+(\.\d+)?$/.test(params.get("end") || "") ? params.get("end") : null;
  const endQ = end ? `&end=${end}` : "";
  const atQ = end ? `&at=${end}` : "";
  const sli = await api(`/slis/${n}`);
  const buttons = Object.keys(WINDOWS).map((w) =>
    el("button", { type: "button", "data-window": w, "aria-pressed": w === win ? "true" : "false", text: w }));
  const chart = el("div", { id: "sli-chart", class: "chart", role: "img", "aria-label": `${name} over the chosen window` });
  const legend = el("p", { class: "legend muted" });
  const violations = el("section", { id: "violations", "aria-label": "violations" });
  const explain = el("section", { id: "explain", "aria-live": "polite" });
  const status = el("p", { class: "muted", id: "sli-status" });
  main.replaceChildren(
    el("h1", {}, `SLI `, el("code", { text: name })),
    el("p", {}, sli.description || "", " ", el("code", { text: sli.selector }),
      ` range ${sli.min === null ? "−∞" : human(sli.min)} … ${sli.max === null ? "+∞" : human(sli.max)}`),
    el("div", { class: "controls", role: "group", "aria-label": "window" }, buttons),
    status, chart, legend, violations, explain);

  async function load() {
    state.ready = false;
    for (const b of buttons) b.setAttribute("aria-pressed", b.dataset.window === win ? "true" : "false");
    status.textContent = `Loading ${win}…`;
    const step = WINDOWS[win];
    const [viol, forecast] = await Promise.all([
      api(`/slis/${n}/violations?window=${win}&step=${step}s&values=true&samples=false${endQ}`),
      api(`/slis/${n}/forecast-violations?horizon=1h&all_points=true${atQ}`).catch(() => null),
    ]);
    const anomalies = (await Promise.all(viol.series.slice(0, PALETTE.length).map((s) =>
      s.metric
        ? api(`/anomalies?selector=${enc(seriesName(s))}&start=${viol.start}&end=${viol.end}&limit=1000`)
          .then((r) => r.items || r).catch(() => [])
        : []))).flat();
    state.fetchedAt = performance.now();
    const { detectors } = drawSliChart(chart, viol, forecast, anomalies);
    status.textContent = `${viol.state.replace("_", " ")}: ${viol.violating_series} of ${viol.series_total} series outside over ${win} (${utc(viol.start)} – ${utc(viol.end)}, step ${viol.step_s} s)`;
    legend.replaceChildren(
      ...viol.series.slice(0, PALETTE.length).map((s, i) => [el("span", { class: "key", style: `background:${PALETTE[i]}` }), ` ${seriesName(s)} `]).flat(),
      el("span", { class: "key bound" }), " range ",
      el("span", { class: "key shade" }), " violation intervals (API's) ",
      el("span", { class: "key fc" }), " forecast with 80 % / 95 % bands ",
      ...detectors.map((d, i) => [el("span", { class: "key tri", style: `border-top-color:${DETECTOR_COLORS[i % DETECTOR_COLORS.length]}` }), ` ${d} WARN/ERROR `]).flat());
    const rows = viol.series.flatMap((s) => s.intervals.map((iv) => el("tr", { "data-start": iv.start, "data-end": iv.end },
      el("td", { text: seriesName(s) }),
      el("td", { text: utc(iv.start) }),
      el("td", { text: dur(iv.duration_s) }),
      el("td", { class: "num", text: human(iv.worst_value) }),
      el("td", {}, el("button", {
        type: "button", class: "explain", text: "Explain",
        "aria-label": `Explain the violation at ${utc(iv.start)}`,
        onclick: () => explainViolation(iv, viol.step_s),
      })))));
    violations.replaceChildren(el("h2", { text: "Violations" }), rows.length
      ? table(["series", "from", "lasted", "worst", ""], rows)
      : el("p", { class: "muted", text: "None in this window." }));
    state.ready = true;
    state.drawnAt = performance.now();
  }

  async function explainViolation(iv, step) {
    explain.replaceChildren(el("p", { class: "muted", text: "Explaining…" }));
    const pad = Math.max(step, iv.end - iv.start + step);
    try {
      const body = await api(`/slis/${n}/violations/explanation?start=${iv.start - pad}&end=${iv.end + pad}&values=${FEATURE_POINTS}`);
      explain.replaceChildren(explanationView(body));
    } catch (e) {
      explain.replaceChildren();
      showError(explain, e);
    }
  }

  for (const b of buttons) {
    b.addEventListener("click", async () => {
      win = b.dataset.window;
      history.replaceState(null, "", `?window=${win}${endQ}`);
      try { await load(); } catch (e) { showError(status, e); }
    });
  }
  window.addEventListener("resize", () => {
    if (state.charts.sli) state.charts.sli.setSize(chartSize(chart, 360));
  });
  await load();
}

// ------------------------------------------------------------------ SLO page
async function sloPage(main) {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  const n = enc(name);
  const s = await api(`/slos/${n}?alerts=true`);
  const kindOf = (b) => (b === null ? "muted" : b >= 14.4 ? "bad" : b >= 1 ? "warn" : "ok");
  const thresholds = {};
  for (const w of s.alert_windows) {
    for (const win of [w.long, w.short]) (thresholds[win] ||= []).push(`${w.severity} ${w.factor}×`);
  }
  const maxBurn = Math.max(1, ...s.burn_rates.map((b) => b.burn_rate || 0), ...s.alert_windows.map((w) => w.factor));
  const burnRows = s.burn_rates.map((b) => el("tr", { "data-window": b.window },
    el("th", { scope: "row", text: b.window }),
    el("td", { class: "num", text: b.burn_rate === null ? "–" : `${b.burn_rate.toFixed(2)}×` }),
    el("td", { class: "barcell" }, el("span", { class: "barbox" },
      el("span", { class: `bar bar-${kindOf(b.burn_rate)}`, style: `width:${(100 * Math.min(b.burn_rate || 0, maxBurn)) / maxBurn}%` }),
      ...s.alert_windows.filter((w) => w.long === b.window || w.short === b.window).map((w) =>
        el("span", { class: "tick", title: `${w.severity}: ${w.factor}×`, style: `left:${(100 * w.factor) / maxBurn}%` })))),
    el("td", { text: (thresholds[b.window] || []).join(", ") || "–" })));
  const alerts = s.alerts || [];
  const chart = el("div", { id: "burndown", class: "chart", role: "img", "aria-label": "error budget remaining over time" });
  main.replaceChildren(
    el("h1", {}, "SLO ", el("code", { text: name })),
    el("p", {}, `${s.objective} % over ${s.period} of `,
      s.definition.sli ? el("a", { href: `/ui/slis/${enc(s.definition.sli)}`, text: s.definition.sli }) : "a ratio SLI",
      `; evaluated ${utc(s.evaluated_at)} from ${s.source.replace("_", " ")}.`),
    el("dl", { class: "cards" },
      el("div", {}, el("dt", { text: "compliance" }), el("dd", { text: s.compliance === null ? "–" : `${s.compliance.toFixed(3)} %` })),
      el("div", {}, el("dt", { text: "budget left" }), el("dd", { id: "budget-left", text: pct(s.budget.remaining) })),
      el("div", {}, el("dt", { text: "exhausted in" }), el("dd", { text: s.exhaustion_s === null ? "not burning" : dur(s.exhaustion_s) })),
      el("div", {}, el("dt", { text: "forecast burn" }), el("dd", { text: s.projection ? `${s.projection.burn_rate.toFixed(2)}×` : "–" }))),
    el("h2", { text: "Alerts" }),
    alerts.length
      ? el("ul", { id: "alerts" }, alerts.map((a) => el("li", {}, badge(a.state, a.state === "firing" ? "bad" : "warn"), ` ${a.alertname} (${a.severity || "–"})`)))
      : el("p", { id: "alerts", class: "muted", text: "No alert pending or firing." }),
    el("h2", { text: "Burn rates against the alert thresholds" }),
    table(["window", "burn rate", "", "alerts on this window"], burnRows, { id: "burn-rates" }),
    el("h2", { text: "Error budget burn-down" }),
    el("p", { class: "muted", id: "burndown-note", text: "Loading…" }),
    chart);
  // Burn-down over the whole period: the API's budget history (one range query), each point
  // the budget left as GET /slos/<name>?time=t answers it.
  let h;
  try {
    h = await api(`/slos/${n}/budget-history?source=raw_queries&points=${BURNDOWN_POINTS}`);
  } catch (e) { // the rest of the page stands without it
    document.getElementById("burndown-note").textContent = "";
    chart.replaceChildren();
    showError(chart, e);
    state.ready = true;
    return;
  }
  const times = h.points.map((p) => p[0]);
  const left = h.points.map((p) => (p[1] === null ? null : p[1] * 100));
  chart.replaceChildren();
  state.charts.burndown = new uPlot({
    ...chartSize(chart, 260),
    series: [{}, { label: "budget left %", stroke: "#1f77b4", width: 2, fill: "rgba(31,119,180,0.12)", spanGaps: false },
      { label: "exhausted", stroke: "#d62728", dash: [4, 4], width: 1, points: { show: false } }],
    scales: { x: { time: true, range: [h.start, h.end] } },
    axes: [{}, { values: (_u, ticks) => ticks.map((t) => `${human(t)} %`), size: 70 }],
  }, [Float64Array.from(times), left, times.map(() => 0)], chart);
  const known = left.filter((p) => p !== null).length;
  state.drawn.burndown = { points: known, total: left.length, start: h.start, end: h.end, step: h.step_s };
  chart.dataset.points = String(known);
  document.getElementById("burndown-note").textContent =
    `Budget left at ${times.length} times over the whole period (${s.period}, one every ${dur(h.step_s)}), `
    + `each over the period ending then; ${known} with data. From the SLI itself (GET /slos/${name}/budget-history?source=raw_queries: `
    + "the recording rules have no history before they were loaded).";
  state.ready = true;
}

// ------------------------------------------------------------------ ETL page
const SHOWN_CYCLES = 20;

function cycleDetail(c) {
  const skipped = c.series.filter((x) => x.skipped.length);
  const rows = skipped.map((x) => el("tr", { "data-series": x.series },
    el("td", {}, el("code", { text: x.series })),
    el("td", { class: "num", text: String(x.samples) }),
    el("td", {}, x.skipped.map((k) => el("div", { title: k.detail }, el("code", { text: k.analysis }), ` ${k.reason}: ${k.detail}`)))));
  return el("div", { id: "etl-cycle", "data-run": c.run_id },
    el("h3", {}, "Cycle ", el("code", { text: c.run_id })),
    el("p", { class: "muted", text: `Window ${utc(c.window_start)} – ${utc(c.window_end)} at ${c.step_s} s: ${c.series_analysed} series analysed, ${c.series_analysed - c.series_with_skips} with every analysis, ${c.series_with_skips} with analyses skipped${c.truncated ? ` (the first ${c.series.length} series listed)` : ""}.` }),
    rows.length
      ? table(["series", "samples", "skipped analyses (reason: detail)"], rows, { id: "etl-skipped-series" })
      : el("p", { class: "muted", text: "No analysis was skipped on any series." }));
}

function drawCycles(node, cycles) {
  const asc = [...cycles].reverse();
  const xs = Float64Array.from(asc.map((c) => c.window_end));
  const data = [xs, asc.map((c) => c.series_analysed), asc.map((c) => c.series_with_skips)];
  node.replaceChildren();
  state.charts.cycles = new uPlot({
    ...chartSize(node, 220),
    series: [{},
      { label: "series analysed", stroke: "#1f77b4", width: 2, points: { show: true, size: 5 } },
      { label: "series with analyses skipped", stroke: "#b54708", width: 2, points: { show: true, size: 5 } }],
    scales: { x: { time: true } },
  }, data, node);
  state.drawn.cycles = { cycles: asc.length, analysed: data[1], skipped: data[2] };
}

async function etlPage(main) {
  const windows = ["1h", "12h", "1d", "7d"];
  const params = new URLSearchParams(location.search);
  let win = windows.includes(params.get("window")) ? params.get("window") : "12h";
  const buttons = windows.map((w) => el("button", { type: "button", "data-window": w, text: w }));
  const body = el("div", { id: "etl" });
  const cyclesBox = el("section", { id: "etl-cycles", "aria-label": "series analysed and skipped per cycle" });
  const detail = el("section", { id: "etl-detail", "aria-live": "polite" });
  main.replaceChildren(el("h1", { text: "ETL execution time" }),
    el("div", { class: "controls", role: "group", "aria-label": "window" }, buttons), body, cyclesBox, detail);

  async function showCycle(runId) {
    try {
      detail.replaceChildren(cycleDetail(await api(`/etl/cycles/${enc(runId)}?limit=1000`)));
    } catch (e) {
      detail.replaceChildren();
      showError(detail, e);
    }
  }

  async function load() {
    state.ready = false;
    for (const b of buttons) b.setAttribute("aria-pressed", b.dataset.window === win ? "true" : "false");
    const [r, cy] = await Promise.all([api(`/etl/execution-time?window=${win}`), api(`/etl/cycles?window=${win}`)]);
    const all = [{ analysis: "whole cycle", ...r.cycle }, ...r.analyses];
    const max = Math.max(1e-9, ...all.map((a) => a.max_s || 0));
    const rows = all.map((a) => el("tr", { "data-analysis": a.analysis },
      el("th", { scope: "row", text: a.analysis }),
      el("td", { class: "num", text: a.count === null ? "–" : String(Math.round(a.count)) }),
      el("td", { class: "num", text: a.p50_s === null ? "–" : `${(a.p50_s * 1000).toFixed(1)} ms` }),
      el("td", { class: "num", text: a.p95_s === null ? "–" : `${(a.p95_s * 1000).toFixed(1)} ms` }),
      el("td", { class: "num", text: a.max_s === null ? "–" : `${(a.max_s * 1000).toFixed(1)} ms` }),
      el("td", { class: "barcell" }, el("span", { class: "barbox" },
        el("span", { class: "bar bar-muted", style: `width:${(100 * (a.p95_s || 0)) / max}%` }),
        el("span", { class: "bar bar-ok", style: `width:${(100 * (a.p50_s || 0)) / max}%` })))));
    body.replaceChildren(
      el("p", { class: "muted", text: `Over ${r.window} ending ${utc(r.end)} (the ETL's own metrics, as Prometheus scraped them).` }),
      table(["analysis", "runs", "p50", "p95", "max", "p50 / p95"], rows, { id: "etl-table" }));

    // Series analysed and skipped per cycle: what data_storage stored of the ETL's messages.
    const reasons = new Map();
    for (const c of cy.cycles) {
      for (const k of c.skipped) {
        const key = `${k.analysis}\u0000${k.reason}`;
        reasons.set(key, (reasons.get(key) || 0) + k.series);
      }
    }
    const reasonRows = [...reasons.entries()].sort((a, b) => b[1] - a[1]).map(([key, n]) => {
      const [analysis, reason] = key.split("\u0000");
      return el("tr", { "data-analysis": analysis, "data-reason": reason, "data-count": n },
        el("td", {}, el("code", { text: analysis })), el("td", { text: reason }), el("td", { class: "num", text: String(n) }));
    });
    const cycleRows = cy.cycles.slice(0, SHOWN_CYCLES).map((c) => el("tr", { "data-run": c.run_id },
      el("td", { text: utc(c.window_end) }),
      el("td", { class: "num", text: String(c.series_analysed) }),
      el("td", { class: "num", text: String(c.series_with_skips) }),
      el("td", { text: c.skipped.map((k) => `${k.analysis} ${k.reason} ×${k.series}`).join(", ") || "–" }),
      el("td", {}, el("button", { type: "button", class: "cycle", text: "Series",
        "aria-label": `Series of the cycle ending ${utc(c.window_end)}`, onclick: () => showCycle(c.run_id) }))));
    const chart = el("div", { id: "cycles-chart", class: "chart", role: "img", "aria-label": "series analysed and with skipped analyses per cycle" });
    cyclesBox.replaceChildren(
      el("h2", { text: "Series analysed and skipped, per cycle" }),
      cy.cycles.length
        ? el("p", { class: "muted", text: `${cy.cycles.length} cycles whose window ended in the ${cy.window} before ${utc(cy.end)} (as stored by data_storage). Blue: series analysed; orange: of them, series with an analysis skipped.` })
        : el("p", { class: "muted", text: `No ETL cycle stored in the ${cy.window} before ${utc(cy.end)}.` }),
      chart,
      reasonRows.length ? el("h3", { text: "Skipped analyses by reason (series × cycles)" }) : null,
      reasonRows.length ? table(["analysis", "reason", "count"], reasonRows, { id: "etl-reasons" }) : null,
      cy.cycles.length ? el("h3", { text: `Cycles, newest first (the first ${Math.min(SHOWN_CYCLES, cy.cycles.length)})` }) : null,
      cy.cycles.length ? table(["window end", "analysed", "with skips", "skipped (analysis reason ×series)", ""], cycleRows, { id: "etl-cycles-table" }) : null);
    if (cy.cycles.length) {
      drawCycles(chart, cy.cycles);
      await showCycle(cy.cycles[0].run_id);
    } else {
      state.drawn.cycles = { cycles: 0, analysed: [], skipped: [] };
      detail.replaceChildren();
    }
    state.ready = true;
  }
  for (const b of buttons) b.addEventListener("click", () => { win = b.dataset.window; load().catch((e) => showError(body, e)); });
  await load();
}

// ------------------------------------------------------------------ start
const PAGES = { overview: overviewPage, sli: sliPage, slo: sloPage, etl: etlPage };

async function start() {
  const page = document.body.dataset.page;
  const main = $main();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === location.pathname) a.setAttribute("aria-current", "page");
  }
  try {
    await PAGES[page](main);
  } catch (e) {
    main.replaceChildren();
    showError(main, e);
  }
  document.body.dataset.ready = "true";
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
