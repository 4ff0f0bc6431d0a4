// healthmon dashboard: the Playbooks section (playbook tasks and their outcomes, /api/tasks/outcomes).
// Uses app.js's helpers (esc, num, pct, api, plural); app.js awaits playbooksSection() in the portfolio view.
"use strict";

const PB_BANDS = ["green", "yellow", "red", "cancelled"];

function pbAfter(bands) {
  const parts = PB_BANDS.filter((b) => bands[b]).map((b) => `<span class="band ${b}">${b}</span> ${num(bands[b])}`);
  return parts.length ? parts.join(" ") : `<span class="muted">–</span>`;
}

function pbSave(f) {
  if (!f.red_at_open) return `<span class="muted" title="no task on a red account whose 30 days have passed">–</span>`;
  return `${pct(f.save_rate)} <span class="muted">(${num(f.saved)}/${num(f.red_at_open)})</span>`;
}

function pbHours(h) {
  return h === null || h === undefined ? "–" : h < 48 ? `${num(h, 1)} h` : `${num(h / 24, 1)} d`;
}

function pbCells(r) {
  return `<td class="num">${num(r.opened)}</td><td class="num">${num(r.open)}</td><td class="num">${num(r.overdue)}</td><td class="num">${pct(r.on_time_pct)}</td><td class="num">${pbHours(r.median_ack_hours)}</td><td class="num">${num(r.done)}</td><td class="num">${num(r.never_acted)}</td><td class="num dismissed">${num(r.dismissed)}</td><td class="num closed-cancelled">${num(r.cancelled)}</td><td class="num superseded">${num(r.superseded)}</td><td class="num save-done">${pbSave(r.acted)}</td><td class="num save-baseline">${pbSave(r.baseline)}</td>`;
}

const PB_HEAD = `<th class="num">Opened</th><th class="num">Open</th><th class="num">Overdue</th><th class="num">On time</th><th class="num">Median to acknowledge</th><th class="num">Done</th><th class="num">Never acted on</th><th class="num">Dismissed</th><th class="num" title="closed when the account cancelled">Account cancelled</th><th class="num" title="closed when a more urgent playbook opened on the account (yellow, then red)">Superseded</th><th class="num">Save rate, done</th><th class="num">Save rate, never acted on</th>`;

function playbookTable(t) {
  if (!t.rows.length) return `<p class="muted" id="playbooks-empty">No playbook task opened in this period (is <code>healthmon tasks-worker</code> running?).</p>`;
  const rows = t.rows.map((r) => `<tr data-playbook="${esc(r.group)}"><th scope="row">${esc(r.group)}</th>${pbCells(r)}<td>${pbAfter(r.acted.bands_30d)}</td><td>${pbAfter(r.baseline.bands_30d)}</td></tr>`).join("");
  const total = `<tr data-playbook="all" class="total"><th scope="row">All playbooks</th>${pbCells(t.total)}<td>${pbAfter(t.total.acted.bands_30d)}</td><td>${pbAfter(t.total.baseline.bands_30d)}</td></tr>`;
  return `<table id="playbooks"><caption>Per playbook: what people did, and what happened next</caption><thead><tr><th>Playbook</th>${PB_HEAD}<th>30 days after, done</th><th>30 days after, never acted on</th></tr></thead><tbody>${rows}${total}</tbody></table>`;
}

function playbookCsmTable(t) {
  if (!t.rows.length) return "";
  const rows = t.rows.map((r) => `<tr data-owner="${esc(r.group)}"><th scope="row">${esc(r.group)}</th>${pbCells(r)}</tr>`).join("");
  return `<table id="playbook-csms"><caption>Per CSM</caption><thead><tr><th>Owner</th>${PB_HEAD}</tr></thead><tbody>${rows}</tbody></table>`;
}

// The section's HTML for the tasks opened in the 12 months to `month` (YYYY-MM).
async function playbooksSection(month) {
  const period = encodeURIComponent(`T12-${month}`);
  let byPlaybook, byCsm;
  try {
    [byPlaybook, byCsm] = await Promise.all([
      api(`/api/tasks/outcomes?by=playbook&period=${period}`),
      api(`/api/tasks/outcomes?by=csm&period=${period}`),
    ]);
  } catch (err) { // the rest of the page does not depend on it
    return `<section id="playbooks-section"><h2>Playbooks</h2><div class="panel"><p role="alert">Could not load the playbook outcomes: ${esc(err.message)}</p></div></section>`;
  }
  const asOf = byPlaybook.now ? byPlaybook.now.slice(0, 10) : "";
  return `<section id="playbooks-section"><h2>Playbooks · tasks opened in the 12 months to ${esc(month)}</h2><div class="panel">
    ${playbookTable(byPlaybook)}
    ${playbookCsmTable(byCsm)}
    <p class="muted legend">As of ${esc(asOf)}. On time: acknowledged (or closed) before the deadline. Save rate: tasks on an account red when the task opened, whose 30 days have passed, that left red within them and did not cancel; "never acted on" (nobody responded by the deadline) is the baseline a playbook is measured against. Definitions: docs/tasks.md, "Outcomes".</p>
  </div></section>`;
}
window.playbooksSection = playbooksSection;
