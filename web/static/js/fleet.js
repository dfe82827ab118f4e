// The operators' fleet view: polls /api/v1/admin/fleet (the signed-in session cookie, no
// token in this script) and redraws the workers table and the queue figures. A 401 means the
// sign-in has ended (expired, signed out elsewhere, token revoked): back to the sign-in form.

import { absTime, ago, api, duration, el, poller } from "./common.js";

const $ = (id) => document.getElementById(id);
const config = JSON.parse($("page-config").textContent);
const root = $("fleet-root");
const COLUMNS = ["Worker", "Host", "Device", "Weights", "Precision", "Memory", "Job", "Iteration", "it/s", "Last seen"];

/** "1.2 GiB" for a byte count. */
export function bytes(n) {
  if (n == null || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(v >= 10 || i === 0 ? 0 : 1)} ${units[i]}`;
}

function memoryText(memory) {
  if (!memory || memory.used_bytes == null) return "—";
  const kind = memory.kind === "gpu" ? "GPU" : "RSS";
  return `${bytes(memory.used_bytes)} ${kind}`;
}

function deviceText(w) {
  if (!w.device) return "—";
  return w.device_name ? `${w.device}: ${w.device_name}` : w.device;
}

function weightsCell(w) {
  const cell = el("td", { "data-col": "weights" }, w.weights || "—");
  if (w.weights_ok === false) {
    cell.append(" ", el("span", { class: "badge failed", title: w.weights_error || w.error || "", text: "cannot load" }));
  }
  return cell;
}

function row(w) {
  const job = w.job;
  const seen = w.last_seen
    ? el("time", { datetime: w.last_seen, title: absTime(w.last_seen) }, ago(w.last_seen))
    : "—";
  const jobCell = job
    ? el("span", { class: "mono", title: job.id, text: job.id.slice(0, 8) })
    : el("span", { class: "muted", text: "idle" });
  const iteration = job ? `${job.iteration} / ${job.iterations_total}` : "—";
  const speed = job && job.it_per_s != null ? job.it_per_s.toFixed(2) : "—";
  return el("tr", { "data-worker": w.name },
    el("th", { scope: "row", class: "mono", text: w.name }),
    el("td", { text: w.host || "—" }),
    el("td", { text: deviceText(w) }),
    weightsCell(w),
    el("td", { text: w.precision || "—" }),
    el("td", { text: memoryText(w.memory) }),
    el("td", { "data-col": "job" }, jobCell),
    el("td", { "data-col": "iteration", text: iteration }),
    el("td", { "data-col": "speed", text: speed }),
    el("td", {}, seen),
  );
}

function renderWorkers(workers) {
  if (!workers.length) {
    root.replaceChildren(el("p", { class: "banner info", id: "no-workers" },
      el("strong", { text: "No worker online." }),
      el("span", { text: " Jobs wait in the queue until one starts." })));
    return;
  }
  const head = el("tr", {}, ...COLUMNS.map((name) => el("th", { scope: "col", text: name })));
  const table = el("table", { class: "fleet", id: "fleet-table" },
    el("caption", { class: "visually-hidden", text: "Workers online, with the job each runs now" }),
    el("thead", {}, head),
    el("tbody", {}, ...workers.map(row)));
  root.replaceChildren(table);
}

function renderSummary(data) {
  const queue = data.queue || {};
  const hour = data.last_hour || {};
  $("sum-workers").textContent = String(data.workers.length);
  $("sum-depth").textContent = String(queue.depth ?? "—");
  $("sum-wait").textContent = queue.oldest_wait_seconds == null ? "—" : duration(queue.oldest_wait_seconds);
  $("sum-running").textContent = String(data.running ?? "—");
  for (const status of ["succeeded", "failed", "canceled"]) {
    $(`sum-${status}`).textContent = String(hour[status] ?? "—");
  }
  const orphans = $("sum-orphans");
  orphans.hidden = !data.running_without_worker;
  orphans.textContent = data.running_without_worker
    ? `${data.running_without_worker} running job(s) have no live worker; the sweeper re-queues them once their lock expires.`
    : "";
}

async function refresh() {
  try {
    const data = await api(config.urls.fleet);
    root.setAttribute("aria-busy", "false");
    renderWorkers(data.workers || []);
    renderSummary(data);
    $("fleet-updated").textContent = `Updated ${new Date(data.generated_at).toLocaleTimeString()}`;
    return true;
  } catch (err) {
    if (err.status === 401) {
      window.location.assign(config.urls.sign_in); // the sign-in form
      return false;
    }
    root.setAttribute("aria-busy", "false");
    $("fleet-status").textContent = `Could not load the fleet: ${err.message}`;
    throw err;
  }
}

poller(refresh, { interval: 2000, hiddenInterval: 10000 }).start();
