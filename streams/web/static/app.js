// healthmon dashboard: plain JS, no build step, nothing fetched from outside this server.
// Views: #/ (portfolio) and #/account/<id>. Live: server-sent events from /api/events.
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

// A sparkline of the group's monthly values (inline SVG, described for screen readers).
function spark(values, label) {
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  if (pts.length < 2) return `<svg role="img" aria-label="${esc(label)}: not enough history"></svg>`;
  const ys = pts.map(([, v]) => v);
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const w = 160, h = 32, n = values.length - 1 || 1;
  const d = pts.map(([i, v], k) => `${k ? "L" : "M"}${((i / n) * (w - 4) + 2).toFixed(1)},${(h - 3 - ((v - lo) / span) * (h - 6)).toFixed(1)}`).join(" ");
  return `<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="${esc(label)} trend: ${ys.map((y) => num(y, 1)).join(", ")}"><path d="${d}" fill="none" stroke="#0b57d0" stroke-width="1.6"/></svg>`;
}

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

function tiles(card, trend) {
  const span = card.period.startsWith("T12-") ? "" : spanText(card.progress);
  return card.figures.map((f) => {
    const fmt = fmtOf(f.unit), a = f.assessment;
    const todate = f.to_date ? `<span class="todate" title="the period is not over">to date</span>` : "";
    return `<div class="tile ${a?.rating || "unrated"}" data-metric="${f.figure}" data-rating="${a?.rating || "none"}" data-to-date="${f.to_date}">
      <h3>${esc(f.label)} ${todate}</h3><p class="value" data-value="${esc(f.value)}">${fmt(f.value)}</p>
      <p class="target">${ratingBadge(a)} <span class="muted">${targetText(a, f.unit, span)}</span></p>
      ${spark(trend.map((t) => t[f.figure]), f.label)}<p class="delta">${deltaText(f.delta, f.unit) || "&nbsp;"}</p></div>`;
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
    return `<tr data-metric="${x.figure}"><th scope="row">${esc(x.label)}</th><td class="num">${f(x.unit, x.value)}</td><td class="num">${q}</td><td class="num">${d ? num(d.accounts) : "–"}</td><td>${x.assessment ? ratingBadge(x.assessment) : ""}</td><td class="muted">${x.assessment ? targetText(x.assessment, x.unit === "hours" ? "score" : "%") : x.figure === "ttfv_days" ? "shorter is better" : ""}</td></tr>`;
  }).join("");
  return `<table id="adoption"><caption class="sr">Adoption and engagement</caption><thead><tr><th>Figure</th><th class="num">Book</th><th class="num">p25 · median · p75</th><th class="num">Accounts</th><th>Rating</th><th>Target</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// The cohort table as a heat-map: each cell's colour follows its logo retention (and says it in words).
function cohortTable(t) {
  if (!t.cohorts.length) return `<p class="muted">No cohort yet: an account joins its sign-up month's cohort when healthmon has seen it since that month.</p>`;
  const head = t.tenures.map((k) => `<th class="num">Month ${k}</th>`).join("");
  const cell = (c) => {
    if (!c) return `<td class="num muted">–</td>`;
    const r = c.logo_retention ?? 0;
    const bg = `hsl(${Math.round((r / 100) * 130)}, 55%, ${92 - (r / 100) * 12}%)`;
    return `<td class="num heat" data-tenure="${c.tenure}" style="background:${bg}" title="${esc(c.month)}"><b>${pct(c.logo_retention)}</b><br><span class="muted">NRR ${pct(c.nrr)} · adoption ${pct(c.adoption)}</span>${c.to_date ? ` <span class="todate">to date</span>` : ""}</td>`;
  };
  const rows = t.cohorts.map((c) => `<tr data-cohort="${esc(c.cohort)}"><th scope="row">${esc(c.cohort)}</th><td class="num">${num(c.accounts)}</td><td class="num">${money(c.starting_mrr)}</td>${t.tenures.map((k) => cell(c.cells.find((x) => x.tenure === k))).join("")}</tr>`).join("");
  return `<table id="cohorts"><caption>Logo retention (colour), NRR and adoption by sign-up month, months after sign-up</caption><thead><tr><th>Signed up</th><th class="num">Accounts</th><th class="num">MRR then</th>${head}</tr></thead><tbody>${rows}</tbody></table>`;
}

function csmTable(t) {
  if (!t.rows.length) return `<p class="muted">No CSM in this period.</p>`;
  const ranges = Object.entries(t.ranges).map(([s, [lo, hi]]) => `${esc(s)} ${lo}-${hi}`).join(", ");
  const mix = (m) => Object.entries(m).map(([s, n]) => `${esc(s)} ${n}`).join(", ");
  const load = (r) => (r.load === null ? "–" : `${num(r.load * 100, 0)}% <span class="guide ${esc(r.guidance)}">${esc(r.guidance)}</span>`);
  const rows = t.rows.map((r) => `<tr data-csm="${esc(r.csm)}"><td>${esc(r.csm_name || r.csm)}</td><td class="num">${num(r.accounts)}</td><td class="num">${money(r.arr)}</td><td>${mix(r.accounts_by_segment)}</td><td class="num">${load(r)}</td><td class="num">${pct(r.healthy_pct)}</td><td class="num">${pct(r.nrr)}</td><td class="num">${pct(r.grr)}</td><td class="num">${money(r.at_risk_mrr)}</td><td class="num">${num(r.nps, 1)}</td><td class="num">${pct(r.csat)}</td><td class="num">${pct(r.renewal_rate)}</td></tr>`).join("");
  return `<table id="csms"><caption>CSMs side by side · accounts per CSM guidance: ${ranges}</caption><thead><tr><th>CSM</th><th class="num">Accounts</th><th class="num">ARR</th><th>Segments</th><th class="num">Load</th><th class="num">% healthy</th><th class="num">NRR</th><th class="num">GRR</th><th class="num">MRR at risk</th><th class="num">NPS</th><th class="num">CSAT</th><th class="num">Renewal rate</th></tr></thead><tbody>${rows}</tbody></table>`;
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

async function showPortfolio() {
  const info = await loadFilters();
  if (!state.period) {
    $("#view").innerHTML = `<p class="muted">No portfolio figures yet: is <code>healthmon readmodel</code> running and are snapshots arriving?</p>`;
    return;
  }
  const base = state.period.startsWith("T12-") ? state.period.slice(4) : state.period; // lists: the last month
  const g = encodeURIComponent(state.group);
  const [fig, trend, card, csms, cohorts] = await Promise.all([
    api(`/api/portfolio?period=${encodeURIComponent(base)}&group=${g}`),
    api(`/api/portfolio/trend?group=${g}&months=12`),
    api(`/api/portfolio/scorecard?period=${encodeURIComponent(state.period)}&group=${g}`),
    api(`/api/portfolio/csms?period=${encodeURIComponent(base)}`),
    api("/api/portfolio/cohorts"),
  ]);
  const upto = trend.filter((t) => t.period <= base);
  const p = card.progress;
  const todate = p.to_date ? ` <span class="todate" id="period-to-date">to date · day ${p.days_elapsed} of ${p.days_total}</span>` : "";
  $("#asof").textContent = fig.as_of || "–";
  $("#view").innerHTML = `
    <h2 id="portfolio-title">${esc(state.group === "all" ? "Whole book" : state.group)} · ${esc(state.period.startsWith("T12-") ? `trailing 12 months to ${base}` : fig.period)}${todate}</h2>
    <section class="tiles" aria-labelledby="portfolio-title">${tiles(card, upto.length ? upto : [fig])}</section>
    <p class="muted legend">Each figure against its target (docs/portfolio.md, "Targets"): <span class="rating on_track">on track</span> <span class="rating at_risk">at risk</span> <span class="rating off_track">off track</span>. Annual targets are met by compounding a month's rate; a period to date is not compared with the last one.</p>
    <div class="grid2">
      <section><h2>Trailing 12 months</h2><div class="panel">${trailing(card)}</div></section>
      <section><h2>Unit economics</h2><div class="panel">${economics(card)}</div></section>
    </div>
    <section><h2>Adoption and engagement${p.to_date ? ' <span class="todate">to date</span>' : ""}</h2><div class="panel">${adoption(card)}</div></section>
    <section><h2>CSMs side by side</h2><div class="panel">${csmTable(csms)}</div></section>
    <section><h2>Cohorts (whole book)</h2><div class="panel">${cohortTable(cohorts)}</div></section>
    <div class="grid2">
      <section><h2>Band distribution</h2><div class="panel">${bands(fig)}</div></section>
      <section><h2>MRR and satisfaction</h2><div class="panel">${bridge(fig)}</div></section>
    </div>
    <section><h2>At risk</h2><div class="panel">${atRisk(fig)}</div></section>
    <div class="grid2">
      <section><h2>Renewal rate</h2><div class="panel">${renewalRate(card)}</div></section>
      <section><h2>Renewals ahead</h2><div class="panel">${renewals(fig)}</div></section>
    </div>
    <p class="muted">${info.periods.length} periods in the read model.</p>`;
}

// The score history: a line over the days, the band thresholds as dashed lines.
function historyChart(history) {
  const pts = history.filter((h) => h.score !== null && h.score !== undefined);
  if (!pts.length) return `<p class="muted">No score history yet.</p>`;
  const w = 720, h = 220, l = 34, r = 8, t = 8, b = 22;
  const day = (s) => Date.parse(`${s}T00:00:00Z`) / 86400000;
  const d0 = day(pts[0].day), d1 = Math.max(day(pts[pts.length - 1].day), d0 + 1);
  const x = (s) => l + ((day(s) - d0) / (d1 - d0)) * (w - l - r);
  const y = (v) => t + (1 - v / 100) * (h - t - b);
  const line = pts.map((p, i) => `${i ? "L" : "M"}${x(p.day).toFixed(1)},${y(p.score).toFixed(1)}`).join(" ");
  const dots = pts.map((p) => `<circle cx="${x(p.day).toFixed(1)}" cy="${y(p.score).toFixed(1)}" r="2.5" class="pt" fill="var(--${p.band || "none"})"><title>${esc(p.day)}: ${num(p.score, 1)} (${esc(p.band)})</title></circle>`).join("");
  const grid = [0, 40, 60, 100].map((v) => `<line x1="${l}" x2="${w - r}" y1="${y(v)}" y2="${y(v)}" stroke="#ccc" ${v === 40 || v === 60 ? 'stroke-dasharray="4 3"' : ""}/><text x="${l - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end" fill="#5f6368">${v}</text>`).join("");
  const labels = `<text x="${l}" y="${h - 6}" font-size="11" fill="#5f6368">${esc(pts[0].day)}</text><text x="${w - r}" y="${h - 6}" font-size="11" text-anchor="end" fill="#5f6368">${esc(pts[pts.length - 1].day)}</text>`;
  return `<svg id="history-chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="Daily health score, ${pts.length} days, from ${num(pts[0].score, 1)} to ${num(pts[pts.length - 1].score, 1)}">${grid}${labels}<path d="${line}" fill="none" stroke="#0b57d0" stroke-width="2"/>${dots}</svg>`;
}

async function showAccount(id) {
  const a = await api(`/api/accounts/${encodeURIComponent(id)}`);
  const s = a.snapshot, acc = s.account || {}, m = s.metrics || {};
  const comps = (s.components || []).map((c) => `<tr><td>${esc(c.label || c.name)}</td><td class="num">${num(c.score, 1)}</td><td class="num">${num(c.weight, 0)}</td><td class="num">${num(c.contribution, 1)}</td></tr>`).join("");
  const drivers = (s.drivers || []).map((d) => `<li>${esc(d.text)} <span class="muted">(−${num(d.points_lost, 1)} points)</span></li>`).join("");
  const alerts = a.alerts.slice(0, 20).map((x) => `<tr><td>${esc(x.status)}</td><td>${esc(x.severity)}</td><td>${esc(x.summary || x.rule_id)}</td><td>${esc(x.starts_at || "")}</td><td>${esc(x.action || "")}</td></tr>`).join("");
  const silences = a.silences.map((x) => `<li>${esc(JSON.stringify(x.matchers))} until ${esc(new Date(x.ends_at * 1000).toISOString())} ${esc(x.comment)}</li>`).join("");
  $("#asof").textContent = s.as_of;
  $("#view").innerHTML = `
    <p><a href="#/">← Portfolio</a></p>
    <h2 id="account-name">${esc(acc.name || s.account_id)} ${band(s.band)}</h2>
    <div class="kv">
      <div>Score<b data-field="score">${num(s.score, 1)}</b></div>
      <div>MRR<b>${money(m.mrr)}</b></div>
      <div>Renews in<b>${m.days_to_renewal === null || m.days_to_renewal === undefined ? "–" : `${m.days_to_renewal} d`}</b></div>
      <div>CSM<b>${esc(acc.csm_name || acc.csm_email || "–")}</b></div>
      <div>Segment<b>${esc(acc.segment || "–")}</b></div>
      <div>${m.canceled ? "<b>Canceled</b>" : ""}</div>
    </div>
    <section><h2>Score history</h2><div class="panel chart">${historyChart(a.history)}</div></section>
    <div class="grid2">
      <section><h2>Components</h2><div class="panel"><table id="components"><thead><tr><th>Component</th><th class="num">Score</th><th class="num">Weight</th><th class="num">Points</th></tr></thead><tbody>${comps}</tbody></table></div></section>
      <section><h2>Why</h2><div class="panel">${drivers ? `<ul class="drivers" id="drivers">${drivers}</ul>` : `<p class="muted">Nothing costs points.</p>`}</div></section>
    </div>
    <section><h2>Alerts</h2><div class="panel">${alerts ? `<table id="alerts"><thead><tr><th>Status</th><th>Severity</th><th>What</th><th>Since</th><th>Next step</th></tr></thead><tbody>${alerts}</tbody></table>${a.alerts.length > 20 ? `<p class="muted">The latest 20 of ${a.alerts.length}: <a href="/api/alerts?account=${encodeURIComponent(s.account_id)}">all as JSON</a>.</p>` : ""}` : `<p class="muted">No alerts.</p>`}</div></section>
    <section><h2>Silences</h2><div class="panel">${silences ? `<ul>${silences}</ul>` : `<p class="muted">None.</p>`}</div></section>`;
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
