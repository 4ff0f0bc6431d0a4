// healthmon dashboard: plain JS, no build step, nothing fetched from outside this server.
// Views: #/ (portfolio) and #/account/<id>. Live: server-sent events from /api/events.
// Charts: uPlot (MIT), vendored in /static/vendor/ (see its README.md) and served by healthmon itself.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const num = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
const pct = (v) => (v === null || v === undefined ? "–" : `${num(v, 1)}%`);
const money = (v) => (v === null || v === undefined ? "–" : num(v, 0));
const plural = (n, word) => `${num(n)} ${word}${n === 1 ? "" : "s"}`;
const band = (b) => `<span class="band ${esc(b || "none")}">${esc(b || "n/a")}</span>`;

async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body?.error?.message || resp.statusText);
  return body;
}

const RATING = { on_track: "on track", at_risk: "at risk", off_track: "off track" };
const BASIS = { month: "/mo", year: "/yr", level: "" };

// Times people read: "3 days ago" with the date and time (UTC) beside it; the ISO string stays in datetime.
const RTF = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
function ago(t, now = Date.now()) {
  const s = (t - now) / 1000;
  for (const [unit, size] of UNITS) if (Math.abs(s) >= size) return RTF.format(Math.round(s / size), unit);
  return RTF.format(Math.round(s), "second");
}
function absolute(t) {
  return `${new Date(t).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" })} UTC`;
}
function when(iso) {
  const t = Date.parse(iso ?? "");
  if (Number.isNaN(t)) return iso ? esc(iso) : "–";
  return `<time datetime="${esc(iso)}" title="${esc(absolute(t))}">${esc(ago(t))} <span class="muted">· ${esc(absolute(t))}</span></time>`;
}

// Every chart of the view, by element id: a re-render destroys them first; tests read window.hmCharts.
const charts = (window.hmCharts = {});
function dropCharts() {
  for (const id of Object.keys(charts)) {
    charts[id].destroy();
    delete charts[id];
  }
}
const monthTs = (p) => Date.parse(`${p}-01T00:00:00Z`) / 1000;
const dayTs = (d) => Date.parse(`${d}T00:00:00Z`) / 1000;
const DAY = { label: "Day", value: (u, v) => (v === null ? "–" : new Date(v * 1000).toISOString().slice(0, 10)) };
const line = (label, stroke, extra = {}) => ({ label, stroke, width: 2, spanGaps: true, ...extra });
const mark = (label, stroke) => ({ label, stroke, width: 1.5, dash: [5, 4], points: { show: false } });
// Draw a uPlot chart into the element with this id (sized to it); the data is [xs, ...series].
function plot(id, opts, data) {
  const el = document.getElementById(id);
  if (!el) return;
  if (typeof uPlot === "undefined") {
    el.innerHTML = `<p class="muted">The chart library did not load.</p>`;
    return;
  }
  charts[id] = new uPlot({ width: Math.max(el.clientWidth - 4, 200), height: 180, ...opts }, data, el);
  el.dataset.chart = "uplot";
}
const axes = (fmt, extra = []) => [{ stroke: "#5f6368", size: 30 }, { stroke: "#5f6368", size: 66, values: (u, vs) => vs.map(fmt) }, ...extra];
// Monthly charts: a tick per month, labelled "Nov 26".
const MONTH = (v) => new Date(v * 1000).toLocaleDateString("en-GB", { month: "short", year: "2-digit", timeZone: "UTC" });
const monthAxes = (fmt) => [{ stroke: "#5f6368", size: 30, splits: (u) => u.data[0], values: (u, vs) => vs.map(MONTH) }, axes(fmt)[1]];

const fmtOf = (unit) => (unit === "money" ? money : unit === "score" ? (v) => num(v, 1) : pct);

// "target ≥ 100%/yr · stretch 120%", or on the span measured: "target ≥ 99.1% a month (90.0%/yr)"
function targetText(a, unit, span) {
  if (!a) return "no target";
  const t = a.target, f = fmtOf(unit), op = t.direction === "higher" ? "≥" : "≤";
  const stretch = t.stretch === null || t.stretch === undefined ? "" : ` · stretch ${f(t.stretch)}`;
  if (span && t.basis !== "level" && a.good_on_span !== t.good) {
    return `target ${op} ${f(a.good_on_span)} ${span} (${f(t.good)}${BASIS[t.basis]})`;
  }
  return `target ${op} ${f(t.good)}${BASIS[t.basis]}${stretch}`;
}

// How long the figures of the period measure: "a month", "a quarter", "in 7 days"
function spanText(p) {
  if (p.to_date) return `in ${plural(p.days_elapsed, "day")}`;
  return p.period.length === 7 && !p.period.includes("Q") ? "a month" : p.period.includes("Q") ? "a quarter" : "a year";
}

function ratingBadge(a) {
  const r = a?.rating;
  return r ? `<span class="rating ${r}" data-rating="${r}">${RATING[r]}</span>` : `<span class="rating none" data-rating="none">not rated</span>`;
}

function deltaText(d, unit) {
  if (d.diff === null || d.diff === undefined) return esc(d.note || "");
  const arrow = d.diff > 0 ? "▲" : d.diff < 0 ? "▼" : "→";
  const size = unit === "money" ? money(Math.abs(d.diff)) : num(Math.abs(d.diff), 1);
  const verdict = d.verdict && d.verdict !== "same" ? ` (${d.verdict})` : d.note ? ` (${esc(d.note)})` : "";
  return `${arrow} ${size} vs ${esc(d.previous_period)}${verdict}`;
}

function tiles(card) {
  const span = card.period.startsWith("T12-") ? "" : spanText(card.progress);
  return card.figures.map((f) => {
    const fmt = fmtOf(f.unit), a = f.assessment;
    const todate = f.to_date ? `<span class="todate" title="the period is not over">to date</span>` : "";
    return `<div class="tile ${a?.rating || "unrated"}" data-metric="${f.figure}" data-rating="${a?.rating || "none"}" data-to-date="${f.to_date}">
      <h3>${esc(f.label)} ${todate}</h3><p class="value" data-value="${esc(f.value)}">${fmt(f.value)}</p>
      <p class="target">${ratingBadge(a)} <span class="muted">${targetText(a, f.unit, span)}</span></p>
      <p class="delta">${deltaText(f.delta, f.unit) || "&nbsp;"}</p></div>`;
  }).join("");
}

function trailing(card) {
  const t = card.trailing_12.trailing;
  if (!t.months_counted) return `<p class="muted">No closed month with a starting cohort yet.</p>`;
  const labels = { nrr: "NRR", grr: "GRR", logo_churn_rate: "Logo churn", revenue_churn_rate: "Revenue churn" };
  const rows = card.trailing_12.figures.map((a) => `<tr data-metric="${a.figure}"><th scope="row">${labels[a.figure]}</th><td class="num">${pct(a.value)}</td><td class="num">${a.target.basis === "month" ? pct(a.value_on_basis) + "/mo" : ""}</td><td>${ratingBadge(a)}</td><td class="muted">${targetText(a, "%")}</td></tr>`).join("");
  const note = t.annualised ? `annualised from ${plural(t.months_counted, "closed month")} (${esc(t.first_month)} to ${esc(t.last_month)})` : `${esc(t.first_month)} to ${esc(t.last_month)}`;
  return `<table id="trailing"><caption>Trailing 12 months, chain-linked: ${note}</caption><thead><tr><th>Figure</th><th class="num">A year</th><th class="num">A month</th><th>Rating</th><th>Target</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renewalRate(card) {
  const r = card.renewals;
  const rows = [
    ["Renewal rate", pct(r.renewal_rate), "renewed ÷ due"],
    ["Due", num(r.due_accounts), `${money(r.due_mrr)} MRR`],
    ["Renewed", num(r.renewed_accounts), `${money(r.renewed_mrr)} MRR`],
    ["Lost (canceled)", num(r.lost_accounts), ""],
    ["Open (not renewed yet)", num(r.open_accounts), ""],
  ];
  const table = `<table id="renewal-rate"><caption>Renewals due in ${esc(card.period)}${card.progress.to_date ? " (to date)" : ""}</caption><tbody>${rows.map(([k, v, n]) => `<tr><th scope="row">${k}</th><td class="num">${v}</td><td class="muted">${n}</td></tr>`).join("")}</tbody></table>`;
  const overdue = r.overdue.length
    ? `<table id="overdue"><caption>Overdue: ${plural(r.overdue_accounts, "account")}, ${money(r.overdue_mrr)} MRR — renewal date past, not moved</caption><thead><tr><th>Account</th><th>Was due</th><th class="num">MRR</th><th>Health</th><th>CSM</th></tr></thead><tbody>${r.overdue.map((a) => `<tr data-account="${esc(a.account_id)}"><td>${accountLink(a)}</td><td>${esc(a.renewal_date)}</td><td class="num">${money(a.mrr)}</td><td>${band(a.band)} ${num(a.score, 1)}</td><td>${esc(a.csm_name || a.csm)}</td></tr>`).join("")}</tbody></table>`
    : `<p class="muted">No overdue renewal.</p>`;
  return table + overdue;
}

function economics(card) {
  const u = card.unit_economics;
  return `<table id="economics"><caption class="sr">Unit economics</caption><tbody>
    <tr><th scope="row">ARR</th><td class="num">${money(u.arr)}</td><td class="muted">ending MRR × 12</td></tr>
    <tr><th scope="row">ARPA</th><td class="num">${money(u.arpa)}</td><td class="muted">MRR ÷ paying accounts</td></tr>
    <tr><th scope="row">Customer lifetime value</th><td class="num">${money(u.ltv)}</td><td class="muted">ARPA × gross margin (${num(u.gross_margin, 2)}) ÷ monthly revenue churn (${pct(u.monthly_revenue_churn)}, trailing 12 months)</td></tr>
  </tbody></table>`;
}

function adoption(card) {
  const f = (u, v) => (v === null || v === undefined ? "–" : u === "%" ? pct(v) : u === "count" ? num(v) : `${num(v, 1)} ${u === "days" ? "d" : "h"}`);
  const rows = card.adoption.map((x) => {
    const d = x.distribution;
    const q = d ? `${f(x.unit, d.p25)} · ${f(x.unit, d.p50)} · ${f(x.unit, d.p75)}` : "–";
    return `<tr data-metric="${x.figure}"><th scope="row">${esc(x.label)}</th><td class="num">${f(x.unit, x.value)}</td><td class="num">${q}</td><td class="num">${d ? num(d.accounts) : "–"}</td><td>${x.assessment ? ratingBadge(x.assessment) : ""}</td><td class="muted">${x.assessment ? targetText(x.assessment, x.unit === "hours" ? "score" : "%") : esc(x.note || (x.unit === "days" ? "shorter is better" : ""))}</td></tr>`;
  }).join("");
  return `<table id="adoption"><caption class="sr">Adoption and engagement</caption><thead><tr><th>Figure</th><th class="num">Book</th><th class="num">p25 · median · p75</th><th class="num">Accounts</th><th>Rating</th><th>Target</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// Logo retention as a colour, the same in the heat-map chart and the table: red (0 %) to green (100 %).
const heat = (r) => `hsl(${Math.round((r / 100) * 130)}, 55%, ${92 - (r / 100) * 12}%)`;

// The cohort table beside the heat-map: each cell's colour follows its logo retention (and says it in words).
function cohortTable(t) {
  if (!t.cohorts.length) return `<p class="muted">No cohort yet: an account joins its sign-up month's cohort when healthmon has seen it since that month.</p>`;
  const head = t.tenures.map((k) => `<th class="num">Month ${k}</th>`).join("");
  const cell = (c) => {
    if (!c) return `<td class="num muted">–</td>`;
    const onboarded = c.onboarding === null || c.onboarding === undefined ? "" : ` · onboarded ${pct(c.onboarding)}`;
    return `<td class="num heat" data-tenure="${c.tenure}" style="background:${heat(c.logo_retention ?? 0)}" title="${esc(c.month)}"><b>${pct(c.logo_retention)}</b><br><span class="muted">NRR ${pct(c.nrr)} · adoption ${pct(c.adoption)}${onboarded}</span>${c.to_date ? ` <span class="todate">to date</span>` : ""}</td>`;
  };
  const rows = t.cohorts.map((c) => `<tr data-cohort="${esc(c.cohort)}"><th scope="row">${esc(c.cohort)}</th><td class="num">${num(c.accounts)}</td><td class="num">${money(c.starting_mrr)}</td>${t.tenures.map((k) => cell(c.cells.find((x) => x.tenure === k))).join("")}</tr>`).join("");
  return `<table id="cohorts"><caption>Logo retention (colour), NRR, adoption and onboarding by sign-up month, months after sign-up</caption><thead><tr><th>Signed up</th><th class="num">Accounts</th><th class="num">MRR then</th>${head}</tr></thead><tbody>${rows}</tbody></table>`;
}

// The heat-map chart: sign-up months down (oldest on top), months after sign-up across, one uPlot series
// per cohort (its retention at each tenure, shown in the legend on hover); the cells are painted in a
// draw hook, as uPlot has no heat-map series of its own.
function drawCohortHeatMap(t) {
  if (!t.cohorts.length) return;
  const ks = t.tenures, n = t.cohorts.length;
  const xs = ks.map((_, j) => j);
  const grid = t.cohorts.map((c) => ks.map((k) => c.cells.find((x) => x.tenure === k)?.logo_retention ?? null));
  const row = (i) => n - 1 - i; // the y value of cohort i: the oldest at the top
  const paint = (u) => {
    const ctx = u.ctx, px = window.devicePixelRatio || 1;
    ctx.save();
    ctx.font = `${Math.round(12 * px)}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    grid.forEach((cells, i) => cells.forEach((r, j) => {
      if (r === null) return;
      const x0 = u.valToPos(j - 0.5, "x", true), x1 = u.valToPos(j + 0.5, "x", true);
      const y0 = u.valToPos(row(i) + 0.5, "row", true), y1 = u.valToPos(row(i) - 0.5, "row", true);
      ctx.fillStyle = heat(r);
      ctx.fillRect(x0 + px, y0 + px, x1 - x0 - 2 * px, y1 - y0 - 2 * px);
      ctx.fillStyle = "#1f1f1f";
      ctx.fillText(pct(r), (x0 + x1) / 2, (y0 + y1) / 2);
    }));
    ctx.restore();
  };
  const series = [
    { label: "Months after sign-up", value: (u, v) => (v === null || v === undefined ? "–" : `month ${ks[v]}`) },
    ...t.cohorts.map((c) => ({ label: c.cohort, scale: "%", paths: () => null, points: { show: false }, value: (u, v) => pct(v) })),
  ];
  const opts = {
    height: Math.max(140, 34 * n + 60),
    scales: { x: { time: false, auto: false, range: [-0.5, ks.length - 0.5] }, row: { auto: false, range: [-0.5, n - 0.5] }, "%": { auto: false, range: [0, 100] } },
    axes: [
      { stroke: "#5f6368", size: 30, grid: { show: false }, splits: () => xs, values: (u, vs) => vs.map((v) => `month ${ks[v]}`) },
      { scale: "row", stroke: "#5f6368", size: 70, grid: { show: false }, splits: () => t.cohorts.map((_, i) => row(i)), values: (u, vs) => vs.map((v) => t.cohorts[n - 1 - v]?.cohort ?? "") },
    ],
    series,
    legend: { show: n <= 12 },
    hooks: { draw: [paint] },
  };
  plot("cohort-heatmap", opts, [xs, ...grid]);
}

function csmTable(t) {
  if (!t.rows.length) return `<p class="muted">No CSM in this period.</p>`;
  const ranges = Object.entries(t.ranges).map(([s, [lo, hi]]) => `${esc(s)} ${lo}-${hi}`).join(", ");
  const mix = (m) => Object.entries(m).map(([s, n]) => `${esc(s)} ${n}`).join(", ");
  const load = (r) => (r.load === null ? "–" : `${num(r.load * 100, 0)}% <span class="guide ${esc(r.guidance)}">${esc(r.guidance)}</span>`);
  const rows = t.rows.map((r) => `<tr data-csm="${esc(r.csm)}"><td>${esc(r.csm_name || r.csm)}</td><td class="num">${num(r.accounts)}</td><td class="num">${money(r.arr)}</td><td>${mix(r.accounts_by_segment)}</td><td class="num">${load(r)}</td><td class="num">${pct(r.healthy_pct)}</td><td class="num">${pct(r.nrr)}</td><td class="num">${pct(r.grr)}</td><td class="num">${money(r.at_risk_mrr)}</td><td class="num">${num(r.nps, 1)}</td><td class="num">${pct(r.csat)}</td><td class="num">${pct(r.renewal_rate)}</td><td class="num open-tasks">${num(r.open_tasks)}</td><td class="num overdue-tasks">${num(r.overdue_tasks)}</td><td class="num on-time">${pct(r.tasks_on_time_pct)}</td></tr>`).join("");
  return `<table id="csms"><caption>CSMs side by side · accounts per CSM guidance: ${ranges}</caption><thead><tr><th>CSM</th><th class="num">Accounts</th><th class="num">ARR</th><th>Segments</th><th class="num">Load</th><th class="num">% healthy</th><th class="num">NRR</th><th class="num">GRR</th><th class="num">MRR at risk</th><th class="num">NPS</th><th class="num">CSAT</th><th class="num">Renewal rate</th><th class="num">Open tasks</th><th class="num">Overdue tasks</th><th class="num">Tasks on time</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function bands(fig) {
  const order = ["green", "yellow", "red", "none"];
  const total = order.reduce((s, b) => s + (fig.accounts_by_band?.[b] || 0), 0) || 1;
  const bar = order.map((b) => `<div class="${b}" style="width:${((fig.accounts_by_band?.[b] || 0) / total) * 100}%"></div>`).join("");
  const rows = order.map((b) => `<tr data-band="${b}"><td>${band(b)}</td><td class="num">${num(fig.accounts_by_band?.[b] || 0)}</td><td class="num">${money(fig.mrr_by_band?.[b] || 0)}</td></tr>`).join("");
  return `<div class="bandbar" role="img" aria-label="Accounts by band: ${order.map((b) => `${b} ${fig.accounts_by_band?.[b] || 0}`).join(", ")}">${bar}</div>
    <table id="bands"><caption class="sr">Band distribution</caption><thead><tr><th>Band</th><th class="num">Accounts</th><th class="num">MRR</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function accountLink(a) {
  return `<a href="#/account/${encodeURIComponent(a.account_id)}">${esc(a.name || a.account_id)}</a>`;
}

function atRisk(fig) {
  if (!fig.at_risk.length) return `<p class="muted">No account in the red band.</p>`;
  const rows = fig.at_risk.map((a) => `<tr data-account="${esc(a.account_id)}"><td>${accountLink(a)}</td><td class="num">${money(a.mrr)}</td><td class="num">${num(a.score, 1)}</td><td>${esc(a.csm_name || a.csm)}</td><td><ul class="drivers">${a.drivers.map((d) => `<li>${esc(d)}</li>`).join("")}</ul></td></tr>`).join("");
  return `<table id="at-risk"><caption>At risk: ${plural(fig.at_risk_accounts, "account")}, ${money(fig.at_risk_mrr)} MRR</caption><thead><tr><th>Account</th><th class="num">MRR</th><th class="num">Score</th><th>CSM</th><th>Why</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renewals(fig) {
  if (!fig.renewals_90d.length) return `<p class="muted">No renewal in the next 90 days.</p>`;
  const rows = fig.renewals_90d.map((a) => `<tr data-account="${esc(a.account_id)}"><td>${accountLink(a)}</td><td>${esc(a.renewal_date)}</td><td class="num">${money(a.mrr)}</td><td>${band(a.band)} ${num(a.score, 1)}</td><td>${esc(a.csm_name || a.csm)}</td></tr>`).join("");
  return `<table id="renewals"><caption>Renewals in the next 90 days: ${plural(fig.renewals_90d_accounts, "account")}, ${money(fig.renewals_90d_mrr)} MRR</caption><thead><tr><th>Account</th><th>Renews</th><th class="num">MRR</th><th>Health</th><th>CSM</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function bridge(fig) {
  const rows = [
    ["Starting MRR", money(fig.starting_mrr), plural(fig.starting_accounts, "account")],
    ["+ Expansion", money(fig.expansion_mrr), pct(fig.expansion_rate)],
    ["− Contraction", money(fig.contraction_mrr), ""],
    ["− Churned", money(fig.churned_mrr), plural(fig.churned_accounts, "account")],
    ["New (not in NRR)", money(fig.new_mrr), plural(fig.new_accounts, "account")],
    ["Ending MRR", money(fig.ending_mrr), `${num(fig.active_accounts)} active`],
    ["NPS", num(fig.nps, 1), plural(fig.nps_responses, "answer")],
    ["CSAT", pct(fig.csat), plural(fig.csat_responses, "answer")],
    ["CES", num(fig.ces, 2), plural(fig.ces_responses, "answer")],
  ];
  return `<table id="bridge"><caption>MRR bridge and satisfaction</caption><tbody>${rows.map(([k, v, n]) => `<tr><th scope="row">${k}</th><td class="num">${v}</td><td class="muted">${n}</td></tr>`).join("")}</tbody></table>`;
}

// A 12-month trend chart per headline figure, each month's value beside the target over one month.
function trendCharts(card) {
  return card.figures.map((f) => `<figure class="trend"><figcaption>${esc(f.label)}</figcaption><div class="chart-box" id="trend-${esc(f.figure)}" data-metric="${esc(f.figure)}" role="img" aria-label="${esc(f.label)} by month${f.assessment ? ` against a target of ${fmtOf(f.unit)(f.assessment.good_a_month)} a month` : ""}"></div></figure>`).join("");
}
function drawTrends(card, trend) {
  const xs = trend.map((t) => monthTs(t.period));
  for (const f of card.figures) {
    const fmt = fmtOf(f.unit), a = f.assessment;
    const series = [{}, line(f.label, "#0b57d0", { value: (u, v) => fmt(v) })];
    const data = [xs, trend.map((t) => t[f.figure] ?? null)];
    if (a) {
      series.push(mark(`Target ${a.target.direction === "higher" ? "≥" : "≤"} ${fmt(a.good_a_month)} a month`, "#1b6e3a"));
      data.push(xs.map(() => a.good_a_month));
    }
    plot(`trend-${f.figure}`, { series: [{ label: "Month", value: (u, v) => (v === null ? "–" : MONTH(v)) }, ...series.slice(1)], axes: monthAxes(fmt) }, data);
  }
}
// The share of accounts in each band, month by month.
const BAND_COLOURS = { green: "#1b6e3a", yellow: "#8a6d00", red: "#b3261e", none: "#767676" };
function drawBandsOverTime(trend) {
  const xs = trend.map((t) => monthTs(t.period));
  const total = trend.map((t) => Object.values(t.accounts_by_band || {}).reduce((x, y) => x + y, 0) || null);
  const order = ["green", "yellow", "red", "none"];
  const data = [xs, ...order.map((b) => trend.map((t, i) => (total[i] ? ((t.accounts_by_band?.[b] || 0) / total[i]) * 100 : null)))];
  const series = [{ label: "Month", value: (u, v) => (v === null ? "–" : MONTH(v)) }, ...order.map((b) => line(b === "none" ? "no score" : b, BAND_COLOURS[b], { value: (u, v) => pct(v) }))];
  plot("bands-over-time", { series, axes: monthAxes(pct), scales: { y: { range: [0, 100] } } }, data);
}

const state = { period: null, pinned: false, group: "all" }; // pinned: the user chose a period

async function loadFilters() {
  const info = await api("/api/portfolio/periods");
  const sel = $("#period");
  const cur = state.pinned && state.period ? state.period : info.latest_month; // else follow the latest
  const months = info.periods.filter((p) => p.length === 7 && !p.includes("Q"));
  const t12 = months.length > 1 ? [`T12-${months[months.length - 2]}`] : []; // through the last closed month
  sel.innerHTML = [...t12, ...info.periods.slice().reverse()].map((p) => `<option value="${esc(p)}" ${p === cur ? "selected" : ""}>${esc(p.startsWith("T12-") ? `Trailing 12 months to ${p.slice(4)}` : p)}</option>`).join("");
  state.period = cur;
  const g = $("#group");
  const groups = info.groups.filter((x) => x !== "all");
  g.innerHTML = `<option value="all">Whole book</option>` + groups.map((x) => `<option value="${esc(x)}" ${x === state.group ? "selected" : ""}>${esc(x.replace(":", ": "))}</option>`).join("");
  return info;
}

// The cohorts of a segment when one is picked, else of the whole book (a segment without any yet: none).
async function cohortsOf(group) {
  const seg = group.startsWith("segment:");
  try {
    return await api(`/api/portfolio/cohorts${seg ? `?group=${encodeURIComponent(group)}` : ""}`);
  } catch (e) {
    if (!seg) throw e;
    return { group, segments: [], tenures: [1, 3, 6, 12], cohorts: [] };
  }
}

async function showPortfolio() {
  const info = await loadFilters();
  if (!state.period) {
    $("#view").innerHTML = `<p class="muted">No portfolio figures yet: is <code>healthmon readmodel</code> running and are snapshots arriving?</p>`;
    return;
  }
  const base = state.period.startsWith("T12-") ? state.period.slice(4) : state.period; // lists: the last month
  const g = encodeURIComponent(state.group);
  const [fig, trend, card, csms, cohorts, playbooks] = await Promise.all([
    api(`/api/portfolio?period=${encodeURIComponent(base)}&group=${g}`),
    api(`/api/portfolio/trend?group=${g}&months=12`),
    api(`/api/portfolio/scorecard?period=${encodeURIComponent(state.period)}&group=${g}`),
    api(`/api/portfolio/csms?period=${encodeURIComponent(base)}`),
    cohortsOf(state.group),
    window.playbooksSection ? window.playbooksSection(base) : "", // streams/web/static/playbooks.js
  ]);
  const upto = trend.filter((t) => t.period <= base);
  const p = card.progress;
  const todate = p.to_date ? ` <span class="todate" id="period-to-date">to date · day ${p.days_elapsed} of ${p.days_total}</span>` : "";
  $("#asof").innerHTML = when(fig.as_of);
  dropCharts();
  $("#view").innerHTML = `
    <h2 id="portfolio-title">${esc(state.group === "all" ? "Whole book" : state.group)} · ${esc(state.period.startsWith("T12-") ? `trailing 12 months to ${base}` : fig.period)}${todate}</h2>
    <section class="tiles" aria-labelledby="portfolio-title">${tiles(card)}</section>
    <p class="muted legend">Each figure against its target (docs/portfolio.md, "Targets"): <span class="rating on_track">on track</span> <span class="rating at_risk">at risk</span> <span class="rating off_track">off track</span>. Annual targets are met by compounding a month's rate; a period to date is not compared with the last one.</p>
    <section><h2>The last 12 months against target</h2><div class="panel trends" id="trends">${trendCharts(card)}</div></section>
    <div class="grid2">
      <section><h2>Trailing 12 months</h2><div class="panel">${trailing(card)}</div></section>
      <section><h2>Unit economics</h2><div class="panel">${economics(card)}</div></section>
    </div>
    <section><h2>Adoption and engagement${p.to_date ? ' <span class="todate">to date</span>' : ""}</h2><div class="panel">${adoption(card)}</div></section>
    <section><h2>CSMs side by side</h2><div class="panel">${csmTable(csms)}</div></section>
    ${playbooks}
    <section><h2>Cohorts (${esc(cohorts.group === "all" ? "whole book" : cohorts.group.replace(":", ": "))})</h2><div class="panel"><div class="chart-box" id="cohort-heatmap" role="img" aria-label="Logo retention by sign-up month (rows) and months after sign-up (columns)"></div>${cohortTable(cohorts)}</div></section>
    <div class="grid2">
      <section><h2>Band distribution</h2><div class="panel">${bands(fig)}<h3 class="sub">Share of accounts by band, by month</h3><div class="chart-box" id="bands-over-time" role="img" aria-label="Share of accounts in each band, month by month"></div></div></section>
      <section><h2>MRR and satisfaction</h2><div class="panel">${bridge(fig)}</div></section>
    </div>
    <section><h2>At risk</h2><div class="panel">${atRisk(fig)}</div></section>
    <div class="grid2">
      <section><h2>Renewal rate</h2><div class="panel">${renewalRate(card)}</div></section>
      <section><h2>Renewals ahead</h2><div class="panel">${renewals(fig)}</div></section>
    </div>
    <p class="muted">${info.periods.length} periods in the read model.</p>`;
  const months = upto.length ? upto : [fig];
  drawTrends(card, months);
  drawBandsOverTime(months);
  drawCohortHeatMap(cohorts);
}

// The score history, with the band lines of the scorecard in force (from the API, never assumed).
function drawHistory(history, bands) {
  const pts = history.filter((h) => h.score !== null && h.score !== undefined);
  const xs = pts.map((h) => dayTs(h.day));
  const series = [
    DAY,
    line("Score", "#0b57d0", { value: (u, v) => num(v, 1) }),
    mark(`Red below ${num(bands.red_below)}`, "#b3261e"),
    mark(`Yellow below ${num(bands.yellow_below)}`, "#8a6d00"),
  ];
  const data = [xs, pts.map((h) => h.score), xs.map(() => bands.red_below), xs.map(() => bands.yellow_below)];
  plot("history-chart", { series, axes: axes((v) => num(v)), scales: { y: { range: [0, 100] } } }, data);
}

// Usage: adoption and DAU/MAU (% of seats / of monthly users, left axis), active users in 30 days (right).
function drawUsage(history) {
  const xs = history.map((h) => dayTs(h.day));
  const share = (v) => (v === null || v === undefined ? null : v * 100);
  const series = [
    DAY,
    line("Adoption (% of seats)", "#0b57d0", { value: (u, v) => pct(v) }),
    line("DAU/MAU", "#8a3ffc", { value: (u, v) => pct(v) }),
    line("Active users (30 d)", "#1b6e3a", { scale: "users", value: (u, v) => num(v) }),
  ];
  const data = [xs, history.map((h) => share(h.adoption_rate)), history.map((h) => share(h.dau_mau)), history.map((h) => h.active_users_30d ?? null)];
  const right = { scale: "users", side: 1, stroke: "#1b6e3a", size: 44, grid: { show: false } };
  plot("usage-chart", { series, axes: axes(pct, [right]), scales: { y: { range: [0, 100] } } }, data);
}

const ENDED = { recovered: "recovered", cancelled: "account cancelled", superseded: "superseded", rule_removed: "rule removed" };

function episodeRow(e) {
  const end = e.status === "resolved" ? `${when(e.resolved_at)} · <b class="ended">${esc(ENDED[e.ended_by] || e.ended_by)}</b>` : `<span class="muted">still firing</span>`;
  const t = e.task;
  const task = t ? `<a class="task" data-task="${esc(t.task_id)}" data-state="${esc(t.state)}" href="/api/tasks/${encodeURIComponent(t.task_id)}">${esc(t.state)}</a> · ${esc(t.step)}${t.outcome ? ` · ${esc(t.outcome)}` : ""}<br><span class="muted">${esc(t.owner || t.owner_role)} · due ${when(t.due_at)}</span>` : `<span class="muted">–</span>`;
  return `<tr data-alert="${esc(e.alert_id)}" data-status="${esc(e.status)}" data-ended-by="${esc(e.ended_by || "")}"><td><span class="status ${esc(e.status)}">${esc(e.status)}</span></td><td>${esc(e.severity)}</td><td>${esc(e.summary)}</td><td>${when(e.fired_at)}</td><td>${end}</td><td>${e.status === "firing" ? esc(e.action || "") : ""}</td><td>${task}</td></tr>`;
}

function comments(list) {
  if (!list.length) return `<p class="muted">No comment with an answer yet.</p>`;
  return `<ul id="comments">${list.map((c) => `<li data-kind="${esc(c.kind)}"><span class="muted">${esc(c.kind.toUpperCase())} ${num(c.score)} · ${when(c.at)}</span><blockquote>${esc(c.comment)}</blockquote></li>`).join("")}</ul>`;
}

async function showAccount(id) {
  const a = await api(`/api/accounts/${encodeURIComponent(id)}`);
  const s = a.snapshot, acc = s.account || {}, m = s.metrics || {};
  const comps = (s.components || []).map((c) => `<tr><td>${esc(c.label || c.name)}</td><td class="num">${num(c.score, 1)}</td><td class="num">${num(c.weight, 0)}</td><td class="num">${num(c.contribution, 1)}</td></tr>`).join("");
  const drivers = (s.drivers || []).map((d) => `<li>${esc(d.text)} <span class="muted">(−${num(d.points_lost, 1)} points)</span></li>`).join("");
  const eps = a.episodes || [];
  const alerts = eps.slice(0, 20).map(episodeRow).join("");
  const silences = a.silences.map((x) => `<li>${esc(JSON.stringify(x.matchers))} until ${when(new Date(x.ends_at * 1000).toISOString())} ${esc(x.comment)}</li>`).join("");
  const canceled = !!m.canceled;
  const head = canceled
    ? `<div>Status<b data-field="status" class="cancelled">Cancelled</b></div>`
    : `<div>Score<b data-field="score">${num(s.score, 1)}</b></div>
      <div>Renews in<b data-field="renews">${m.days_to_renewal === null || m.days_to_renewal === undefined ? "–" : plural(m.days_to_renewal, "day")}</b></div>`;
  $("#asof").innerHTML = when(s.as_of);
  dropCharts();
  $("#view").innerHTML = `
    <p><a href="#/">← Portfolio</a></p>
    <h2 id="account-name" data-canceled="${canceled}">${esc(acc.name || s.account_id)} ${canceled ? `<span class="band cancelled">cancelled</span>` : band(s.band)}</h2>
    <div class="kv">
      ${head}
      <div>MRR<b>${money(m.mrr)}</b></div>
      <div>Adoption<b data-field="adoption">${m.adoption_rate === null || m.adoption_rate === undefined ? "–" : pct(m.adoption_rate * 100)}</b></div>
      <div>Active users (30 d)<b>${num(m.active_users_30d)}</b></div>
      <div>CSM<b>${esc(acc.csm_name || acc.csm_email || "–")}</b></div>
      <div>Segment<b>${esc(acc.segment || "–")}</b></div>
    </div>
    ${canceled ? `<p class="muted" id="canceled-note">This account cancelled: its last score and renewal no longer apply.</p>` : ""}
    <div class="grid2">
      <section><h2>Score history</h2><div class="panel">${a.history.some((h) => h.score !== null && h.score !== undefined) ? `<div class="chart-box" id="history-chart" role="img" aria-label="Daily health score with the ${esc(a.bands.scorecard)} scorecard's bands: red below ${num(a.bands.red_below)}, yellow below ${num(a.bands.yellow_below)}"></div>` : `<p class="muted">No score history yet.</p>`}</div></section>
      <section><h2>Usage and adoption</h2><div class="panel">${a.history.length ? `<div class="chart-box" id="usage-chart" role="img" aria-label="Adoption, DAU/MAU and active users by day"></div>` : `<p class="muted">No usage history yet.</p>`}</div></section>
    </div>
    <div class="grid2">
      <section><h2>Components</h2><div class="panel"><table id="components"><thead><tr><th>Component</th><th class="num">Score</th><th class="num">Weight</th><th class="num">Points</th></tr></thead><tbody>${comps}</tbody></table></div></section>
      <section><h2>Why</h2><div class="panel">${drivers ? `<ul class="drivers" id="drivers">${drivers}</ul>` : `<p class="muted">Nothing costs points.</p>`}</div></section>
    </div>
    <section><h2>What customers said</h2><div class="panel">${comments(a.comments || [])}</div></section>
    <section><h2>Alerts</h2><div class="panel">${alerts ? `<table id="alerts"><caption class="sr">One row per alert episode</caption><thead><tr><th>Status</th><th>Severity</th><th>What</th><th>Fired</th><th>Ended</th><th>Next step</th><th>Task</th></tr></thead><tbody>${alerts}</tbody></table>${eps.length > 20 ? `<p class="muted">The latest 20 of ${eps.length}: <a href="/api/alerts?account=${encodeURIComponent(s.account_id)}">all as JSON</a>.</p>` : ""}` : `<p class="muted">No alerts.</p>`}</div></section>
    <section><h2>Silences</h2><div class="panel">${silences ? `<ul>${silences}</ul>` : `<p class="muted">None.</p>`}</div></section>`;
  drawHistory(a.history, a.bands);
  if (a.history.length) drawUsage(a.history);
}

async function render() {
  const m = location.hash.match(/^#\/account\/(.+)$/);
  try {
    if (m) await showAccount(decodeURIComponent(m[1]));
    else await showPortfolio();
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  } catch (err) {
    $("#view").innerHTML = `<p role="alert">Could not load: ${esc(err.message)}</p>`;
  }
}

let pending = null;
function scheduleRender() {
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    await render();
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  }, 250);
}

function connect() {
  const live = $("#live");
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => { live.dataset.state = "live"; live.textContent = "live"; });
  es.addEventListener("update", () => { live.textContent = `live · updated ${new Date().toLocaleTimeString()}`; scheduleRender(); });
  es.onerror = () => { live.dataset.state = "offline"; live.textContent = "reconnecting…"; };
}

window.addEventListener("hashchange", () => { render(); $("#view").focus(); });
document.addEventListener("DOMContentLoaded", () => {
  $("#period").addEventListener("change", (e) => { state.period = e.target.value; state.pinned = true; render(); });
  $("#group").addEventListener("change", (e) => { state.group = e.target.value; render(); });
  render();
  connect();
});
